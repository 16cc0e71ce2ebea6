"""Bytes a model takes on disk: its weights as stored, and the whole folder it came from.

`model_bytes(loaded)` gives the weights' bytes and where the figure comes from:

* "files": the folder's Hugging Face weight files (`model.safetensors` or its
  shards), what transformers loads;
* "sparse": the folder has no such files, only the sparse copy that
  `save_pruned(..., format="sparse")` writes (`sparse/sparse.safetensors`:
  bitmasks and kept values);
* "estimate": no folder matches the model (a hub id, or a model changed in
  memory after loading): the bytes of its unique tensors in their current
  dtypes, what a safetensors save would write less its small header.

Stored weights count only when they hold as many elements as the model in
memory, so a model pruned in place after loading (its `path` still naming the
dense folder) is not credited with that folder's size.

`folder_bytes(loaded)` is the whole deliverable: every file under the folder
(config, tokenizer, babelprune's records, and every copy of the weights: a
pruned folder in format "both" holds the dense HF copy and the sparse copy);
None when `model_bytes` had to estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.formats.pruned import sparse_size_report, sparse_weights_file
from babelprune.models.base import LoadedModel

WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors")


def unique_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The tensors a save writes: the state dict with tied (shared-storage) tensors once."""
    seen, tensors = set(), []
    for tensor in model.state_dict().values():
        key = (tensor.data_ptr(), tensor.numel())
        if key not in seen:
            seen.add(key)
            tensors.append(tensor)
    return tensors


def weight_files(folder: Path) -> list[Path]:
    """The Hugging Face safetensors weight files directly in `folder`."""
    return sorted({file for pattern in WEIGHT_PATTERNS for file in Path(folder).glob(pattern) if file.is_file()})


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def _elements_in(files: list[Path]) -> int | None:
    """Elements stored in safetensors files (read from their headers), None if one is unreadable."""
    total = 0
    try:
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                    total += _numel(handle.get_slice(key).get_shape())
    except (OSError, SafetensorError):
        return None
    return total


def _sparse_elements(folder: Path) -> int | None:
    """Elements the sparse copy describes (zeros included, tied tensors once), None if it is unreadable."""
    try:
        return sparse_size_report(folder)["elements"]
    except (BabelpruneError, OSError, SafetensorError, ValueError, KeyError):
        return None


def stored_weights(loaded: LoadedModel) -> tuple[list[Path], str] | None:
    """(the files holding the model's weights, "files" or "sparse"), None when no folder matches the model."""
    if loaded.path is None or not Path(loaded.path).is_dir():
        return None
    elements = sum(t.numel() for t in unique_tensors(loaded.model))
    files = weight_files(loaded.path)
    if files:
        return (files, "files") if _elements_in(files) == elements else None
    sparse = sparse_weights_file(loaded.path)
    if sparse is not None and _sparse_elements(loaded.path) == elements:
        return [sparse], "sparse"
    return None


def model_bytes(loaded: LoadedModel) -> tuple[int, str]:
    """(bytes, source): the weights as stored in the model's folder, or an estimate (see the module docstring)."""
    stored = stored_weights(loaded)
    if stored is not None:
        files, source = stored
        return sum(file.stat().st_size for file in files), source
    return sum(t.numel() * t.element_size() for t in unique_tensors(loaded.model)), "estimate"


def folder_bytes(loaded: LoadedModel) -> int | None:
    """Bytes of every file under the folder the model came from; None when no folder matches the model."""
    if stored_weights(loaded) is None:
        return None
    return sum(file.stat().st_size for file in Path(loaded.path).rglob("*") if file.is_file())
