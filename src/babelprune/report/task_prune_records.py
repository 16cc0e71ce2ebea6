"""Re-exports of the task-structured and task-dynamic records, whose home is babelprune.records.task_prune.

Kept so that code importing them from here, as it did before they moved to
the bottom of the import graph, keeps working (docs/architecture.md).
"""

from babelprune.records.task_prune import LanguageOutcomes, ModelScores, TaskPruneResult  # noqa: F401
