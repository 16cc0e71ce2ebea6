"""Every typed result babelprune exchanges, at the bottom of the import graph.

Evaluations (`EvalResult` and its scores), fine-tuning runs (`FinetuneResult`),
task-structured and task-dynamic runs (`TaskPruneResult`) and the sweep
store's `RunRecord` are pydantic models that evaluation, fine-tuning, sweeps
and reports all read and write. They live here, below those packages, so
that each of them imports its records downward (docs/architecture.md).

The names below are imported on first use (PEP 562): importing one record
module (`babelprune.records.eval`) runs this __init__ first, and it then
loads none of the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "PRIMARY_METRIC": "babelprune.records.eval",
    "SCHEMA_VERSION": "babelprune.records.eval",
    "EvalResult": "babelprune.records.eval",
    "GgufRunInfo": "babelprune.records.eval",
    "LanguageMeta": "babelprune.records.eval",
    "LanguageScore": "babelprune.records.eval",
    "LMScore": "babelprune.records.eval",
    "MetricRecord": "babelprune.records.eval",
    "ModelInfo": "babelprune.records.eval",
    "PruningInfo": "babelprune.records.eval",
    "RetrievalScore": "babelprune.records.eval",
    "SavedRecord": "babelprune.records.eval",
    "is_eval_result_file": "babelprune.records.eval",
    "now": "babelprune.records.eval",
    "FINETUNE_SCHEMA_VERSION": "babelprune.records.finetune",
    "FinetuneResult": "babelprune.records.finetune",
    "TaskScore": "babelprune.records.finetune",
    "GMPConfig": "babelprune.records.gmp",
    "SparseKernelRecord": "babelprune.records.kernels",
    "RelativeGMPConfig": "babelprune.records.gmp",
    "RunRecord": "babelprune.records.run",
    "PeakMemory": "babelprune.records.speed",
    "SpeedReport": "babelprune.records.speed",
    "LlamaCppSpeedReport": "babelprune.records.speed",
    "is_speed_reports_file": "babelprune.records.speed",
    "RunState": "babelprune.records.run",
    "LanguageOutcomes": "babelprune.records.task_prune",
    "ModelScores": "babelprune.records.task_prune",
    "TaskPruneResult": "babelprune.records.task_prune",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` imports on demand
    from babelprune.records.eval import EvalResult, GgufRunInfo, LMScore, LanguageMeta, LanguageScore, MetricRecord, ModelInfo, PRIMARY_METRIC, PruningInfo, RetrievalScore, SCHEMA_VERSION, SavedRecord, is_eval_result_file, now
    from babelprune.records.finetune import FINETUNE_SCHEMA_VERSION, FinetuneResult, TaskScore
    from babelprune.records.gmp import GMPConfig, RelativeGMPConfig
    from babelprune.records.kernels import SparseKernelRecord
    from babelprune.records.run import RunRecord, RunState
    from babelprune.records.speed import LlamaCppSpeedReport, PeakMemory, SpeedReport, is_speed_reports_file
    from babelprune.records.task_prune import LanguageOutcomes, ModelScores, TaskPruneResult


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'babelprune.records' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
