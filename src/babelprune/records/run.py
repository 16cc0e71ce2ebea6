"""What one finished sweep run leaves in the results store (babelprune.sweep.store)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from babelprune.records.eval import EvalResult, now
from babelprune.records.finetune import FinetuneResult
from babelprune.records.task_prune import TaskPruneResult

RunState = Literal["done", "failed"]


class RunRecord(BaseModel):
    """What one finished run leaves in the store.

    `config` is the run's whole configuration (the dict its key is the hash
    of); `evaluations` maps an evaluation set's name ("bible", "udhr"...) to
    its per-language result; `pruning` is the pruning record of the model
    (method, config, sparsity per layer...), None for a dense run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    sweep: str  # the experiment's name
    kind: str  # "dense", "oneshot", "structured", "finetune", "trim"...
    label: str  # a short human name of the run, e.g. "wanda 50%"
    config: dict[str, Any]
    state: RunState
    evaluations: dict[str, EvalResult] = Field(default_factory=dict)
    finetune: FinetuneResult | None = None
    pruning: dict[str, Any] | None = None
    task_pruning: TaskPruneResult | None = None  # task-structured and task-dynamic runs: outcomes item by item
    measurements: dict[str, Any] = Field(default_factory=dict)  # speed, size, seconds of each stage...
    error: str | None = None  # the failed run's error, one line
    environment: dict[str, Any] = Field(default_factory=dict)  # commit, versions, threads, host
    # Where the run computed and in which type ("cuda", "bfloat16"): the placement it was given, resolved where it
    # ran (a failed run names the one it asked for). None in records made before runs could say where: CPU, float32.
    device: str | None = None
    dtype: str | None = None
    started: str = ""
    finished: str = Field(default_factory=now)
    seconds: float = 0.0
