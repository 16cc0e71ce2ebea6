"""One registered function per structured importance: what ranks heads, FFN neurons and blocks.

Adding an importance is one decorated function here: `compute_importance`
and `structured_prune` dispatch through `IMPORTANCES`, and the configs'
checks (calibration needed, per-language allowed) read the entry's
properties. The command line and `StructuredConfig` still take the names
from the `StructuredImportance` Literal of babelprune.choices (typer lists
a Literal's values without importing torch), so a new importance is also
added there; tests/test_importance_registry.py checks that the two agree,
in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from babelprune.errors import BabelpruneError
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import GqaMode
from babelprune.prune.calibration import Calibration
from babelprune.prune.structured.importance import (
    LossFn,
    activation_importance,
    balanced_importance,
    gradient_importance,
    magnitude_importance,
)
from babelprune.prune.structured.l0 import L0Settings, L0Trace, train_l0
from babelprune.prune.structured.selection import Importance


@dataclass(frozen=True)
class ImportanceTask:
    """What an importance is computed from; `units` are already checked."""

    loaded: LoadedModel
    units: set[str]
    calibration: Calibration | None  # None only for importances that use no data
    gqa: GqaMode = "query"
    loss_fn: LossFn | None = None
    batch_size: int = 1
    sparsity: float = 0.5  # the target a training importance (L0) learns toward
    l0: L0Settings | None = None
    # Score all calibration languages as one ({"all": ...}) where that is not the sum of the
    # languages' scores (a trained importance); the others return one importance per language.
    pooled: bool = False

    @property
    def mask_token_id(self) -> int | None:
        return getattr(self.loaded.tokenizer, "mask_token_id", None)


# -> (importance per calibration language, or {"all": ...}; L0 traces by the same keys, {} when none)
ImportanceFn = Callable[[ImportanceTask], "tuple[dict[str, Importance], dict[str, L0Trace]]"]


@dataclass(frozen=True)
class ImportanceMethod:
    name: str
    fn: ImportanceFn
    uses_data: bool = True  # reads calibration text
    trains: bool = False  # learns gates toward the target sparsity, so the target changes the scores
    shared_only: bool = False  # one ranking that weighs the languages against each other: no per-language setting

    @property
    def per_language(self) -> bool:
        """Whether its ranking can differ per language: only data tells the languages apart."""
        return self.uses_data and not self.shared_only


IMPORTANCES: dict[str, ImportanceMethod] = {}


def register(name: str, uses_data: bool = True, trains: bool = False, shared_only: bool = False,
             ) -> Callable[[ImportanceFn], ImportanceFn]:
    def decorator(fn: ImportanceFn) -> ImportanceFn:
        IMPORTANCES[name] = ImportanceMethod(name, fn, uses_data, trains, shared_only)
        return fn

    return decorator


def importance_method(name: str) -> ImportanceMethod:
    """The registered importance `name`; an unknown name is one sentence listing the known ones."""
    if name not in IMPORTANCES:
        raise BabelpruneError(f"Unknown importance '{name}'; choose one of: {', '.join(IMPORTANCES)}.")
    return IMPORTANCES[name]


def check_importance_setting(importance: str, setting: str, option: str) -> None:
    """Refuse a per-language setting for an importance that cannot tell the languages apart.

    `option` is how the caller's users spell the setting: "--setting" on the
    command line, "setting" in a config file.
    """
    method = importance_method(importance)
    if setting == "per-language" and method.shared_only:
        raise BabelpruneError(
            f"{importance.capitalize()} importance weighs the calibration languages equally in one shared ranking, and "
            f"alone per language it ranks as activation does; use {option} shared, or activation importance per language."
        )
    if setting == "per-language" and not method.per_language:
        raise BabelpruneError(
            f"{importance.capitalize()} importance uses no data, so it cannot differ per language; "
            f"use {option} shared or another importance."
        )


@register("magnitude", uses_data=False)
def magnitude(task: ImportanceTask) -> tuple[dict[str, Importance], dict[str, L0Trace]]:
    """L2 norm of each unit's weights: one importance for every language."""
    return {"all": magnitude_importance(task.loaded.model, task.units, task.gqa)}, {}


@register("gradient")
def gradient(task: ImportanceTask) -> tuple[dict[str, Importance], dict[str, L0Trace]]:
    """Gate gradients (heads, neurons) and Taylor scores (blocks) per language."""
    scores = gradient_importance(task.loaded.model, task.calibration, task.units, task.gqa, task.loss_fn,
                                 task.batch_size, task.mask_token_id)
    return scores, {}


@register("activation")
def activation(task: ImportanceTask) -> tuple[dict[str, Importance], dict[str, L0Trace]]:
    """Wanda: sum |w| * ||X_j|| per language."""
    return activation_importance(task.loaded.model, task.calibration, task.units, task.gqa, task.batch_size), {}


@register("l0", trains=True)
def l0(task: ImportanceTask) -> tuple[dict[str, Importance], dict[str, L0Trace]]:
    """Hard-concrete gates trained toward the target: once on all languages when pooled, else per language."""
    def train(calibration: Calibration) -> tuple[Importance, L0Trace]:
        return train_l0(task.loaded.model, calibration, task.units, task.sparsity, task.gqa, task.loss_fn,
                        task.l0 or L0Settings(), task.mask_token_id)

    if task.pooled:  # gates trained on the languages together are not the sum of per-language gates
        pooled, trace = train(task.calibration)
        return {"all": pooled}, {"all": trace}
    per_language, traces = {}, {}
    for lang in task.calibration.language_set:
        per_language[lang], traces[lang] = train(task.calibration.subset([lang]))
    return per_language, traces


@register("balanced", shared_only=True)
def balanced(task: ImportanceTask) -> tuple[dict[str, Importance], dict[str, L0Trace]]:
    """Activation scores normalised per language (each sums to 1 over the model) and averaged: one ranking."""
    return {"all": balanced_importance(task.loaded.model, task.calibration, task.units, task.gqa, task.batch_size)}, {}
