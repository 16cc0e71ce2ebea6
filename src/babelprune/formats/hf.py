"""Plain Hugging Face folders: the part every saved format shares.

Each folder babelprune reads is a Hugging Face folder at heart (config.json
and model.safetensors, or shards listed in model.safetensors.index.json),
sometimes with more files beside it. This module reads those common parts
with errors of one sentence that name the damaged file: safetensors files
are checked whole (header and length) before transformers opens them, since
a truncated download or a disk that filled up mid-copy otherwise surfaces
as a deserializer traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel, model_kind

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def damaged(file: Path, redo: str) -> BabelpruneError:
    """The error for a file that cannot be read; `redo` says how to get a good one (a clause, no full stop)."""
    return BabelpruneError(f"{file} is truncated or corrupt; {redo}.")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), for one-sentence errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# ----- safetensors files ---------------------------------------------------------


def check_safetensors(file: Path, redo: str) -> None:
    """Raise `damaged` unless `file` is a whole safetensors file (its header parses and covers the file)."""
    try:
        with safe_open(str(file), framework="pt"):
            pass
    except (SafetensorError, OSError) as exc:
        raise damaged(file, redo) from exc


def read_tensors(file: Path, redo: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a damaged file raises `damaged`."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise damaged(file, redo) from exc


def read_safetensors_metadata(file: Path, redo: str) -> dict[str, str]:
    """The string metadata stored in a safetensors header ({} when there is none)."""
    try:
        with safe_open(str(file), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise damaged(file, redo) from exc


def weight_files(folder: Path, redo: str) -> list[Path]:
    """The safetensors files holding a folder's model weights: the single file or the shards of the index."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    index = folder / WEIGHTS_INDEX
    if not index.is_file():
        return []
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise damaged(index, redo) from exc
    return [folder / shard for shard in shards]


def check_weight_files(folder: Path, redo: str) -> None:
    """Raise `damaged`, naming the file, when any weights file of `folder` is truncated or corrupt."""
    for file in weight_files(folder, redo):
        check_safetensors(file, redo)


def read_weights(folder: Path, redo: str) -> dict[str, torch.Tensor]:
    """The state dict stored in a folder's weights files, shards merged, keys as saved."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder, redo):
        state.update(read_tensors(file, redo))
    return state


# ----- model classes -------------------------------------------------------------


def model_class(config) -> type:
    """The transformers class `config.architectures` names, else the Auto class of the config's kind."""
    names = getattr(config, "architectures", None) or []
    found = getattr(transformers, names[0], None) if names else None
    if isinstance(found, type) and issubclass(found, PreTrainedModel):
        return found
    return AutoModelForCausalLM if model_kind(config) == "causal-lm" else AutoModel


def new_model(config) -> PreTrainedModel:
    """A freshly initialised model of the class `model_class` picks."""
    cls = model_class(config)
    return cls.from_config(config) if cls in (AutoModel, AutoModelForCausalLM) else cls(config)


def load_tokenizer(folder: Path):
    """The tokenizer saved in `folder`, None when it holds none."""
    folder = Path(folder)
    return AutoTokenizer.from_pretrained(folder) if (folder / TOKENIZER_CONFIG).is_file() else None


def load_config(source: Path | str, spec: str):
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise BabelpruneError(
            f"Could not load the configuration of model '{spec}' ({first_line(exc)}); check the name or the folder."
        ) from None


def load_hf_model(source: Path | str, spec: str, redo: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A plain Hugging Face model (local folder or hub id) and its tokenizer, in eval mode.

    The class is the Auto class of the model's kind, so a folder saved from
    a model with a task head loads its bare encoder or its LM.
    """
    config = load_config(source, spec)
    adapter_for(config)  # fails early, naming supported families, for unknown architectures
    kind = model_kind(config)
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModel
    if isinstance(source, Path):
        check_weight_files(source, redo)
    hf_logging.disable_progress_bar()
    try:
        model = auto.from_pretrained(source, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise BabelpruneError(
            f"The model '{spec}' could not be loaded ({first_line(exc)}); the folder may be corrupt or incomplete: {redo}."
        ) from None
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, path=source if isinstance(source, Path) else None, kind=kind)
