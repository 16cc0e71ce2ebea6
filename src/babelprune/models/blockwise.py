"""Running a model block by block: the inputs every block receives, and a module's tensors put on a device for a while.

Pruning (babelprune.prune.sequential, .lockstep, .onload) and evaluation
with sequential onloading (babelprune.evaluate.onloaded) both run a model's
blocks one at a time over a batch of hidden states, so what they share
lives here, below both.

The inputs of block 0 and the keyword arguments each block receives
(attention masks, rotary position embeddings, which differ between Gemma
3's local and global layers) are captured once by temporarily replacing
every block with a pass-through catcher and running the model's body: this
costs only the embeddings.

`DeviceCopies` puts a copy of each tensor of a module on a device in place
of the original (the "home" tensor, which is kept) and puts the originals
back afterwards: the module runs on the device while its weights live on
the CPU, and nothing is copied back unless asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from babelprune.models.adapters import ArchAdapter


@dataclass
class BlockInputs:
    hidden: torch.Tensor  # (N, T, H): the input of the next block to run
    args: list[tuple]  # per block: positional arguments after the hidden states
    kwargs: list[dict[str, Any]]  # per block: keyword arguments
    # Where the blocks run when that is not where `hidden` is (--activation-memory): the hidden states, and
    # the arguments batched like them, stay in CPU memory; `slice_inputs` moves each micro-batch there and
    # `run_in_spans` brings its output back. None: the blocks run where `hidden` is.
    runs_on: torch.device | None = None


class _Catcher(nn.Module):
    """Stands in for a block: records what the block would receive and passes the hidden states on."""

    def __init__(self, block: nn.Module, returns_tuple: bool, store: list) -> None:
        super().__init__()
        self.block = block
        self._returns_tuple = returns_tuple
        self._store = store

    def __getattr__(self, name: str):
        # The model loop may read block attributes (e.g. attention_type): answer for the block.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["block"], name)

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        self._store.append((hidden, tuple(args[1:]), dict(kwargs)))
        return (hidden,) if self._returns_tuple else hidden


@torch.no_grad()
def capture_block_inputs(model: nn.Module, adapter: ArchAdapter, ids: torch.Tensor) -> BlockInputs:
    """Inputs of block 0 and the extra arguments of every block, for token ids (N, T)."""
    blocks = adapter.get_blocks(model)
    store: list = []
    originals = list(blocks)
    for index, block in enumerate(originals):
        blocks[index] = _Catcher(block, adapter.block_returns_tuple, store)
    try:
        extra = {"use_cache": False} if adapter.decoder else {}
        # The calibration ids live on the CPU; the embeddings read them where their weights are.
        adapter.base_model(model)(input_ids=ids.to(adapter.get_embeddings(model).weight.device), **extra)
    finally:
        for index, block in enumerate(originals):
            blocks[index] = block
    return BlockInputs(hidden=store[0][0], args=[s[1] for s in store], kwargs=[s[2] for s in store])


def run_block(block: nn.Module, adapter: ArchAdapter, inputs: BlockInputs, index: int,
              device: torch.device | None = None) -> torch.Tensor:
    """Block `index` on the current hidden states; returns its output hidden states (N, T, H).

    `device`: the hidden states and this block's arguments are moved there first (the output stays there).
    """
    hidden, args, kwargs = inputs.hidden, inputs.args[index], inputs.kwargs[index]
    if device is not None:
        hidden, args, kwargs = onto(hidden, device), moved(args, device), moved(kwargs, device)
    out = block(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


_Slot = tuple[nn.Module, str, str]  # (module, "_parameters" or "_buffers", name): where one tensor of a module sits


class DeviceCopies:
    """A module's parameters and buffers swapped for copies on `device` until `put_back`; the originals are kept.

    A tensor already on the device is not copied (on the CPU nothing moves),
    and a tensor that two submodules share is copied once. `to_device`
    replaces how one tensor is moved (a test's stand-in for an accelerator).
    """

    def __init__(self, module: nn.Module, device: torch.device,
                 to_device: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.device = torch.device(device)
        self.to_device = to_device or (lambda tensor: onto(tensor, self.device))
        self.homes: dict[_Slot, torch.Tensor] = {}
        moved: dict[int, torch.Tensor] = {}  # id(home) -> its copy
        for sub in module.modules():
            for kind in ("_parameters", "_buffers"):
                for name, tensor in getattr(sub, kind).items():
                    if tensor is None:
                        continue
                    if id(tensor) not in moved:
                        source = tensor.data if kind == "_parameters" else tensor
                        copy = self.to_device(source)
                        if copy is source:
                            moved[id(tensor)] = tensor  # already on the device: nothing to move or put back
                        else:
                            moved[id(tensor)] = nn.Parameter(copy, requires_grad=False) if kind == "_parameters" else copy
                    if moved[id(tensor)] is not tensor:
                        self.homes[(sub, kind, name)] = tensor
                        getattr(sub, kind)[name] = moved[id(tensor)]

    def copy_parameters_home(self) -> None:
        """The device copies' current values (pruned, refitted) into the parameters the module came with."""
        for (module, kind, name), home in self.homes.items():
            onloaded = getattr(module, kind)[name]
            if kind == "_parameters" and onloaded is not home:
                home.data.copy_(onloaded.data)

    def put_back(self) -> None:
        """The original tensors in their places again; the device copies are dropped."""
        for (module, kind, name), home in self.homes.items():
            getattr(module, kind)[name] = home
        self.homes = {}


def onto(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` (itself when it is there already). From pinned CPU memory the copy need not wait:
    the source stays untouched until the device has read it."""
    return tensor.to(device, non_blocking=tensor.device.type == "cpu" and tensor.is_pinned())


def moved(value, device: torch.device):
    """`value` with every tensor in it (inside tuples, lists and dicts too) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(moved(item, device) for item in value)
    if isinstance(value, list):
        return [moved(item, device) for item in value]
    if isinstance(value, dict):
        return {key: moved(item, device) for key, item in value.items()}
    return value
