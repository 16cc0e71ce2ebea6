"""The trimmed-vocabulary format: a plain HF folder with fewer vocabulary rows, and which rows they were.

    out/
      config.json, model.safetensors   the model, its embedding (and LM head) cut to the kept rows
      tokenizer.json, tokenizer_config.json   the tokenizer over the kept pieces, renumbered
      masks.safetensors                the per-language mask bank, when the parent had one
      babelprune_vocabulary.json       VOCABULARY_FILE: languages, kept ids (old id of each new id), parent

`AutoTokenizer` and `AutoModelForCausalLM` / `AutoModel` load the folder with
no babelprune code; `load_model` also reads the record back, so results say
what was trimmed, and composes the kept ids of a model trimmed twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from babelprune.cache import atomic_dir, read_json_record
from babelprune.errors import BabelpruneError
from babelprune.formats.hf import load_hf_model
from babelprune.formats.pruned import MASKS_FILE, load_mask_bank, save_mask_bank
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import ADDED_BIAS_KEY, STRUCTURE_KEY

VOCABULARY_FILE = "babelprune_vocabulary.json"
FORMAT_VERSION = 1
REDO = "babelprune trim-vocab"


def save_trimmed(loaded: LoadedModel, out: Path) -> Path:
    """Write a model trimmed by `trim_vocabulary` (its record in `loaded.pruning["vocabulary"]`) to the new folder `out`."""
    out = Path(out)
    record = (loaded.pruning or {}).get("vocabulary")
    if record is None:
        raise BabelpruneError(f"{loaded.spec} has not been trimmed; call trim_vocabulary on it before save_trimmed.")
    if out.exists():
        raise BabelpruneError(f"Output folder {out} exists; choose another --out or remove it.")
    if ADDED_BIAS_KEY in (getattr(loaded.model.config, STRUCTURE_KEY, None) or {}):
        raise BabelpruneError(
            f"{loaded.spec} carries output biases its architecture is built without (added by a structured --refit), "
            "which a trimmed folder, loaded as plain Hugging Face weights, would drop; trim the vocabulary first, "
            "then prune with --refit."
        )
    parent_pruning = {k: v for k, v in loaded.pruning.items() if k != "vocabulary"} or None
    with atomic_dir(out) as tmp:
        loaded.model.save_pretrained(tmp)  # a tied embedding and LM head are written once
        loaded.tokenizer.save_pretrained(tmp)
        if loaded.mask_bank:  # the bank covers block linears only, which trimming leaves as they are
            save_mask_bank(loaded.mask_bank, tmp / MASKS_FILE)
        full = {"format_version": FORMAT_VERSION, **record, "pruning": parent_pruning}
        (tmp / VOCABULARY_FILE).write_text(json.dumps(full, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def read_vocabulary_record(folder: Path) -> dict | None:
    """The trimming record of a folder, None when it has none."""
    return read_json_record(Path(folder) / VOCABULARY_FILE, FORMAT_VERSION, REDO)


def load_trimmed(folder: Path) -> LoadedModel:
    """Load a folder written by `save_trimmed`, checking that its record matches the embedding."""
    folder = Path(folder)
    record = read_vocabulary_record(folder)
    if record is None:
        raise BabelpruneError(f"{folder} has no {VOCABULARY_FILE}; give a folder written by `{REDO} --out`.")
    loaded = load_hf_model(folder, str(folder), f"re-run `{REDO}`")
    rows = adapter_for(loaded.model).get_embeddings(loaded.model).weight.shape[0]
    kept = record.get("kept_ids")
    if not isinstance(kept, list) or len(kept) != rows:
        raise BabelpruneError(f"{folder / VOCABULARY_FILE} does not match the model's {rows} embedding rows; re-run `{REDO}`.")
    parent_pruning = record.get("pruning") or {}
    vocabulary = {k: v for k, v in record.items() if k not in ("format_version", "pruning")}
    loaded.pruning = {**parent_pruning, "vocabulary": vocabulary}
    if (folder / MASKS_FILE).is_file():
        loaded.mask_bank = load_mask_bank(folder, loaded.model)
    return loaded
