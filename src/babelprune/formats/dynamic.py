"""The Dynamic Sparsification format: save and load a dynamic model, and slice it to any size.

    out/
      config.json, model.safetensors, ...   plain HF folder: full width, units in ranked order
      tokenizer files                       when there is a tokenizer
      babelprune_dynamic.json               levels, units, unit orders, training record (DYNAMIC_FILE)
      babelprune_task_head.json             the task head, for encoders trained on a task (HEAD_FILE)
      task_head.safetensors                 its classifier weights (HEAD_WEIGHTS)

Training lives in `babelprune.prune.structured.dynamic`; a sliced model is
saved in the structured format (`babelprune.formats.structured`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from babelprune.cache import atomic_dir
from babelprune.choices import check_sparsity
from babelprune.errors import BabelpruneError, refuse_existing_output
from babelprune.finetune.heads import TaskHead
from babelprune.formats.hf import load_hf_model
from babelprune.formats.structured import save_structured
from babelprune.models.base import LoadedModel
from babelprune.prune.structured.dynamic_widths import level_selection
from babelprune.prune.structured.selection import DEFAULT_TOLERANCE, Selection, apply_selection

DYNAMIC_FILE = "babelprune_dynamic.json"
HEAD_FILE = "babelprune_task_head.json"
HEAD_WEIGHTS = "task_head.safetensors"
FORMAT_VERSION = 1
DYNAMIC_UNITS = ("heads", "ffn")
REDO = "re-run the dynamic training"


@dataclass
class DynamicModel:
    """A dynamically trained model: full width, units in ranked order, and what `babelprune_dynamic.json` holds."""

    loaded: LoadedModel
    head: TaskHead | None  # the task head around `loaded.model`; None for language models
    metadata: dict[str, Any]

    @property
    def levels(self) -> list[float]:
        return list(self.metadata["levels"])

    def selection(self, sparsity: float) -> Selection:
        """The units kept at `sparsity` (a prefix of every block's units)."""
        return level_selection(self.loaded.model, sparsity, self.metadata["units"], self.metadata.get("tolerance", DEFAULT_TOLERANCE))

    def save(self, out: Path) -> Path:
        return save_dynamic(self, out)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_head(folder: Path, head: TaskHead, info: dict) -> None:
    _write_json(folder / HEAD_FILE, info)
    weights = {"weight": head.classifier.weight.detach().contiguous(), "bias": head.classifier.bias.detach().contiguous()}
    save_file(weights, str(folder / HEAD_WEIGHTS))


def save_dynamic(dynamic: DynamicModel, out: Path) -> Path:
    """A normal HF folder (full-width, reordered weights) + `babelprune_dynamic.json` (+ the task head)."""
    out = Path(out)
    refuse_existing_output(out)
    with atomic_dir(out) as tmp:
        dynamic.loaded.model.save_pretrained(tmp)
        if dynamic.loaded.tokenizer is not None:
            dynamic.loaded.tokenizer.save_pretrained(tmp)
        _write_json(tmp / DYNAMIC_FILE, dynamic.metadata)
        if dynamic.head is not None:
            _write_head(tmp, dynamic.head, dynamic.metadata["task"])
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


def load_task_head(folder: Path | str, encoder: nn.Module) -> TaskHead | None:
    """The task head saved in a dynamic or sliced folder, around `encoder`, in eval mode; None when there is none."""
    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        return None
    try:
        info = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
        head = TaskHead(encoder, info["kind"], len(info["labels"]), info["pooling"], info["dropout"])
        head.classifier.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)))
    except Exception as exc:  # json, safetensors and shape errors all mean the same to the user
        raise BabelpruneError(f"The task head in {folder} is corrupt or missing; {REDO}.") from exc
    return head.eval()


def load_dynamic(folder: Path | str) -> DynamicModel:
    """Reload a folder written by `save_dynamic` (model in eval mode, metadata in `loaded.pruning`)."""
    metadata = read_dynamic_metadata(folder)
    loaded = load_hf_model(Path(folder), str(folder), REDO)
    loaded.pruning = metadata
    return DynamicModel(loaded, load_task_head(folder, loaded.model), metadata)


def slice_width(source: DynamicModel | Path | str, sparsity: float, out: Path | str) -> Path:
    """Cut a dynamic model to `sparsity` without training; save it as a normal smaller model in `out`.

    Keeps the first units of every block (`level_selection`), removes the rest
    physically and saves with `save_structured` (plus the task head, whose
    input width does not change), so `load_structured` / `load_model` reload
    it. A `DynamicModel` given in memory is left untouched.
    """
    out = Path(out)
    refuse_existing_output(out)
    from_folder = not isinstance(source, DynamicModel)
    dynamic = load_dynamic(source) if from_folder else source  # type: ignore[arg-type]
    sparsity = check_sparsity(sparsity)
    deepest = max(dynamic.levels)
    if sparsity > deepest + 1e-9:
        raise BabelpruneError(f"The model was trained down to sparsity {deepest}, not {sparsity}; slice at {deepest} or less, or train deeper levels.")
    selection = dynamic.selection(sparsity)
    model = dynamic.loaded.model if from_folder else copy.deepcopy(dynamic.loaded.model)
    with torch.no_grad():
        apply_selection(model, selection)
    meta = dynamic.metadata
    metadata = {
        "method": "dynamic", "sparsity": sparsity, "setting": "shared", "achieved_sparsity": round(selection.sparsity, 6),
        "parent": str(source) if from_folder else meta.get("parent"),
        "dynamic": {"units": meta["units"], "importance": meta.get("importance"), "levels": meta["levels"]},
    }
    with atomic_dir(out) as tmp:
        inner = save_structured(model, dynamic.loaded.tokenizer, tmp / "model", metadata)
        for item in inner.iterdir():
            item.rename(tmp / item.name)
        inner.rmdir()
        if dynamic.head is not None:
            _write_head(tmp, dynamic.head, meta["task"])
    return out
