"""Typed results of fine-tuning runs: one score per language and evaluation set.

A `FinetuneResult` is one fine-tuning run (or, in the monolingual mode, the
set of per-language runs of one configuration): its header (model, task,
training mode, seed, pruning) and a `TaskScore` per language and per
evaluation set, clean (``perturbation=None``) or perturbed (``"words"``,
``"chars"``, ``"entities"``). Perturbed scores carry their ``gap``: the
clean score minus the perturbed one (positive = the perturbation hurt).

`FinetuneResult.records()` flattens it into the long `MetricRecord` rows the
other reports read; perturbed sets get split ``"test+<kind>"`` and an extra
``<metric>_gap`` row.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from babelprune.choices import ResourceLevel
from babelprune.records.eval import MetricRecord, SavedRecord, now
from babelprune.records.gmp import GMPConfig

FINETUNE_SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskScore(_Record):
    """A task metric on one language's evaluation set, clean or perturbed."""

    language: str
    name: str
    script: str
    resource: ResourceLevel
    metric: str  # "accuracy", "entity_f1" or "top1"
    value: float
    n_examples: int
    perturbation: str | None = None  # None: the clean set
    gap: float | None = None  # clean value - this value, for perturbed sets
    # Accuracy tasks: 1 (right) or 0 per test item, in the test set's order, the same items clean and
    # perturbed and in every run of one configuration, so that intervals can resample items paired.
    correct: list[int] | None = None

    @property
    def split(self) -> str:
        return "test" if self.perturbation is None else f"test+{self.perturbation}"


class FinetuneResult(SavedRecord):
    MISSING: ClassVar[str] = "fine-tuning result"
    KIND: ClassVar[str] = "fine-tuning result"
    COMMAND: ClassVar[str] = "babelprune finetune"

    schema_version: int = FINETUNE_SCHEMA_VERSION
    model: str  # the model spec that was fine-tuned
    task: str
    mode: str  # "zero-shot", "multilingual", "monolingual" (or "none" for retrieval)
    train_languages: list[str]
    train_examples: dict[str, int] = Field(default_factory=dict)  # language -> training examples seen per epoch
    train_asked: dict[str, int] = Field(default_factory=dict)  # language -> examples train_per_language asked ({}: not set)
    seed: int
    sparsity: float  # the final target sparsity (0 for dense)
    gmp: GMPConfig | None = None
    achieved_sparsity: float  # share of exact zeros in the targeted weights at the end
    steps: int
    seconds: float
    config: dict[str, Any] = Field(default_factory=dict)  # the full fine-tuning configuration
    device: str | None = None  # where it was trained ("cpu", "cuda:0"); None in results made before the choice existed
    dtype: str | None = None  # the weights' type while training ("float32", "bfloat16"); None likewise
    created: str = Field(default_factory=now)
    scores: list[TaskScore]

    @property
    def method(self) -> str:
        return "gmp" if self.gmp is not None else "dense"

    def score(self, language: str, perturbation: str | None = None) -> TaskScore:
        for score in self.scores:
            if score.language == language and score.perturbation == perturbation:
                return score
        raise KeyError((language, perturbation))

    def languages(self) -> list[str]:
        return list(dict.fromkeys(score.language for score in self.scores))

    def perturbations(self) -> list[str]:
        return list(dict.fromkeys(s.perturbation for s in self.scores if s.perturbation is not None))

    def records(self) -> list[MetricRecord]:
        rows = []
        for score in self.scores:
            values = [(score.metric, score.value)]
            if score.gap is not None:
                values.append((f"{score.metric}_gap", score.gap))
            for metric, value in values:
                rows.append(
                    MetricRecord(
                        model=self.model, method=self.method, sparsity=self.sparsity, setting=self.mode,
                        corpus=self.task, split=score.split, language=score.language, resource=score.resource,
                        metric=metric, value=value, count=score.n_examples,
                    )
                )
        return rows
