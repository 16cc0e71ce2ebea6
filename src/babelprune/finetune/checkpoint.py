"""Checkpoints of a fine-tuning run: written atomically, one folder per step, only the last one kept.

A checkpoint holds what changes during training: the trainable weights and
the pruned ones, the optimizer and scheduler states, the pruning masks, torch's
global random state (dropout) and the step. Frozen weights are reloaded from
the model instead of being copied into every checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from babelprune.cache import atomic_dir
from babelprune.errors import BabelpruneError
from babelprune.finetune.heads import TaskHead
from babelprune.prune.gradual import GradualPruner


def _saved_names(head: TaskHead, pruner: GradualPruner | None) -> list[str]:
    """Parameters a checkpoint must hold: the trainable ones and the pruned ones."""
    pruned = {id(p) for p in pruner.targets.values()} if pruner else set()
    return [name for name, p in head.named_parameters() if p.requires_grad or id(p) in pruned]


def save_checkpoint(folder: Path, step: int, head, optimizer, scheduler, pruner, fingerprint: str) -> None:
    params = dict(head.named_parameters())
    state = {
        "step": step,
        "fingerprint": fingerprint,
        "params": {name: params[name].detach().clone() for name in _saved_names(head, pruner)},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "pruner": pruner.state_dict() if pruner else None,
        "rng": torch.get_rng_state(),
    }
    with atomic_dir(folder / f"step-{step:07d}") as tmp:
        torch.save(state, tmp / "state.pt")
    for older in folder.glob("step-*"):
        if older.name != f"step-{step:07d}":
            shutil.rmtree(older, ignore_errors=True)


def latest_checkpoint(folder: Path) -> Path | None:
    """The last complete checkpoint file in `folder`, None when there is none."""
    for partial in folder.glob(".step-*"):  # left by a process killed while writing
        shutil.rmtree(partial, ignore_errors=True)
    saved = sorted(folder.glob("step-*/state.pt"))
    return saved[-1] if saved else None


def load_checkpoint(folder: Path, head, optimizer, scheduler, pruner, fingerprint: str) -> int:
    """Restore the last checkpoint in `folder` (random state included); return its step (0 when there is none)."""
    path = latest_checkpoint(folder)
    if path is None:
        return 0
    state = torch.load(path, weights_only=False)
    if state["fingerprint"] != fingerprint:
        raise BabelpruneError(
            f"{folder} holds a checkpoint of another configuration; use a new output folder or delete that one."
        )
    params = dict(head.named_parameters())
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if pruner is not None and state["pruner"] is not None:
        pruner.load_state_dict(state["pruner"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])
