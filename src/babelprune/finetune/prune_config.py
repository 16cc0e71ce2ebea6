"""Configs of structured pruning on a task (Li et al., ACL 2022): the pruning step and the two sweep run kinds.

`TaskPruneConfig` says how a fine-tuned encoder is pruned and fine-tuned
again; `TaskStructuredRun` (sweep kind `task-structured`) adds the task and
the `FinetuneConfig` of both fine-tunings; `TaskDynamicRun` (kind
`task-dynamic`) trains one model with Dynamic Sparsification on the same
data and scores it at each of its levels.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig
from babelprune.prune.kernels import check_sparsity
from babelprune.prune.structured.methods import check_importance_setting
from babelprune.finetune.dynamic import DynamicConfig

TaskImportance = Literal["magnitude", "gradient", "l0"]
TaskUnit = Literal["heads", "ffn"]


def _multilingual() -> FinetuneConfig:
    return FinetuneConfig(mode="multilingual")


class TaskPruneConfig(BaseModel):
    """How the fine-tuned encoder is pruned, and how long the pruned model is fine-tuned again."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    units: list[TaskUnit] = Field(default_factory=lambda: ["ffn", "heads"])
    importance: TaskImportance = "gradient"
    sparsity: float = 0.3  # share of the blocks' attention and FFN parameters removed
    setting: Literal["shared", "per-language"] = "shared"
    ranking: Literal["global", "per-layer"] = "global"  # magnitude and gradient (L0 keeps what its gates learned)
    importance_examples: int = 64  # training examples (per language when per-language) whose task loss ranks units
    l0_steps: int = 24  # joint gate + weight fine-tuning steps
    l0_lr: float = 0.05  # Adam on the gates' log_alpha
    l0_lambda_lr: float = 1.0  # gradient ascent on the Lagrange multipliers
    l0_warmup: float = 0.5  # share of the L0 steps over which the goal moves to the target
    refinetune_steps: int = 8  # fine-tuning steps of the pruned model before it is scored
    tolerance: float = 0.01

    @field_validator("units", mode="before")
    @classmethod
    def _units(cls, value: object) -> object:
        if isinstance(value, str):
            value = [unit.strip() for unit in value.split(",") if unit.strip()]
        if isinstance(value, (list, tuple, set)):
            unknown = sorted({str(unit) for unit in value} - set(get_args(TaskUnit)))
            if unknown or not value:
                raise BabelpruneError(f"Unknown task-pruning unit {', '.join(map(repr, unknown)) or 'list (empty)'}; "
                                      "give heads, ffn or both (blocks are pruned with `babelprune prune --structured blocks`).")
            return sorted(set(value))
        return value

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, value: float) -> float:
        return check_sparsity(value)

    @model_validator(mode="after")
    def _valid(self) -> TaskPruneConfig:
        for name in ("importance_examples", "l0_steps", "l0_lr", "l0_lambda_lr"):
            if not getattr(self, name) > 0:
                raise BabelpruneError(f"Task-pruning option {name} is {getattr(self, name)}; give a positive value.")
        if self.refinetune_steps < 0:
            raise BabelpruneError(f"refinetune_steps is {self.refinetune_steps}; give 0 (no second fine-tuning) or more.")
        if not 0.0 < self.l0_warmup <= 1.0:
            raise BabelpruneError(f"l0_warmup is {self.l0_warmup}; give a share in (0, 1].")
        check_importance_setting(self.importance, self.setting, "setting")
        return self


def _check_multilingual(config: FinetuneConfig) -> FinetuneConfig:
    if config.mode != "multilingual":
        raise BabelpruneError(f"Structured pruning on a task fine-tunes on every language's training data (mode "
                              f"multilingual), not {config.mode}; set finetune.mode to multilingual or leave it out.")
    if config.gmp is not None:
        raise BabelpruneError("Structured pruning on a task removes whole units; drop the gmp schedule from its finetune config.")
    return config


class _TaskRun(BaseModel):
    """What both task run kinds share: the task and the multilingual fine-tuning of the dense baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str = "bible-genre"
    task_options: dict[str, str | int] = Field(default_factory=dict)
    finetune: FinetuneConfig = Field(default_factory=_multilingual)

    @field_validator("finetune", mode="before")
    @classmethod
    def _default_mode(cls, value: object) -> object:
        return {"mode": "multilingual", **value} if isinstance(value, dict) else value

    @field_validator("finetune")
    @classmethod
    def _mode(cls, value: FinetuneConfig) -> FinetuneConfig:
        return _check_multilingual(value)


class TaskStructuredRun(_TaskRun):
    """A sweep run of kind `task-structured`: fine-tune, prune by units, fine-tune again, score per language."""

    prune: TaskPruneConfig = Field(default_factory=TaskPruneConfig)


class TaskDynamicRun(_TaskRun):
    """A sweep run of kind `task-dynamic`: Dynamic Sparsification with the task objective, scored at every level.

    `finetune` gives the languages, training and test sizes, lengths and the
    dense baseline's fine-tuning (the same as the task-structured runs');
    `dynamic` is a `DynamicConfig` mapping (levels, steps, units, importance...).
    """

    dynamic: DynamicConfig = Field(default_factory=DynamicConfig)
