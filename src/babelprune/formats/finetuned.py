"""The fine-tuned format: an encoder fine-tuned on a task (pruned gradually or not) and its task head.

    model/
      config.json, model.safetensors        the encoder as a plain HF folder (`AutoModel` loads it)
      tokenizer files                       when there is a tokenizer
      sparse/sparse.safetensors             the compact sparse copy `babelprune prune` writes
      sparse/config.json                    (`formats.pruned.save_sparse`)
      babelprune_task_head.json             the head: task, kind, labels, pooling, dropout, text prefix, max length
      task_head.safetensors                 its classifier: "weight" (labels, hidden) and "bias" (labels,)
      babelprune_finetuned.json             how the model was made (FINETUNED_FILE, the marker `load_model` looks for)

Why the encoder and a separate head rather than an
``AutoModelForSequenceClassification`` folder: babelprune's sequence heads
mean-pool the last hidden states over real tokens by default and apply one
linear layer (`babelprune.finetune.heads`), while transformers' sequence
classifiers put a trained dense + tanh layer on the first token (BERT's
pooler, XLM-R's classification head). No such class computes the same
logits, and a folder that loads under that class but gives other logits
would be worse than none. Token heads would map onto
``AutoModelForTokenClassification``, but one layout for every task kind keeps
a single way to load them. The two head files are the ones
`babelprune.formats.dynamic` writes beside a dynamic model, so every
babelprune folder with a task head reads the same way.

In plain transformers: ``AutoModel.from_pretrained(folder)`` gives the
encoder; the logits are ``hidden @ weight.T + bias`` with ``hidden`` the mean
of ``last_hidden_state`` over the attention mask (``pooling: mean``) or its
first position (``cls``), or every position for token tasks, on inputs
prefixed with ``text_prefix``.

This module holds the files only: building the `TaskHead` back lives in
`babelprune.finetune.saved`, since `babelprune.finetune` imports model loading,
which imports this module through the format registry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel

from babelprune.cache import atomic_dir, read_json_record
from babelprune.errors import BabelpruneError
from babelprune.formats.hf import load_hf_model, read_tensors
from babelprune.formats.pruned import SPARSE_DIR, save_sparse
from babelprune.models.base import LoadedModel

FINETUNED_FILE = "babelprune_finetuned.json"
# The task head's files: the same names and contents as `babelprune.formats.dynamic` writes
# (HEAD_FILE, HEAD_WEIGHTS there), repeated so that neither format module depends on the other.
HEAD_FILE = "babelprune_task_head.json"
HEAD_WEIGHTS = "task_head.safetensors"
HEAD_KEYS = ("kind", "labels", "pooling", "dropout")  # what rebuilding the head needs
FORMAT_VERSION = 1
REDO = "babelprune finetune"


def write_task_head(folder: Path, info: dict[str, Any], weight: torch.Tensor, bias: torch.Tensor) -> None:
    """`folder`/babelprune_task_head.json (`info`, which must name HEAD_KEYS) and task_head.safetensors."""
    missing = [key for key in HEAD_KEYS if key not in info]
    if missing:
        raise ValueError(f"the task head's description lacks {', '.join(missing)}")
    (Path(folder) / HEAD_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tensors = {"weight": weight.detach().contiguous(), "bias": bias.detach().contiguous()}
    save_file(tensors, str(Path(folder) / HEAD_WEIGHTS))


def read_task_head(folder: Path, redo: str = f"re-run `{REDO}`") -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The head's description and its classifier tensors, None when `folder` has no task head.

    `redo` says how to get a good folder (a clause, no full stop) for the error
    about a damaged head.
    """
    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        return None
    try:
        info = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or any(key not in info for key in HEAD_KEYS) or not (folder / HEAD_WEIGHTS).is_file():
        raise BabelpruneError(f"The task head in {folder} is corrupt or incomplete; {redo}.")
    tensors = read_tensors(folder / HEAD_WEIGHTS, redo)
    if sorted(tensors) != ["bias", "weight"]:
        raise BabelpruneError(f"The task head in {folder} is corrupt or incomplete; {redo}.")
    return info, tensors


def save_finetuned(
    model: PreTrainedModel, tokenizer, head_info: dict[str, Any], weight: torch.Tensor, bias: torch.Tensor,
    metadata: dict[str, Any], out: Path,
) -> Path:
    """Write the fine-tuned encoder, its sparse copy, its head and `metadata` to `out` (see the module docstring).

    Built in a temporary sibling and renamed into place whole; an existing
    `out` is replaced only then (a run trained again after being killed
    between saving its model and its result writes the same model again).
    """
    out = Path(out)
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)  # safetensors; tied weights written once
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_sparse(model, tmp / SPARSE_DIR)
        write_task_head(tmp, head_info, weight, bias)
        files = sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()] + [FINETUNED_FILE])
        record = {"format_version": FORMAT_VERSION, **metadata, "files": files}
        # Written last: a folder holding it is complete (`has_finetuned_model`).
        (tmp / FINETUNED_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def has_finetuned_model(folder: Path) -> bool:
    """Whether `folder` holds a model saved by `save_finetuned`."""
    return (Path(folder) / FINETUNED_FILE).is_file()


def read_finetuned_metadata(folder: Path) -> dict | None:
    """What `babelprune_finetuned.json` records, None when the folder has none."""
    return read_json_record(Path(folder) / FINETUNED_FILE, FORMAT_VERSION, REDO)


def load_finetuned(folder: Path) -> LoadedModel:
    """The encoder of a fine-tuned folder (the task head: `babelprune.finetune.saved.load_finetuned_head`).

    `pruning` holds the record, with the method ("gmp" or "dense") and the
    final sparsity that results and reports read off a pruned model.
    """
    folder = Path(folder)
    metadata = read_finetuned_metadata(folder)
    if metadata is None:
        raise BabelpruneError(f"{folder} has no {FINETUNED_FILE}; give a model folder written by `babelprune finetune`.")
    loaded = load_hf_model(folder, str(folder), f"re-run `{REDO}`")
    loaded.pruning = metadata
    return loaded
