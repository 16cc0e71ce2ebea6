"""Where blocks and calibration activations live while pruning, and where each block runs.

`BlockStore` says where the blocks' weights live: `IN_MEMORY` (nothing to
do), or on disk (babelprune.prune.offload reads each block when it is
opened and writes it out once it is pruned).

`OnloadedBlocks` wraps any store with an execution device: the weights stay
where the store keeps them (the CPU, or disk read into the CPU), and each
block is moved to the device when it is opened, copied back once it is
pruned and put back when it is closed. Only the block being pruned is on the
device, so its memory holds one block, its statistics (Hessians) and the
calibration activations, whatever the depth. A tensor already on the device
is not moved, so on the CPU the same code does nothing: there is one way
to prune, wherever it runs.

`Activations` places the captured calibration inputs of the blocks (hidden
states (N, T, H) and the arguments every block receives) on the execution
device. With a budget (`--activation-memory`) that the hidden states of all
N windows exceed, they stay in CPU memory (pinned when the device is CUDA,
so copies to it are fast) and every block runs over micro-batches of windows
whose hidden states fit the budget: each micro-batch is moved in to run and
its output moved back (babelprune.prune.sequential, lockstep).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from babelprune.devices import format_size
from babelprune.errors import BabelpruneError
from babelprune.models.blockwise import DeviceCopies, moved, onto
from babelprune.prune.sequential import BlockInputs, is_batched


class BlockStore:
    """Where the blocks' weights live while pruning: here in memory, where nothing needs doing.

    babelprune.prune.offload reads each block from disk when it is opened,
    writes it out once pruned and frees it when it is closed.
    """

    def open(self, index: int, block: nn.Module) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def pruned(self, index: int, block: nn.Module) -> None:
        """Block `index` is pruned (it is still open)."""


IN_MEMORY = BlockStore()


class OnloadedBlocks(BlockStore):
    """Blocks kept by `inner` (in memory or on disk), each run on `device` while it is open.

    Opening a block reads it through `inner`, then puts a copy of each of its
    tensors on `device` in place of the original (the "home" copy, which is
    kept; babelprune.models.blockwise.DeviceCopies). `pruned` copies the
    parameters back into their home tensors and puts those back, so `inner`
    sees the pruned block where it keeps it (the disk store writes it out
    from there). Closing always puts the home tensors back: a block whose
    pruning failed keeps its dense weights.
    """

    def __init__(self, device: torch.device, inner: BlockStore = IN_MEMORY) -> None:
        self.device = torch.device(device)
        self.inner = inner
        self._copies: DeviceCopies | None = None

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the execution device (itself when it is there already: nothing moves on the CPU)."""
        return onto(tensor, self.device)

    @contextlib.contextmanager
    def open(self, index: int, block: nn.Module) -> Iterator[None]:
        with self.inner.open(index, block):
            self._copies = DeviceCopies(block, self.device, self.to_device)
            try:
                yield
            finally:
                self._put_back()

    def pruned(self, index: int, block: nn.Module) -> None:
        if self._copies is not None:
            self._copies.copy_parameters_home()  # the pruned (or refitted) values, into the tensors the block came with
        self._put_back()
        self.inner.pruned(index, block)

    def _put_back(self) -> None:
        if self._copies is not None:
            self._copies.put_back()
            self._copies = None


def block_bytes(block: nn.Module) -> int:
    """Bytes of one block's parameters and buffers: what onloading puts on the device at a time."""
    return sum(t.numel() * t.element_size() for t in [*block.parameters(), *block.buffers()])


@dataclass
class Activations:
    """Where the blocks' calibration inputs go: `device` (None: where they were captured), within `budget` bytes.

    `windows` is set by `place(..., record=True)`: the windows per micro-batch when
    the hidden states were kept in CPU memory (None: they fit on the device).
    """

    device: torch.device | None = None
    budget: int | None = None  # bytes of hidden states allowed on the device; None: no limit
    windows: int | None = None

    def is_plain(self) -> bool:
        """No device and no budget: the captured inputs stay as they are (the pruning of older versions)."""
        return self.device is None and self.budget is None

    def fitting_windows(self, hidden: torch.Tensor) -> int | None:
        """Windows per micro-batch whose hidden states fit the budget; None when all N of them fit."""
        n, *rest = hidden.shape  # (N, T, H)
        per_window = hidden[:1].numel() * hidden.element_size()  # T * H * bytes of the model's type
        if self.budget is None or n * per_window <= self.budget:
            return None
        if per_window > self.budget:
            shape = " x ".join(str(size) for size in rest)
            raise BabelpruneError(
                f"--activation-memory {format_size(self.budget)} is less than the hidden states of one calibration window "
                f"({shape} in {str(hidden.dtype).removeprefix('torch.')}, {format_size(per_window)}); give at least "
                f"{format_size(per_window)} or a shorter --seq-len."
            )
        return self.budget // per_window

    def place(self, inputs: BlockInputs, record: bool = False) -> BlockInputs:
        """`inputs` where the blocks will read them: all on the device, or hidden states in CPU memory, streamed."""
        if self.is_plain():
            return inputs
        device = self.device if self.device is not None else inputs.hidden.device
        windows = self.fitting_windows(inputs.hidden)
        if record:
            self.windows = windows
        n = inputs.hidden.shape[0]
        if windows is None:
            move = lambda value: moved(value, device)  # noqa: E731
            return BlockInputs(move(inputs.hidden), [move(a) for a in inputs.args], [move(k) for k in inputs.kwargs])
        pin = device.type == "cuda"

        def home(value):
            # Tensors batched like the hidden states stay in CPU memory and are cut per micro-batch
            # (sequential.slice_inputs moves each piece in); the others (rotary tables...) go to the device once.
            if isinstance(value, torch.Tensor) and is_batched(value, n):
                on_cpu = value.cpu()
                return on_cpu.pin_memory() if pin else on_cpu
            return moved(value, device)

        args = [tuple(home(a) for a in args) for args in inputs.args]
        kwargs = [{key: home(value) for key, value in kwargs.items()} for kwargs in inputs.kwargs]
        return BlockInputs(home(inputs.hidden), args, kwargs, runs_on=device)
