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

import math
from dataclasses import dataclass
import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from babelprune.choices import GmpScope
from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for
from babelprune.prune.engine import named_linears
from babelprune.prune.kernels import check_sparsity, lowest_scores_mask, magnitude_scores, pruned_count, unstructured_mask

Scope = GmpScope  # per-layer or global magnitude ranking
EMBEDDING_NAME = "embeddings"


def check_schedule(start_step: int, end_step: int, interval: int) -> None:
    """Raise a one-sentence error for a schedule that cannot run."""
    if start_step < 0:
        raise BabelpruneError(f"The pruning schedule starts at step {start_step}; give a start step of 0 or more.")
    if end_step < start_step:
        raise BabelpruneError(
            f"The pruning schedule ends at step {end_step}, before it starts at step {start_step}; "
            "give an end step at or after the start step."
        )
    if interval < 1:
        raise BabelpruneError(f"The pruning interval is {interval} steps; give an interval of at least 1 step.")


def cubic_sparsity(step: int, initial: float, final: float, start_step: int, end_step: int, interval: int) -> float:
    """The target sparsity at `step` of Zhu & Gupta's cubic schedule.

    `initial` before `start_step`, `final` from `end_step` on; in between the
    value of the last update step ``start_step + k * interval`` at or before
    `step`. The end step itself is always an update step, even when
    ``end_step - start_step`` is not a multiple of `interval`.
    """
    check_sparsity(initial)
    check_sparsity(final)
    check_schedule(start_step, end_step, interval)
    if step < start_step:
        return float(initial)
    if step >= end_step:
        return float(final)
    last_update = start_step + (step - start_step) // interval * interval
    progress = (last_update - start_step) / (end_step - start_step)
    return final + (initial - final) * (1.0 - progress) ** 3


class GMPConfig(BaseModel):
    """A gradual magnitude pruning schedule and what it prunes.

    Targets every 2-D weight of the encoder blocks' linears (attention and
    FFN), plus the word-embedding matrix when `include_embeddings`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    initial_sparsity: float = 0.0
    final_sparsity: float
    start_step: int = 0
    end_step: int
    interval: int = 10
    scope: Scope = "per-layer"
    include_embeddings: bool = False

    @model_validator(mode="after")
    def _valid(self) -> GMPConfig:
        check_sparsity(self.initial_sparsity)
        check_sparsity(self.final_sparsity)
        check_schedule(self.start_step, self.end_step, self.interval)
        return self

    def sparsity_at(self, step: int) -> float:
        return cubic_sparsity(
            step, self.initial_sparsity, self.final_sparsity, self.start_step, self.end_step, self.interval
        )

    @classmethod
    def for_steps(
        cls,
        final_sparsity: float,
        total_steps: int,
        start: float = 0.1,
        end: float = 0.7,
        updates: int = 10,
        interval: int | None = None,
        **options: object,
    ) -> GMPConfig:
        """A schedule pruning from `start` to `end` (shares of `total_steps`) every `interval` steps.

        Without an `interval`, about `updates` updates are spread over the
        pruning span. Ending before the last step leaves the model some steps
        to recover at the final sparsity, as in Zhu & Gupta's recipe. With 0
        steps (no training) the schedule prunes at once, at step 0.
        """
        if total_steps < 0:
            raise BabelpruneError(f"Training has {total_steps} steps; a pruning schedule needs 0 or more.")
        check_schedule_shares(start, end)
        start_step = int(round(start * total_steps))
        end_step = max(start_step, int(round(end * total_steps)))
        if interval is None:
            interval = max(1, math.ceil((end_step - start_step) / max(1, updates)))
        return cls(
            final_sparsity=final_sparsity, start_step=start_step, end_step=end_step, interval=interval, **options
        )


def check_schedule_shares(start: float, end: float) -> None:
    """Raise a one-sentence error unless 0 <= start < end <= 1 (shares of a run's steps)."""
    if not 0.0 <= start < 1.0:
        raise BabelpruneError(
            f"The pruning schedule starts at {start} of the run; give a start share in [0, 1) (--gmp-start)."
        )
    if not 0.0 < end <= 1.0:
        raise BabelpruneError(
            f"The pruning schedule ends at {end} of the run; give an end share in (0, 1] (--gmp-end)."
        )
    if start >= end:
        raise BabelpruneError(
            f"The pruning schedule starts at {start} of the run but ends at {end}; "
            "give a start share (--gmp-start) below the end share (--gmp-end)."
        )


class RelativeGMPConfig(BaseModel):
    """A GMP schedule given as shares of a run's training steps, so it fits any run length.

    Pruning starts at ``start * T`` and ends at ``end * T`` (rounded) of a run
    of T optimizer steps, with an update every `interval` steps (None: about
    ten updates over the span). `for_steps(T)` gives the `GMPConfig` a run
    of T steps follows; each run of a configuration gets its own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    initial_sparsity: float = 0.0
    final_sparsity: float
    start: float = 0.1
    end: float = 0.7
    interval: int | None = None
    scope: Scope = "per-layer"
    include_embeddings: bool = False

    @model_validator(mode="after")
    def _valid(self) -> RelativeGMPConfig:
        check_sparsity(self.initial_sparsity)
        check_sparsity(self.final_sparsity)
        check_schedule_shares(self.start, self.end)
        if self.interval is not None and self.interval < 1:
            raise BabelpruneError(
                f"The pruning interval is {self.interval} steps; give an interval of at least 1 step (--gmp-interval)."
            )
        return self

    def for_steps(self, total_steps: int) -> GMPConfig:
        """The step schedule of a run of `total_steps` optimizer steps."""
        return GMPConfig.for_steps(
            self.final_sparsity, total_steps, self.start, self.end, interval=self.interval,
            initial_sparsity=self.initial_sparsity, scope=self.scope, include_embeddings=self.include_embeddings,
        )


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
