"""The Dynamic Sparsification format: the files of a dynamic model and of a model sliced from it.

    out/
      config.json, model.safetensors, ...   plain HF folder: full width, units in ranked order
      tokenizer files                       when there is a tokenizer
      babelprune_dynamic.json               levels, units, unit orders, training record (DYNAMIC_FILE)
      babelprune_task_head.json             the task head, for encoders trained on a task (HEAD_FILE)
      task_head.safetensors                 its classifier weights (HEAD_WEIGHTS)

This module writes and reads those files from plain parts (a model, its
tokenizer, dicts, tensors): it sits below the pruning engine and the
fine-tuning package. The dynamic model in memory (`DynamicModel`), its
task head and slicing it to a width (`slice_width`) live with the training
in `babelprune.finetune.dynamic`; a sliced model is saved in the
structured format (`babelprune.formats.structured`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from babelprune.cache import atomic_dir
from babelprune.errors import BabelpruneError, refuse_existing_output
from babelprune.formats.structured import save_structured

DYNAMIC_FILE = "babelprune_dynamic.json"
HEAD_FILE = "babelprune_task_head.json"
HEAD_WEIGHTS = "task_head.safetensors"
FORMAT_VERSION = 1
DYNAMIC_UNITS = ("heads", "ffn")
REDO = "re-run the dynamic training"

HeadParts = tuple[dict[str, Any], nn.Linear]  # the head's description (HEAD_FILE) and its classifier


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_head(folder: Path, head: HeadParts) -> None:
    info, classifier = head
    _write_json(folder / HEAD_FILE, info)
    weights = {"weight": classifier.weight.detach().contiguous(), "bias": classifier.bias.detach().contiguous()}
    save_file(weights, str(folder / HEAD_WEIGHTS))


def write_dynamic_folder(model: nn.Module, tokenizer, metadata: dict[str, Any], head: HeadParts | None, out: Path) -> Path:
    """A normal HF folder (full-width, reordered weights) + `babelprune_dynamic.json` (+ the task head)."""
    out = Path(out)
    refuse_existing_output(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _write_json(tmp / DYNAMIC_FILE, metadata)
        if head is not None:
            _write_head(tmp, head)
    return out


def read_dynamic_metadata(folder: Path | str) -> dict:
    """What `babelprune_dynamic.json` of a folder holds; BabelpruneError when the folder was not trained dynamically."""
    file = Path(folder) / DYNAMIC_FILE
    if not file.is_file():
        raise BabelpruneError(f"{folder} was not trained dynamically (it has no {DYNAMIC_FILE}); give a folder saved after train-dynamic.")
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
        levels, units = metadata["levels"], metadata["units"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BabelpruneError(f"{file} is corrupt; {REDO}.") from exc
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise BabelpruneError(f"{file} was written by a newer babelprune; upgrade babelprune to read it.")
    if not levels or not set(units) <= set(DYNAMIC_UNITS):
        raise BabelpruneError(f"{file} is corrupt; {REDO}.")
    return metadata


def read_head_files(folder: Path | str) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The task head's description and classifier tensors in a dynamic or sliced folder; None when it has none."""
    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        return None
    try:
        return json.loads((folder / HEAD_FILE).read_text(encoding="utf-8")), load_file(str(folder / HEAD_WEIGHTS))
    except Exception as exc:  # json and safetensors errors all mean the same to the user
        raise head_error(folder) from exc


def head_error(folder: Path) -> BabelpruneError:
    """The error about a task head whose files are damaged or do not fit its description."""
    return BabelpruneError(f"The task head in {folder} is corrupt or missing; {REDO}.")


def write_sliced_folder(model: nn.Module, tokenizer, metadata: dict[str, Any], head: HeadParts | None, out: Path) -> Path:
    """A model cut from a dynamic one: the structured format (`save_structured`) plus the task head."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        inner = save_structured(model, tokenizer, tmp / "model", metadata)
        for item in inner.iterdir():
            item.rename(tmp / item.name)
        inner.rmdir()
        if head is not None:
            _write_head(tmp, head)
    return out
