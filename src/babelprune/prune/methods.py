"""One registered function per pruning method: weight and statistics in, pruned weight and mask out.

Adding a method is one decorated function here; the engine, the CLI and the
tests pick it up from `METHODS`.

Reading the registry imports no torch: the kernels are imported inside the
functions that run them, so that `babelprune prune --help`, which lists the
registered names, stays as quick as the other commands' help. Keep it so in a
new method (tests/test_method_registry.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only (torch: see above)
    from torch import Tensor

    # the config validates method names against METHODS, so it imports this module
    from babelprune.prune.config import PruneConfig
    from babelprune.prune.stats import LanguageStats


@dataclass(frozen=True)
class LayerTask:
    """One linear layer to prune: its (out, in) weight, its input statistics and its target."""

    weight: Tensor  # (out, in)
    stats: LanguageStats | None  # None for methods that need no calibration
    sparsity: float  # this layer's unstructured target (ignored for N:M)
    config: PruneConfig


# -> (new weight (out, in), or None to just zero the pruned entries in place; pruned mask (out, in))
PruneFn = Callable[[LayerTask], "tuple[Tensor | None, Tensor]"]


@dataclass(frozen=True)
class Method:
    name: str
    fn: PruneFn
    needs_calibration: bool
    needs_hessian: bool = False
    needs_activity: bool = False  # per-language activation probabilities


METHODS: dict[str, Method] = {}


def register(
    name: str, needs_calibration: bool = True, needs_hessian: bool = False, needs_activity: bool = False
) -> Callable[[PruneFn], PruneFn]:
    def decorator(fn: PruneFn) -> PruneFn:
        METHODS[name] = Method(name, fn, needs_calibration, needs_hessian, needs_activity)
        return fn

    return decorator


def mask_from_scores(scores: Tensor, task: LayerTask) -> Tensor:
    """The `pruned` mask for the task's pattern: N:M groups, or the lowest share per row (or layer)."""
    from babelprune.prune.kernels import nm_mask, unstructured_mask
    if task.config.nm:
        return nm_mask(scores, *task.config.nm)
    return unstructured_mask(scores, task.sparsity, per_row=task.config.per_row)


def _prune_by_scores(scores: Tensor, task: LayerTask) -> tuple[None, Tensor]:
    return None, mask_from_scores(scores, task)


@register("magnitude", needs_calibration=False)
def magnitude(task: LayerTask) -> tuple[Tensor | None, Tensor]:
    """|W_ij|: the classic baseline, no data needed."""
    from babelprune.prune.kernels import magnitude_scores
    return _prune_by_scores(magnitude_scores(task.weight), task)


@register("wanda")
def wanda(task: LayerTask) -> tuple[Tensor | None, Tensor]:
    """|W_ij| * ||X_j||_2 over all calibration tokens (Sun et al. 2023)."""
    from babelprune.prune.kernels import wanda_scores
    return _prune_by_scores(wanda_scores(task.weight, task.stats.pooled_norm()), task)


@register("ria")
def ria(task: LayerTask) -> tuple[Tensor | None, Tensor]:
    """Relative importance times ||X_j||_2 ** a, compared within rows (Zhang et al. 2024)."""
    from babelprune.prune.kernels import ria_scores
    return _prune_by_scores(ria_scores(task.weight, task.stats.pooled_norm(), task.config.ria_exponent), task)


@register("mwanda", needs_activity=True)
def mwanda(task: LayerTask) -> tuple[Tensor | None, Tensor]:
    """Wanda (or RIA) with language-aware statistics and activation probability (Choenni & Titov 2025; babelprune.prune.mwanda)."""
    from babelprune.prune.mwanda import mwanda_scores
    options, stats = task.config.mwanda, task.stats
    scores = mwanda_scores(
        task.weight,
        stats.pooled_norm(),
        stats.per_language_norm() if options.language_aware else None,
        stats.activation_probability() if options.activation_prob else None,
        options,
        stats.language_weights(),
        exponent=task.config.ria_exponent,
    )
    return _prune_by_scores(scores, task)


@register("sparsegpt", needs_hessian=True)
def sparsegpt(task: LayerTask) -> tuple[Tensor, Tensor]:
    """Mask and weight update from the inverse Hessian (Frantar & Alistarh 2023)."""
    from babelprune.prune.sparsegpt import sparsegpt_prune
    n, m = task.config.nm or (0, 0)
    return sparsegpt_prune(
        task.weight, task.stats.hessian(), sparsity=task.sparsity, n=n, m=m,
        block_size=task.config.block_size, damp=task.config.damp,
    )
