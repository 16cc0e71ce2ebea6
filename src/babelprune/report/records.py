"""Re-exports of the evaluation records, whose home is babelprune.records.eval.

Kept so that code importing them from here, as it did before they moved to
the bottom of the import graph, keeps working (docs/architecture.md).
"""

from babelprune.records.eval import (  # noqa: F401
    PRIMARY_METRIC,
    SCHEMA_VERSION,
    EvalResult,
    LanguageMeta,
    LanguageScore,
    LMScore,
    MetricRecord,
    ModelInfo,
    PruningInfo,
    RetrievalScore,
    SavedRecord,
    is_eval_result_file,
    now,
)
