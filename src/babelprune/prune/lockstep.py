"""Run one block over micro-batches of windows in lockstep, pausing every micro-batch before each linear.

The one-pass order prunes each linear just before it is applied, on the
statistics of its input over *every* calibration window. Run as one batch,
the block then holds the activations of every window at once, intermediate
ones included (the FFN's (N, T, 4H) tensors dominate). Here each micro-batch
of windows runs the block in its own greenlet (a coroutine that can pause
anywhere in the block's code), one at a time:

    every micro-batch runs up to the next linear, adds its input to the
    statistics and waits;  the linear is pruned (it has seen every window);
    every micro-batch applies it and runs on to the next linear;  ...

Each waiting micro-batch keeps only what the block's code keeps alive at
that point (the residual, the linear's input, attention's q, k, v), while
the transient activations between two linears exist for one micro-batch at
a time. The block runs once, as in the one-batch pass, with the same
statistics and the same pruning order; only the sums over windows are added
in another order (float rounding).

Greenlets rather than threads: everything runs in one thread, in a fixed
order, and the memory one micro-batch frees is reused by the next (glibc
gives each thread its own arena, so threads would each keep their own).

In stages (`run_block_in_stages`, for hidden states kept in CPU memory under
--activation-memory): lockstep keeps every micro-batch paused inside the
block at once, so what the block keeps alive at a linear is there for every
window. In stages only one micro-batch is ever inside the block:

    each micro-batch in turn is moved in and runs from the block's input to
    the first linear not yet pruned (those before it are), adds that linear's
    input to the statistics, and those of the linears right after it that
    read the very same tensor (q, k, v; gate, up), then is stopped, freeing
    everything it held;  the stage's linears are pruned;  the next stage
    starts again from the block's input;  ...  a last run, every linear
    pruned, gives the output, copied back micro-batch by micro-batch.

Each linear sees the inputs it sees in lockstep over the same micro-batches,
added in the same order, so the statistics and the pruning are the same; the
price is running the start of the block again for every stage (four stages
in a Llama block: q k v, o, gate up, down).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from greenlet import getcurrent, greenlet
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import ArchAdapter
from babelprune.prune.sequential import (
    BatchStats,
    BlockInputs,
    LinearAction,
    StatsCollector,
    new_hidden,
    rows_in_span,
    run_block,
    slice_inputs,
)


class _Walker:
    """One micro-batch's run of the block, in a greenlet that waits before every linear for its turn."""

    def __init__(self, run: Callable[[], torch.Tensor], stats: BatchStats) -> None:
        self.stats = stats
        self.at: tuple[str, nn.Module] | None = None  # the linear it waits before; None once finished
        self.input: torch.Tensor | None = None  # that linear's input, while it waits (stages only)
        self.output: torch.Tensor | None = None
        self._run = run
        self.greenlet = greenlet(self._main)

    def _main(self) -> None:
        self.output = self._run()
        self.at = None

    def step(self) -> None:
        """Coordinator: let the micro-batch run to its next linear (or to its end); its errors raise here."""
        self.greenlet.switch()

    def wait_before(self, name: str, linear: nn.Module, x: torch.Tensor | None = None) -> None:
        """Micro-batch: hand the turn back to the coordinator until it has acted on `linear` (whose input is `x`)."""
        self.at, self.input = (name, linear), x
        self.greenlet.parent.switch()
        self.input = None

    def stop(self) -> None:
        """Unwind a micro-batch that still waits (the run ended early)."""
        if not self.greenlet.dead:
            self.greenlet.throw()  # GreenletExit inside it: its frames unwind and free their tensors


def _diverged(index: int) -> BabelpruneError:
    return BabelpruneError(
        f"Block {index} applied different linears to different micro-batches of windows, so they cannot be pruned in "
        "lockstep; give --calib-batch at least the number of calibration windows."
    )


def _hook(name: str, walkers: dict[greenlet, _Walker]) -> Callable:
    def before_linear(module: nn.Module, args: tuple) -> None:
        walker = walkers[getcurrent()]
        walker.stats(name, args[0])
        walker.wait_before(name, module)

    return before_linear


