"""The gradual magnitude pruning (GMP) schedule a fine-tuning run follows and records.

`GMPConfig` gives Zhu & Gupta's cubic schedule in steps; `RelativeGMPConfig`
gives start and end as shares of a run's steps. They are plain pydantic
models: a `FinetuneResult` records the schedule its run followed, so they
sit with the records at the bottom of the import graph, below the pruning
package (babelprune.prune.gradual, which prunes by them and re-exports them).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, model_validator

from babelprune.choices import GmpScope, check_sparsity
from babelprune.errors import BabelpruneError

Scope = GmpScope  # per-layer or global magnitude ranking


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
