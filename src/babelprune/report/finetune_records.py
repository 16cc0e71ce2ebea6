"""Re-exports of the fine-tuning records, whose home is babelprune.records.finetune.

Kept so that code importing them from here, as it did before they moved to
the bottom of the import graph, keeps working (docs/architecture.md).
"""

from babelprune.records.finetune import FINETUNE_SCHEMA_VERSION, FinetuneResult, TaskScore  # noqa: F401
