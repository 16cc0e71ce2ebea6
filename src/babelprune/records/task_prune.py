"""What a task-structured or task-dynamic run records: per-language outcomes item by item, size and speed.

A `ModelScores` is one model scored on a task: for every language its test
items' keys and a 0/1 outcome per item (1: the prediction was right), so a
report can bootstrap over items and pair two models item by item; plus the
model's parameters, the share of block parameters removed, and how fast it
scored (items per second over every scored item, tokenization included).

`TaskPruneResult` holds the dense fine-tuned model's scores (the baseline),
and one `ModelScores` per pruned model: one for the shared setting, one per
language for per-language (each scored on its language only), one per level
for Dynamic Sparsification.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LanguageOutcomes(_Record):
    """One language's test items: keys and outcomes (1 right, 0 wrong) in the same order."""

    language: str
    keys: list[str]
    outcomes: list[int]

    @property
    def accuracy(self) -> float:
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else float("nan")


class ModelScores(_Record):
    """One model scored on its languages, with its size and scoring speed."""

    name: str  # "dense", "shared", a language code (per-language) or a level ("0.5") for dynamic runs
    languages: list[LanguageOutcomes]
    parameters: int  # every parameter of the encoder + classifier
    block_parameters: int  # the blocks' attention and FFN linears
    sparsity: float  # share of the dense block parameters removed
    items_per_second: float
    eval_seconds: float
    widths: list[dict[str, int]] = Field(default_factory=list)  # per block: heads, ffn

    def language(self, code: str) -> LanguageOutcomes | None:
        return next((item for item in self.languages if item.language == code), None)


class TaskPruneResult(_Record):
    """A whole task-structured (or task-dynamic) run."""

    kind: str  # "task-structured" or "task-dynamic"
    task: str
    metric: str = "accuracy"
    units: list[str]
    importance: str
    setting: str  # "shared" or "per-language" (dynamic: "shared")
    ranking: str
    target_sparsity: float | None  # None for a dynamic run (see `models`, one per level)
    dense: ModelScores  # the fine-tuned dense model, scored on every language
    models: list[ModelScores]
    steps: dict[str, int] = Field(default_factory=dict)  # finetune, joint_l0, refinetune, dynamic
    l0: dict[str, Any] | None = None  # per model: gate counts and the trace's last expected sparsity
    seconds: dict[str, float] = Field(default_factory=dict)  # stage -> wall seconds
    notes: list[str] = Field(default_factory=list)  # anything substituted or adjusted, said in words
