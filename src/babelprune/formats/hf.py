"""Plain Hugging Face folders: the part every saved format shares.

Each folder babelprune reads is a Hugging Face folder at heart (config.json
and model.safetensors, or shards listed in model.safetensors.index.json),
sometimes with more files beside it. This module reads those common parts
with errors of one sentence that name the damaged file: safetensors files
are checked whole (header and length) before transformers opens them, since
a truncated download or a disk that filled up mid-copy otherwise surfaces
as a deserializer traceback.

Loading never runs code that came with a model: transformers is always
called with `trust_remote_code=False` (without it, a folder whose
config names its own Python classes in `auto_map` makes transformers ask
"Do you wish to run the custom code? [y/N]"), and only safetensors weights
are read (`use_safetensors=True`), since unpickling a .bin / .pt file can
run code too. `check_model_folder` refuses both kinds of folder with one
sentence before transformers sees them.
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
CONFIG_FILE = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Weights that torch reads by unpickling (transformers' names first, so the sentence names them).
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def damaged(file: Path, redo: str) -> BabelpruneError:
    """The error for a file that cannot be read; `redo` says how to get a good one (a clause, no full stop)."""
    return BabelpruneError(f"{file} is truncated or corrupt; {redo}.")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), for one-sentence errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# ----- what a model folder may not ask for ----------------------------------------


def _auto_map_entry(file: Path) -> str | None:
    """The first class `file` (a config JSON) maps to its own code, as "AutoModel -> module.Class"; None when none."""
    try:
        auto_map = json.loads(file.read_text(encoding="utf-8")).get("auto_map")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: transformers reports it, and it cannot run what it cannot read
    if not auto_map:
        return None
    if not isinstance(auto_map, dict):
        return "auto_map"
    name, target = next(iter(auto_map.items()))
    targets = target if isinstance(target, (list, tuple)) else [target]
    return f"auto_map {name} -> {', '.join(str(t) for t in targets if t)}"


def refuse_remote_code(folder: Path) -> None:
    """Refuse a folder whose config or tokenizer config names Python classes shipped with it (`auto_map`)."""
    folder = Path(folder)
    for name in (CONFIG_FILE, TOKENIZER_CONFIG):
        entry = _auto_map_entry(folder / name)
        if entry is not None:
            raise BabelpruneError(
                f"Model folder {folder} asks to run its own code ({entry} in {name}); babelprune never runs code "
                "from a model folder: use a folder whose model transformers implements."
            )


def remote_code_refusal(spec: str) -> BabelpruneError:
    """The refusal for a hub model whose files ask for their own code (seen only once transformers fetched them)."""
    return BabelpruneError(
        f"Model '{spec}' asks to run its own code (an auto_map in its config); babelprune never runs code "
        "from a model: use a model that transformers implements."
    )


def _asks_for_remote_code(exc: BaseException) -> bool:
    """Whether transformers refused to load because the model needs `trust_remote_code=True`."""
    return "trust_remote_code" in str(exc)


def refuse_pickled_weights(folder: Path) -> None:
    """Refuse a folder whose only weights are pickled (pytorch_model.bin, .pt, .ckpt...): unpickling can run code."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file() or (folder / WEIGHTS_INDEX).is_file():
        return
    pickled = [folder / name for name in PICKLED_WEIGHTS if (folder / name).is_file()]
    pickled += sorted(f for f in folder.glob("*") if f.suffix in PICKLED_SUFFIXES and f.is_file() and f not in pickled)
    if pickled:
        raise BabelpruneError(
            f"{folder} holds only pickled weights ({pickled[0].name}), which babelprune does not load because "
            "unpickling can run code; convert them to safetensors (load the model once where you trust the file "
            "and save_pretrained writes model.safetensors) and try again."
        )


def check_model_folder(folder: Path) -> None:
    """Refuse, before any transformers call, a folder that would run its own code or unpickle its weights."""
    refuse_remote_code(folder)
    refuse_pickled_weights(folder)


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
    if not (folder / TOKENIZER_CONFIG).is_file():
        return None
    refuse_remote_code(folder)
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def load_config(source: Path | str, spec: str):
    if isinstance(source, Path):
        refuse_remote_code(source)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        if _asks_for_remote_code(exc):
            raise remote_code_refusal(spec) from None
        raise BabelpruneError(
            f"Could not load the configuration of model '{spec}' ({first_line(exc)}); check the name or the folder."
        ) from None


def load_hf_model(source: Path | str, spec: str, redo: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A plain Hugging Face model (local folder or hub id) and its tokenizer, in eval mode.

    The class is the Auto class of the model's kind, so a folder saved from
    a model with a task head loads its bare encoder or its LM.
    """
    if isinstance(source, Path):
        check_model_folder(source)
    config = load_config(source, spec)
    adapter_for(config)  # fails early, naming supported families, for unknown architectures
    kind = model_kind(config)
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModel
    if isinstance(source, Path):
        check_weight_files(source, redo)
    hf_logging.disable_progress_bar()
    try:
        model = auto.from_pretrained(source, dtype=dtype, trust_remote_code=False, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        if _asks_for_remote_code(exc):
            raise remote_code_refusal(spec) from None
        raise BabelpruneError(
            f"The model '{spec}' could not be loaded ({first_line(exc)}); the folder may be corrupt or incomplete: {redo}."
        ) from None
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, path=source if isinstance(source, Path) else None, kind=kind)
