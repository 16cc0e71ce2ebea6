"""Gradual magnitude pruning (GMP) during training, after Zhu & Gupta (2017).

The sparsity target follows a cubic schedule: it starts at ``s_i``, and from
step ``t0`` on is raised every ``dt`` steps until ``t0 + n*dt`` (the end
step), quickly at first and slowly towards the end::

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3

`GMPConfig` gives the schedule in steps; `RelativeGMPConfig` gives start
and end as shares of a run's steps, so one configuration fits runs of any
length (`RelativeGMPConfig.for_steps(T)` is the step schedule of T steps).

At every update step the `GradualPruner` recomputes the masks by magnitude:
the lowest ``|w|`` share of each matrix (``per-layer``) or below one
threshold shared by all targeted matrices (``global``). Between updates the
masks are kept, and after every optimizer step they are applied again, so a
pruned weight stays exactly zero until the end of training. Gradients of
pruned weights are also zeroed before the optimizer step, so that Adam's
moments are not fed by them; re-applying the masks after the step is what
guarantees exact zeros (momentum from before the weight was pruned would
otherwise revive it).

Pruned weights have magnitude 0, so they remain the lowest at later updates:
the masks only grow as the target rises.

Masks are ``pruned`` booleans (True = zero), kept in each parameter's own
layout (which is also its gradient's). Magnitude ranking is elementwise, so
the layout does not change which weights are chosen. They are applied by
multiplying with a 0/1 copy in the weight's dtype, which on a CPU is about
ten times faster than ``masked_fill_`` with a boolean mask (it matters: it
runs twice per training step over every targeted weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for
from babelprune.prune.engine import named_linears
from babelprune.prune.kernels import lowest_scores_mask, magnitude_scores, pruned_count, unstructured_mask

# The schedule's configs are records (a fine-tuning result holds the one its run followed): their home
# is babelprune.records.gmp, below this package; re-exported here, where they were defined before.
from babelprune.records.gmp import (  # noqa: F401
    GMPConfig,
    RelativeGMPConfig,
    Scope,
    check_schedule,
    check_schedule_shares,
    cubic_sparsity,
)

EMBEDDING_NAME = "embeddings"


@dataclass(frozen=True)
class SparsityReport:
    """Share of exact zeros per targeted matrix and over all of them (weighted by size)."""

    per_matrix: dict[str, float]
    overall: float
    n_weights: int


def gmp_targets(model: nn.Module, include_embeddings: bool = False) -> dict[str, nn.Parameter]:
    """{"<block>.<linear>": weight parameter} of a model's blocks, plus "embeddings" if asked."""
    adapter = adapter_for(model)
    targets = {name: module.weight for name, module in named_linears(model, adapter).items()}
    if include_embeddings:
        targets[EMBEDDING_NAME] = adapter.get_embeddings(model).weight
    return targets


def per_layer_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """The lowest-|w| share `sparsity` of each matrix on its own (floor(s * numel) weights each)."""
    return {
        name: unstructured_mask(magnitude_scores(weight.reshape(weight.shape[0], -1)), sparsity, per_row=False).reshape(
            weight.shape
        )
        for name, weight in weights.items()
    }


def global_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """The lowest-|w| share `sparsity` of all matrices together (one threshold for all)."""
    scores = torch.cat([magnitude_scores(weight).reshape(-1) for weight in weights.values()])  # (total,)
    pruned = lowest_scores_mask(scores, pruned_count(scores.numel(), sparsity))
    masks, offset = {}, 0
    for name, weight in weights.items():
        masks[name] = pruned[offset : offset + weight.numel()].reshape(weight.shape)
        offset += weight.numel()
    return masks