@torch.no_grad()
def run_block_in_lockstep(
    block: nn.Module,
    adapter: ArchAdapter,
    inputs: BlockInputs,
    index: int,
    collector: StatsCollector,
    rows: dict[str, torch.Tensor],
    spans: list[tuple[int, int]],
    action: LinearAction,
) -> torch.Tensor:
    """Block `index` over the windows of `inputs` in micro-batches `spans`; returns its output (N, T, H).

    Before each linear is applied, every micro-batch adds its input to
    `collector` (`rows`: each language's windows), then `action(name, linear,
    stats over all windows)` runs once; with an action that prunes, this is
    the one-pass order over micro-batches.
    """
    walkers: dict[greenlet, _Walker] = {}
    linears = adapter.block_linears(block).items()
    handles = [linear.register_forward_pre_hook(_hook(name, walkers)) for name, linear in linears]
    try:
        for start, end in spans:
            batch = slice_inputs(inputs, start, end)
            run = lambda batch=batch: run_block(block, adapter, batch, index)  # noqa: E731
            walker = _Walker(run, collector.batch(rows_in_span(rows, start, end)))
            walkers[walker.greenlet] = walker
        order = list(walkers.values())
        for walker in order:
            walker.step()
        while order[0].at is not None:
            name, linear = order[0].at
            if any(walker.at is None or walker.at[0] != name for walker in order):
                raise _diverged(index)
            action(name, linear, collector.by_name[name])
            for walker in order:
                walker.step()
        if any(walker.at is not None for walker in order):
            raise _diverged(index)
        return torch.cat([walker.output for walker in order])
    finally:
        for walker in walkers.values():
            walker.stop()
        for handle in handles:
            handle.remove()


def _pause(name: str, walkers: dict[greenlet, _Walker]) -> Callable:
    def before_linear(module: nn.Module, args: tuple) -> None:
        walkers[getcurrent()].wait_before(name, module, args[0])

    return before_linear


def _walk_stage(walker: _Walker, pruned: set[str]) -> list[str]:
    """Run one micro-batch up to the next stage and add its inputs there; the names of the stage's linears.

    Linears already pruned are applied as they come. The first linear that is
    not starts the stage; the linears after it join the stage only while they
    read the very same tensor (so their input cannot depend on a linear of the
    stage, which runs unpruned here). The micro-batch then stops. With every
    linear pruned it runs to the end: no stage, and `walker.output` is the block's.
    """
    walker.step()
    stage: list[str] = []
    shared: torch.Tensor | None = None
    while walker.at is not None:
        name, _ = walker.at
        if name not in pruned:
            if stage and walker.input is not shared:
                break
            walker.stats(name, walker.input)
            stage.append(name)
            shared = walker.input
        walker.step()
    return stage


@torch.no_grad()
def run_block_in_stages(
    block: nn.Module,
    adapter: ArchAdapter,
    inputs: BlockInputs,
    index: int,
    collector: StatsCollector,
    rows: dict[str, torch.Tensor],
    spans: list[tuple[int, int]],
    action: LinearAction,
) -> torch.Tensor:
    """Block `index` in the one-pass order over micro-batches `spans` that are never inside it together.

    Returns its output (N, T, H) beside `inputs.hidden` (in CPU memory when
    streamed). `collector`, `rows` and `action` are those of
    `run_block_in_lockstep`, and so is the result.
    """
    walkers: dict[greenlet, _Walker] = {}
    linears = adapter.block_linears(block)
    handles = [linear.register_forward_pre_hook(_pause(name, walkers)) for name, linear in linears.items()]
    pruned: set[str] = set()
    try:
        while True:
            stage: list[str] | None = None
            output: torch.Tensor | None = None  # made on the last run only (pinned memory is slow to allocate)
            for start, end in spans:
                batch = slice_inputs(inputs, start, end)
                run = lambda batch=batch: run_block(block, adapter, batch, index)  # noqa: E731
                walker = _Walker(run, collector.batch(rows_in_span(rows, start, end)))
                walkers[walker.greenlet] = walker
                try:
                    names = _walk_stage(walker, pruned)
                    if stage is not None and names != stage:
                        raise _diverged(index)
                    stage = names
                    if not names:  # every linear pruned: this is the block's output
                        output = new_hidden(inputs) if output is None else output
                        output[start:end].copy_(walker.output)
                finally:
                    walker.stop()  # a micro-batch stopped inside the block unwinds and frees what it held
                    del walkers[walker.greenlet]
                del batch, run, walker
            if not stage:
                return output
            for name in stage:
                action(name, linears[name], collector.by_name[name])
                pruned.add(name)
    finally:
        for walker in walkers.values():
            walker.stop()
        for handle in handles:
            handle.remove()
