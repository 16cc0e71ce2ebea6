"""Checkpoints of a fine-tuning run: written atomically, one folder per step, only the last one kept.

A checkpoint holds what changes during training: the trainable weights and
the pruned ones, the optimizer and scheduler states, the pruning masks, torch's
global random state (dropout) and the step. Frozen weights are reloaded from
the model instead of being copied into every checkpoint.

Nothing is pickled, so a checkpoint folder from elsewhere cannot run code
when it is loaded: every tensor goes to ``tensors.safetensors`` under a
path-like name, and everything else to ``state.json``, a skeleton of the
nested state in which each tensor is a ``{"__tensor__": name}`` node (tuples
and dicts with non-string keys, such as the optimizer's per-parameter state,
get tagged nodes too, so the state comes back exactly as it was saved).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from babelprune.cache import atomic_dir
from babelprune.errors import BabelpruneError
from babelprune.finetune.heads import TaskHead
from babelprune.prune.gradual import GradualPruner

STATE_FILE = "state.json"
TENSORS_FILE = "tensors.safetensors"
CHECKPOINT_FORMAT = 1
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_SECTIONS = ("format_version", "step", "fingerprint", "params", "optimizer", "scheduler", "pruner", "rng")


# --------------------------------------------------------------------------- nested state <-> JSON + tensors


def split_tensors(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-ready copy of `value` with each tensor moved into `tensors` under its path in the nesting."""
    if isinstance(value, torch.Tensor):
        if path in tensors:
            raise ValueError(f"two tensors of the state are both named {path!r}")
        tensors[path] = value.detach().contiguous()
        return {_TENSOR: path}
    if isinstance(value, tuple):
        return {_TUPLE: [split_tensors(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [split_tensors(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("__") for key in value):
            return {key: split_tensors(item, f"{path}/{key}", tensors) for key, item in value.items()}
        return {_ITEMS: [[key, split_tensors(item, f"{path}/{key}", tensors)] for key, item in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a checkpoint cannot hold {type(value).__name__} at {path!r}")


def join_tensors(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `split_tensors`; raises ValueError on a node it did not write."""
    if isinstance(node, list):
        return [join_tensors(item, tensors) for item in node]
    if not isinstance(node, dict):
        return node
    if _TENSOR in node:
        if node[_TENSOR] not in tensors:
            raise ValueError(f"tensor {node[_TENSOR]!r} is missing")
        return tensors[node[_TENSOR]]
    if _TUPLE in node:
        return tuple(join_tensors(item, tensors) for item in node[_TUPLE])
    if _ITEMS in node:
        return {key: join_tensors(item, tensors) for key, item in node[_ITEMS]}
    return {key: join_tensors(item, tensors) for key, item in node.items()}


# --------------------------------------------------------------------------- writing


def _saved_names(head: TaskHead, pruner: GradualPruner | None) -> list[str]:
    """Parameters a checkpoint must hold: the trainable ones and the pruned ones."""
    pruned = {id(p) for p in pruner.targets.values()} if pruner else set()
    return [name for name, p in head.named_parameters() if p.requires_grad or id(p) in pruned]


def save_checkpoint(folder: Path, step: int, head, optimizer, scheduler, pruner, fingerprint: str) -> None:
    params = dict(head.named_parameters())
    state = {
        "format_version": CHECKPOINT_FORMAT,
        "step": step,
        "fingerprint": fingerprint,
        "params": {name: params[name] for name in _saved_names(head, pruner)},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "pruner": pruner.state_dict() if pruner else None,
        "rng": torch.get_rng_state(),
    }
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, "", tensors)
    with atomic_dir(folder / f"step-{step:07d}") as tmp:
        save_file(tensors, str(tmp / TENSORS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(skeleton, indent=1), encoding="utf-8")
    for older in folder.glob("step-*"):
        if older.name != f"step-{step:07d}":
            shutil.rmtree(older, ignore_errors=True)


# --------------------------------------------------------------------------- reading


def latest_checkpoint(folder: Path) -> Path | None:
    """The last checkpoint folder in `folder` (complete or not: loading checks it), None when there is none."""
    for partial in folder.glob(".step-*"):  # left by a process killed while writing
        shutil.rmtree(partial, ignore_errors=True)
    saved = sorted(path for path in folder.glob("step-*") if path.is_dir())
    return saved[-1] if saved else None


def _unusable(checkpoint: Path, why: str) -> BabelpruneError:
    return BabelpruneError(
        f"The checkpoint {checkpoint} {why}; delete that folder to train the run from the start, or use a new --out."
    )


def read_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The saved state of one checkpoint folder, tensors in place; one-sentence errors for damaged files."""
    state_file, tensors_file = checkpoint / STATE_FILE, checkpoint / TENSORS_FILE
    if not state_file.is_file() or not tensors_file.is_file():
        missing = STATE_FILE if not state_file.is_file() else TENSORS_FILE
        raise _unusable(checkpoint, f"has no {missing} (it is incomplete, or not written by this babelprune)")
    try:
        skeleton = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise _unusable(checkpoint, f"has a damaged {STATE_FILE}") from None
    if not isinstance(skeleton, dict):
        raise _unusable(checkpoint, f"has a {STATE_FILE} that is not a babelprune checkpoint state")
    if skeleton.get("format_version") != CHECKPOINT_FORMAT:
        raise _unusable(checkpoint, f"has format {skeleton.get('format_version')!r}, which this babelprune cannot read")
    if sorted(skeleton) != sorted(_SECTIONS):
        raise _unusable(checkpoint, f"has a {STATE_FILE} that is not a babelprune checkpoint state")
    try:
        tensors = load_file(str(tensors_file))
    except (SafetensorError, OSError):
        raise _unusable(checkpoint, f"has a truncated or damaged {TENSORS_FILE}") from None
    try:
        return join_tensors(skeleton, tensors)
    except (ValueError, TypeError, AttributeError) as error:
        raise _unusable(checkpoint, f"has a {STATE_FILE} that does not match its tensors ({error})") from None


def _params_problem(state: dict[str, Any], head: TaskHead, pruner: GradualPruner | None) -> str | None:
    """What keeps the saved weights from fitting `head`, as a phrase; None when they fit."""
    saved = state["params"]
    if not isinstance(saved, dict):
        return "it holds no weights"
    expected = dict(head.named_parameters())
    names = _saved_names(head, pruner)
    if sorted(saved) != sorted(names):
        differing = sorted(set(saved) ^ set(names))
        return f"its weights are not those this run trains ({', '.join(differing[:3])})"
    for name in names:
        value, param = saved[name], expected[name]
        if not isinstance(value, torch.Tensor) or value.shape != param.shape or value.dtype != param.dtype:
            return f"its weight {name} does not have the model's shape and type"
    return None


def _optimizer_problem(state: dict[str, Any], optimizer) -> str | None:
    """Shape checks torch's `load_state_dict` leaves out (it would fail later, mid-training)."""
    saved = state["optimizer"]
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        return "it holds no optimizer state"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, per_param in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(per_param, dict):
            return "its optimizer state names parameters this run does not have"
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != params[index].shape:
                return f"its optimizer state {key} of parameter {index} does not have the parameter's shape"
    return None


def _scheduler_problem(state: dict[str, Any], scheduler) -> str | None:
    saved = state["scheduler"]
    if not isinstance(saved, dict) or sorted(saved) != sorted(scheduler.state_dict()):
        return "its learning-rate schedule state is not this run's"
    return None


def _rng_problem(state: dict[str, Any]) -> str | None:
    rng, current = state["rng"], torch.get_rng_state()
    if not isinstance(rng, torch.Tensor) or rng.dtype != current.dtype or rng.shape != current.shape:
        return "its random state is not torch's"
    return None


def _fit_problem(state: dict[str, Any], head, optimizer, scheduler, pruner) -> str | None:
    """The first reason the saved state cannot be restored into this run, as a phrase; None when it fits."""
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return "its step is not a count"
    for problem in (
        _params_problem(state, head, pruner), _optimizer_problem(state, optimizer),
        _scheduler_problem(state, scheduler), _rng_problem(state),
    ):
        if problem is not None:
            return problem
    if pruner is None:
        return None
    return "it holds no pruning masks" if state["pruner"] is None else pruner.state_problem(state["pruner"])


def load_checkpoint(folder: Path, head, optimizer, scheduler, pruner, fingerprint: str) -> int:
    """Restore the last checkpoint in `folder` (random state included); return its step (0 when there is none).

    Everything is checked before anything is restored; a checkpoint that is
    damaged, from another run or does not fit the model ends in one sentence.
    """
    checkpoint = latest_checkpoint(folder)
    if checkpoint is None:
        return 0
    state = read_checkpoint(checkpoint)
    if state["fingerprint"] != fingerprint:
        raise _unusable(checkpoint, "belongs to another run (other model, task or settings)")
    problem = _fit_problem(state, head, optimizer, scheduler, pruner)
    if problem is not None:
        raise _unusable(checkpoint, f"does not fit this run: {problem}")
    params = dict(head.named_parameters())
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _unusable(checkpoint, f"does not fit this run: its optimizer state is not this run's ({detail})") from None
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value)
    if pruner is not None:
        pruner.load_state_dict(state["pruner"])
    torch.set_rng_state(state["rng"])
    return state["step"]
