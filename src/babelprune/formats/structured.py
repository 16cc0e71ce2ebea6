"""The structured format: saving and reloading models whose blocks were made narrower or fewer.

    out/
      config.json                  the HF config, with `babelprune_structure` (per-block widths)
      model.safetensors            the smaller dense weights
      tokenizer files              when there is a tokenizer
      babelprune_structured.json   how the model was pruned (STRUCTURE_FILE)

`load_structured` instantiates the architecture from the config, narrows every
block to its recorded widths (the first heads / neurons: which ones were kept
no longer matters once the weights are smaller), then loads the weights.
When all blocks have the same widths and the config can state them (see
`units.record_structure`), plain `from_pretrained` loads the folder as well;
the metadata says so under "hf_loadable". A structured refit may give an
output projection or FFN down projection a bias its architecture is built
without; the structure lists those (`added_bias`), `load_structured` adds the
bias parameters back before loading the weights, and such a folder is not
"hf_loadable".
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from babelprune.cache import atomic_dir, read_json_record
from babelprune.errors import BabelpruneError
from babelprune.formats.hf import check_model_folder, load_tokenizer, new_model, read_weights
from babelprune.models.adapters import ArchAdapter, adapter_for
from babelprune.models.base import LoadedModel, model_kind
from babelprune.models.layouts import (
    ADDED_BIAS_KEY,
    STRUCTURE_KEY,
    layer_layouts,
    record_structure,
    remove_heads,
    remove_neurons,
    restore_added_biases,
)

STRUCTURE_FILE = "babelprune_structured.json"
FORMAT_VERSION = 1
REDO = "re-run the structured pruning"


def _corrupt(path: Path) -> BabelpruneError:
    return BabelpruneError(f"{path} is corrupt or does not match its config; {REDO}.")


def hf_loadable(model: nn.Module, adapter: ArchAdapter) -> bool:
    """Whether the HF config fields alone describe every block (so `from_pretrained` works).

    Not when a refit added biases the architecture does not build: `from_pretrained` would drop them.
    """
    config = model.config
    if ADDED_BIAS_KEY in (getattr(config, STRUCTURE_KEY, None) or {}):
        return False
    return adapter.num_layers(config) == len(adapter.get_blocks(model)) and all(
        (lay.n_heads, lay.n_kv_heads, lay.ffn, lay.head_dim)
        == (adapter.num_heads(config), adapter.num_kv_heads(config), adapter.intermediate_size(config), adapter.head_dim(config))
        for lay in layer_layouts(model, adapter)
    )


def save_structured(model: PreTrainedModel, tokenizer, out: Path, metadata: dict | None = None) -> Path:
    """Write the model (with its per-block widths in the config), tokenizer and metadata to the new folder `out`."""
    out = Path(out)
    if out.exists():
        raise BabelpruneError(f"Output folder {out} exists; choose another --out or remove it.")
    adapter = adapter_for(model)
    structure = record_structure(model, adapter)
    with atomic_dir(out) as tmp:
        # Keys as the model names them (no legacy renaming), so `load_state_dict` reads them back as they are.
        model.save_pretrained(tmp, save_original_format=False)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        record = {"format_version": FORMAT_VERSION, "structure": structure, "hf_loadable": hf_loadable(model, adapter)}
        record |= metadata or {}
        (tmp / STRUCTURE_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def read_structured_metadata(folder: Path) -> dict | None:
    """The metadata of a structured-pruned folder, None when it has none."""
    return read_json_record(Path(folder) / STRUCTURE_FILE, FORMAT_VERSION, "babelprune prune --structured")


def narrow_to_structure(model: nn.Module, structure: dict) -> None:
    """Cut every block of a freshly built model down to the recorded widths (keeping the first units)."""
    adapter = adapter_for(model)
    layouts = layer_layouts(model, adapter)
    widths = zip(structure["heads_per_layer"], structure["kv_heads_per_layer"], structure["ffn_per_layer"])
    for i, (layout, (heads, kv_heads, ffn)) in enumerate(zip(layouts, widths, strict=True)):
        if (heads, kv_heads) != (layout.n_heads, layout.n_kv_heads):
            per_group = heads // kv_heads
            keep_q = [g * layout.group_size + j for g in range(kv_heads) for j in range(per_group)]
            remove_heads(model, adapter, i, keep_q, list(range(kv_heads)))
        if ffn != layout.ffn:
            remove_neurons(model, adapter, i, list(range(ffn)))
    restore_added_biases(model, adapter, structure)


def _no_init():
    """Skip random initialisation of weights that are loaded right after (when transformers offers it)."""
    for where in ("transformers.initialization", "transformers.modeling_utils"):
        with contextlib.suppress(ImportError, AttributeError):
            module = __import__(where, fromlist=["no_init_weights"])
            return module.no_init_weights()
    return contextlib.nullcontext()


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `state`; keys it lacks must be weights tied to loaded ones (written once by save_pretrained)."""
    result = model.load_state_dict(state, strict=False, assign=True)  # assign: keep the saved dtypes
    model.tie_weights()
    if result.unexpected_keys:
        raise ValueError(f"unexpected weights {result.unexpected_keys[:3]}")
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in result.missing_keys if current[k].data_ptr() not in loaded]
    if untied:
        raise ValueError(f"missing weights {untied[:3]}")


def load_structured(folder: Path) -> LoadedModel:
    """Rebuild a model saved by `save_structured`, in eval mode, with its tokenizer and metadata."""
    folder = Path(folder)
    metadata = read_structured_metadata(folder)
    if metadata is None:
        raise BabelpruneError(f"{folder} has no {STRUCTURE_FILE}; give a folder written by a structured prune.")
    check_model_folder(folder)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        structure = getattr(config, STRUCTURE_KEY)
        with _no_init():
            model = new_model(config)
        narrow_to_structure(model, structure)
        _load_weights(model, read_weights(folder, REDO))  # a damaged weights file raises, naming it
    except (OSError, ValueError, KeyError, AttributeError, RuntimeError, SafetensorError) as exc:
        raise _corrupt(folder) from exc
    tokenizer = load_tokenizer(folder)
    return LoadedModel(model=model.eval(), tokenizer=tokenizer, spec=str(folder), path=folder,
                       kind=model_kind(model.config), pruning=metadata)