class GradualPruner:
    """Masks a model's block weights (and optionally its embedding) on a GMP schedule.

    In a training loop::

        loss.backward()
        pruner.mask_gradients()          # before the optimizer step
        optimizer.step()
        pruner.step(global_step)         # update masks if scheduled, then apply them
    """

    def __init__(self, model: nn.Module, config: GMPConfig) -> None:
        self.config = config
        self.targets = gmp_targets(model, config.include_embeddings)
        self.masks: dict[str, torch.Tensor] = {}
        self._keep: dict[str, torch.Tensor] = {}  # 1 - mask, in each weight's dtype
        self.current_sparsity = 0.0  # the target the current masks were computed for

    def _set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks
        self._keep = {name: (~pruned).to(self.targets[name].dtype) for name, pruned in masks.items()}

    @torch.no_grad()
    def update_masks(self, sparsity: float) -> None:
        """Recompute every mask by magnitude for `sparsity`, then apply them."""
        weights = {name: param.detach() for name, param in self.targets.items()}
        if self.config.scope == "global":
            self._set_masks(global_masks(weights, sparsity))
        else:
            self._set_masks(per_layer_masks(weights, sparsity))
        self.current_sparsity = sparsity
        self.apply_masks()

    def step(self, global_step: int) -> bool:
        """Update the masks if the schedule's target changed at `global_step`; always apply them.

        Returns whether the masks were recomputed.
        """
        target = self.config.sparsity_at(global_step)
        changed = target != self.current_sparsity
        if changed:
            self.update_masks(target)
        else:
            self.apply_masks()
        return changed

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Set every pruned weight to exactly zero."""
        for name, keep in self._keep.items():
            self.targets[name].mul_(keep)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights (call between backward and the optimizer step)."""
        for name, keep in self._keep.items():
            grad = self.targets[name].grad
            if grad is not None:
                grad.mul_(keep)

    def sparsity_report(self) -> SparsityReport:
        """Achieved share of exact zeros in each targeted matrix and overall."""
        per_matrix, zeros, total = {}, 0, 0
        for name, param in self.targets.items():
            n_zero = int((param.detach() == 0).sum())
            per_matrix[name] = n_zero / param.numel()
            zeros += n_zero
            total += param.numel()
        return SparsityReport(per_matrix=per_matrix, overall=zeros / total if total else 0.0, n_weights=total)

    def state_dict(self) -> dict[str, object]:
        """Masks and the target they were computed for (for checkpoints)."""
        return {"masks": {name: mask.clone() for name, mask in self.masks.items()}, "current_sparsity": self.current_sparsity}

    def state_problem(self, state: object) -> str | None:
        """What keeps `state` (from `state_dict`) from fitting this pruner, as a phrase; None when it fits."""
        if not isinstance(state, dict) or not isinstance(state.get("masks"), dict):
            return "the saved pruning state holds no masks"
        masks = state["masks"]
        sparsity = state.get("current_sparsity")
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
            return f"the saved pruning sparsity {sparsity!r} is not a share in [0, 1)"
        unknown = sorted(set(masks) - set(self.targets))
        if unknown:
            return f"the saved masks name weights this model lacks ({_first_names(unknown)})"
        missing = sorted(set(self.targets) - set(masks))
        if masks and missing:  # no masks at all is the state before the first update
            return f"the saved masks lack weights this model prunes ({_first_names(missing)})"
        for name, mask in masks.items():
            if not isinstance(mask, torch.Tensor) or mask.shape != self.targets[name].shape:
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                return f"the saved mask of {name} has shape {shape}, the weight {tuple(self.targets[name].shape)}"
        return None

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore masks saved by `state_dict` (from a pruner with the same model and options) and apply them."""
        problem = self.state_problem(state)
        if problem is not None:
            raise BabelpruneError(
                f"The pruning masks cannot be restored: {problem}; restore masks saved with the same model and pruning options."
            )
        masks: dict[str, torch.Tensor] = state["masks"]  # type: ignore[assignment]
        self._set_masks({name: mask.to(torch.bool) for name, mask in masks.items()})
        self.current_sparsity = float(state["current_sparsity"])  # type: ignore[arg-type]
        self.apply_masks()


def _first_names(names: list[str], shown: int = 3) -> str:
    """'a, b, c and 4 more': enough names to find the problem, on one line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
