"""The one-shot pruned format: saving and loading pruned models.

`save_pruned` writes one output folder, built in a temporary sibling and
renamed into place only when complete:

    out/
      config.json, model.safetensors, ...   plain Hugging Face folder (formats "hf", "both")
      tokenizer files                       when the model has a tokenizer
      sparse/sparse.safetensors             compressed weights (formats "sparse", "both")
      sparse/config.json                    the config needed to rebuild the model from sparse/
      masks.safetensors                     per-language setting: one packed bitmask per (language, linear)
      babelprune_pruning.json               how the model was pruned (METADATA_FILE)

Formats: "both" (the default for the shared setting) keeps the HF folder,
loadable by any Hugging Face code, next to the compact sparse copy; "hf"
keeps only the first, "sparse" only the second. The per-language setting
keeps dense weights (its masks are applied at run time), which the sparse
format cannot shrink, so its default is "hf".

The sparse format stores each block linear weight with at least 25% zeros
as a bitmask of its non-zero entries (numpy.packbits, row-major over the
stored tensor) plus the kept values, in order. "Zero" is tested on the bit
pattern, not numerically, so a -0.0 is kept as a value and every tensor
reloads bit for bit. Tensors that share storage (an LM head tied to the
embeddings) are stored once and listed as aliases.

`load_pruned` returns a `LoadedModel` whose `pruning` holds the metadata
and whose `mask_bank` holds the per-language masks (None when shared).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from babelprune.cache import atomic_dir, read_json_record
from babelprune.choices import ValuesDtype
from babelprune.errors import BabelpruneError, refuse_existing_output
from babelprune.formats.hf import check_weight_files, load_tokenizer, model_class, new_model, refuse_remote_code
from babelprune.models.adapters import adapter_for, named_linears, weight_matrix
from babelprune.models.base import LoadedModel, model_kind

METADATA_FILE = "babelprune_pruning.json"
MASKS_FILE = "masks.safetensors"
SPARSE_DIR = "sparse"
SPARSE_FILE = "sparse.safetensors"
FORMAT_VERSION = 1
REDO = "re-run `babelprune prune`"
SPARSE_MIN_ZEROS = 0.25  # below this share of zeros a bitmask + values costs more than it saves
_HEADER_KEY = "babelprune"  # the safetensors metadata entry holding our JSON
_MASK_SUFFIX, _VALUES_SUFFIX = "::mask", "::values"

StorageFormat = Literal["hf", "sparse", "both"]
VALUES_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
Masks = dict[str, torch.Tensor]  # "<block>.<name>" -> bool (out, in), True = pruned
MaskBank = dict[str, Masks]  # language -> masks


class _Setting(Protocol):
    @property
    def setting(self) -> str: ...


class PruneOutcome(Protocol):
    """What a pruned folder records of a pruning run (`babelprune.prune.engine.PruneResult` has it).

    Formats sit below the pruning engine, so they read a run through these
    fields rather than importing the engine's result class.
    """

    @property
    def config(self) -> _Setting: ...  # .setting: "shared" or "per-language"

    @property
    def mask_bank(self) -> MaskBank | None: ...

    def metadata(self) -> dict: ...  # the pruning record written to METADATA_FILE


# Integer types of each element width, to test floats for zero on their bits.
_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# Bytes per element of the safetensors dtype names.
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _corrupt(path: Path) -> BabelpruneError:
    return BabelpruneError(f"{path} is corrupt or does not match the model; {REDO}.")


# ----- pure helpers ------------------------------------------------------------


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor of any shape as uint8 bytes, 8 entries per byte (row-major, first entry in the high bit)."""
    return torch.from_numpy(np.packbits(mask.reshape(-1).numpy()))


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `pack_bits`: the bool tensor of `shape`. Raises ValueError when the byte count does not fit."""
    count = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (count + 7) // 8:
        raise ValueError(f"{packed.numel()} packed bytes cannot hold a mask of shape {tuple(shape)}")
    bits = np.unpackbits(packed.numpy(), count=count)
    return torch.from_numpy(bits.astype(bool)).reshape(shape)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a & b| / |a | b| of two bool tensors of equal shape; 1.0 when both are empty."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def mask_overlap(bank: MaskBank) -> dict[str, dict[str, float]]:
    """Jaccard overlap of the pruned sets of every pair of languages, all linears pooled."""
    names = sorted(next(iter(bank.values()))) if bank else []
    flat = {lang: torch.cat([masks[name].reshape(-1) for name in names]) for lang, masks in bank.items()}
    return {a: {b: jaccard(flat[a], flat[b]) for b in flat} for a in flat}


def nonzero_bits(tensor: torch.Tensor) -> torch.Tensor:
    """Entries whose bit pattern is not all zeros (so -0.0 counts as non-zero, and reloads as -0.0)."""
    return tensor.contiguous().view(_INT_OF_WIDTH[tensor.element_size()]) != 0


def encode_sparse(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed bitmask of the non-zero entries, their values in row-major order)."""
    keep = nonzero_bits(tensor)
    return pack_bits(keep), tensor.contiguous().reshape(-1)[keep.reshape(-1)].clone()


def decode_sparse(packed: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `encode_sparse`. Raises ValueError when mask and values disagree."""
    keep = unpack_bits(packed, shape).reshape(-1)
    if int(keep.sum()) != values.numel():
        raise ValueError("the mask and the kept values disagree")
    dense = torch.zeros(keep.numel(), dtype=values.dtype)
    dense[keep] = values
    return dense.reshape(shape)


# ----- the sparse format ---------------------------------------------------------


def block_linear_keys(model: nn.Module) -> dict[str, str]:
    """State-dict key of each block linear's weight -> its "<block>.<name>"."""
    module_names = {id(module): name for name, module in model.named_modules()}
    linears = named_linears(model, adapter_for(model))
    return {f"{module_names[id(linear)]}.weight": name for name, linear in linears.items()}


def _unique_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict without tensors that repeat another one (tied weights), and alias -> kept key.

    safetensors refuses tensors that share memory, so repeats are stored once.
    """
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for key, tensor in state.items():
        tensor = tensor.detach()
        ident = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        storage = tensor.untyped_storage().data_ptr()
        # Another view into memory already stored (not the same tensor): write a copy.
        unique[key] = tensor.clone() if storage in storages else tensor.contiguous()
        storages.add(storage)
    return unique, aliases


def stored_values_dtype(values: ValuesDtype) -> torch.dtype:
    if values not in VALUES_DTYPES:
        raise BabelpruneError(f"Unknown value type '{values}' for the sparse copy; choose {', '.join(VALUES_DTYPES)}.")
    return VALUES_DTYPES[values]


def _retie(state: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """Make every alias the very tensor of the key it repeats again (a cast makes copies)."""
    for alias, key in aliases.items():
        state[alias] = state[key]
    return state


def save_sparse(model: PreTrainedModel, folder: Path, values: ValuesDtype = "fp32") -> None:
    """Write `folder`/sparse.safetensors and `folder`/config.json (see the module docstring).

    values: the type floating-point tensors are stored in; fp16 and bf16
    halve the bytes of every kept value (and of the embedding), rounding them.
    A value that rounds to zero is then stored as a zero.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stored = stored_values_dtype(values)
    state = model.state_dict()
    unique, aliases = _unique_tensors(state)
    linear_keys = block_linear_keys(model)
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for key, tensor in unique.items():
        stored_tensors, shape = sparse_entries(key, tensor, key in linear_keys, stored)
        tensors.update(stored_tensors)
        if shape is not None:
            shapes[key] = shape
    header = sparse_header(list(state), shapes, aliases, sorted(k for k in linear_keys if k in unique), values)
    save_file(tensors, str(folder / SPARSE_FILE), metadata=header)
    save_sparse_config(model, folder)


def sparse_entries(key: str, tensor: torch.Tensor, block_linear: bool, stored: torch.dtype) -> tuple[dict[str, torch.Tensor], list[int] | None]:
    """How one tensor of the state dict is stored: {stored key: tensor}, and its shape when compressed (else None)."""
    if tensor.is_floating_point() and tensor.dtype != stored:
        tensor = tensor.to(stored)
    compress = block_linear and tensor.dim() == 2 and tensor.is_floating_point()
    if compress and float((~nonzero_bits(tensor)).float().mean()) >= SPARSE_MIN_ZEROS:
        packed, kept = encode_sparse(tensor)
        return {key + _MASK_SUFFIX: packed, key + _VALUES_SUFFIX: kept}, list(tensor.shape)
    return {key: tensor}, None


def sparse_header(order: list[str], shapes: dict[str, list[int]], aliases: dict[str, str], block_linears: list[str],
                  values: ValuesDtype) -> dict[str, str]:
    """The safetensors metadata of sparse.safetensors (order: every state-dict key, aliases included)."""
    header = {"version": FORMAT_VERSION, "order": order, "shapes": shapes, "aliases": aliases,
              "block_linears": block_linears, "values": values}
    return {_HEADER_KEY: json.dumps(header)}


def save_sparse_config(model: PreTrainedModel, folder: Path) -> None:
    """sparse/config.json: the model's config, naming its class so that loading picks the same head."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)


def _sparse_file(path: Path) -> Path:
    """The sparse.safetensors of an output folder, of its sparse/ folder, or the file itself."""
    path = Path(path)
    for candidate in (path / SPARSE_DIR / SPARSE_FILE, path / SPARSE_FILE, path):
        if candidate.is_file():
            return candidate
    raise BabelpruneError(f"{path} holds no {SPARSE_DIR}/{SPARSE_FILE}; save the model with format 'sparse' or 'both'.")


def sparse_weights_file(folder: Path) -> Path | None:
    """The sparse copy (sparse/sparse.safetensors) of an output folder, None when it has none."""
    file = Path(folder) / SPARSE_DIR / SPARSE_FILE
    return file if file.is_file() else None


def _read_header(file: Path) -> dict:
    with safe_open(str(file), framework="pt") as handle:
        return json.loads((handle.metadata() or {})[_HEADER_KEY])


def load_sparse_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The exact state dict saved by `save_sparse`, tied keys included (sharing one tensor)."""
    file = _sparse_file(path)
    try:
        tensors = load_file(str(file))
        header = _read_header(file)
        state: dict[str, torch.Tensor] = {}
        for key, shape in header["shapes"].items():
            state[key] = decode_sparse(tensors.pop(key + _MASK_SUFFIX), tensors.pop(key + _VALUES_SUFFIX), tuple(shape))
        state.update(tensors)
        for alias, key in header["aliases"].items():
            state[alias] = state[key]
        if set(state) != set(header["order"]):
            raise ValueError("the stored keys differ from the listed ones")
        return {key: state[key] for key in header["order"]}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(file) from exc


def load_sparse(folder: Path, dtype: torch.dtype | None = torch.float32) -> PreTrainedModel:
    """Rebuild the model of an output folder (or its sparse/ folder) from the sparse format, in eval mode.

    dtype: floating-point tensors stored in fp16 or bf16 are cast to it
    (float32 by default); None keeps them as stored.
    """
    file = _sparse_file(folder)
    state = load_sparse_state_dict(file)
    if dtype is not None:
        state = {key: t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t for key, t in state.items()}
        state = _retie(state, _read_header(file)["aliases"])
    refuse_remote_code(file.parent)  # sparse/ has its own config.json
    try:
        config = AutoConfig.from_pretrained(file.parent, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise _corrupt(file.parent / "config.json") from exc
    model = new_model(config)
    try:
        # assign=True keeps the stored dtypes instead of casting into the fresh fp32 parameters.
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise _corrupt(file) from exc
    model.tie_weights()
    return model.eval()


def sparse_size_report(folder: Path) -> dict:
    """Bytes of the sparse format against a dense fp32 safetensors of the same tensors.

    "sparse_bytes" and "dense_fp32_bytes" count tensor data only (tied tensors
    once); "sparse_file_bytes" is what sparse/ takes on disk, headers and
    config included. The "block_linear_*" figures cover the blocks' linear weights;
    "elements" counts the elements of the tensors stored (tied ones once, zeros included).
    """
    file = _sparse_file(folder)
    header = _read_header(file)
    with safe_open(str(file), framework="pt") as handle:
        sizes = {}
        for key in handle.keys():
            part = handle.get_slice(key)
            sizes[key] = (math.prod(part.get_shape()), _DTYPE_BYTES[part.get_dtype()])
    sparse, dense = {}, {}
    for key, (count, width) in sizes.items():
        original = key.removesuffix(_MASK_SUFFIX).removesuffix(_VALUES_SUFFIX)
        sparse[original] = sparse.get(original, 0) + count * width
        if original == key:
            dense[key] = count * 4
    for key, shape in header["shapes"].items():
        dense[key] = math.prod(shape) * 4
    linears = set(header["block_linears"])
    report = {
        "sparse_bytes": sum(sparse.values()),
        "sparse_file_bytes": sum(p.stat().st_size for p in file.parent.iterdir() if p.is_file()),
        "dense_fp32_bytes": sum(dense.values()),
        "block_linear_sparse_bytes": sum(v for k, v in sparse.items() if k in linears),
        "block_linear_dense_fp32_bytes": sum(v for k, v in dense.items() if k in linears),
        "compressed_tensors": len(header["shapes"]),
        "elements": sum(dense.values()) // 4,
    }
    report["ratio"] = report["sparse_bytes"] / report["dense_fp32_bytes"]
    report["block_linear_ratio"] = report["block_linear_sparse_bytes"] / max(report["block_linear_dense_fp32_bytes"], 1)
    return report


# ----- the per-language mask bank ------------------------------------------------


def save_mask_bank(bank: MaskBank, file: Path) -> None:
    """One packed bitmask per (language, linear), keyed "<lang>/<block>.<name>"."""
    tensors = {f"{lang}/{name}": pack_bits(mask) for lang, masks in bank.items() for name, mask in masks.items()}
    shapes = {f"{lang}/{name}": list(mask.shape) for lang, masks in bank.items() for name, mask in masks.items()}
    header = {"version": FORMAT_VERSION, "languages": list(bank), "shapes": shapes}
    save_file(tensors, str(file), metadata={_HEADER_KEY: json.dumps(header)})


def load_mask_bank(folder: Path, model: nn.Module) -> MaskBank:
    """The mask bank of an output folder, checked against `model`'s linears (every language, every linear)."""
    file = Path(folder) / MASKS_FILE
    linears = named_linears(model, adapter_for(model))
    try:
        tensors = load_file(str(file))
        header = _read_header(file)
        bank: MaskBank = {lang: {} for lang in header["languages"]}
        for key, packed in tensors.items():
            lang, name = key.split("/", 1)
            expected = tuple(weight_matrix(linears[name]).shape)
            if tuple(header["shapes"][key]) != expected:
                raise ValueError(f"mask {key} has shape {header['shapes'][key]}, the model {list(expected)}")
            bank[lang][name] = unpack_bits(packed, expected)
        if not bank or any(set(masks) != set(linears) for masks in bank.values()):
            raise ValueError("some language lacks masks for some linears")
        return bank
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(file) from exc


@contextlib.contextmanager
def apply_language_mask(model: nn.Module, bank: MaskBank, lang: str) -> Iterator[nn.Module]:
    """Zero the weights `bank[lang]` prunes inside the block; the dense weights come back exactly after it."""
    if lang not in bank:
        raise BabelpruneError(f"The mask bank has no language '{lang}'; choose one of: {', '.join(bank)}.")
    linears = named_linears(model, adapter_for(model))
    saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (weight view, mask, removed values)
    try:
        with torch.no_grad():
            for name, mask in bank[lang].items():
                weight = weight_matrix(linears[name])  # (out, in) view into the module's storage
                saved.append((weight, mask, weight[mask].clone()))
                weight.masked_fill_(mask, 0.0)
        yield model
    finally:
        with torch.no_grad():
            for weight, mask, values in saved:
                weight.masked_scatter_(mask, values)  # same row-major order as weight[mask]


# ----- the output folder ---------------------------------------------------------


def _metadata(loaded: LoadedModel, result: PruneOutcome, fmt: StorageFormat, files: list[str]) -> dict:
    metadata = result.metadata() | {
        "format_version": FORMAT_VERSION,
        "parent": loaded.spec,
        "kind": loaded.kind,
        "format": fmt,
        "files": files,
    }
    vocabulary = (loaded.pruning or {}).get("vocabulary")
    if vocabulary:  # pruned after (or before) trimming: the kept vocabulary ids travel with the folder
        metadata["vocabulary"] = vocabulary
    if result.mask_bank:
        metadata["mask_bank_languages"] = list(result.mask_bank)
        metadata["mask_overlap"] = mask_overlap(result.mask_bank)
    return metadata


def save_pruned(
    loaded: LoadedModel, result: PruneOutcome, out: Path, format: StorageFormat | None = None, values: ValuesDtype = "fp32"
) -> Path:
    """Write a pruned model to the new folder `out` (see the module docstring); returns `out`.

    format None picks "both" for the shared setting and "hf" for the per-language one.
    values: the floating-point type of the sparse copy (the HF copy keeps the model's own).
    """
    stored_values_dtype(values)  # an unknown type is refused before anything is written
    out = Path(out)
    refuse_existing_output(out)
    per_language = result.config.setting == "per-language"
    fmt = format or ("hf" if per_language else "both")
    if fmt not in ("hf", "sparse", "both"):
        raise BabelpruneError(f"Unknown storage format '{fmt}'; choose hf, sparse or both.")
    if per_language and not result.mask_bank:
        raise BabelpruneError("This per-language result has no mask bank to save; re-run `babelprune prune`.")
    with atomic_dir(out) as tmp:
        if fmt in ("hf", "both"):
            loaded.model.save_pretrained(tmp)  # safetensors; tied weights written once
        if fmt in ("sparse", "both"):
            save_sparse(loaded.model, tmp / SPARSE_DIR, values)
        elif values != "fp32":
            raise BabelpruneError(f"--values {values} sets the type of the sparse copy, which format 'hf' does not write; "
                                  "use --format sparse or both.")
        if per_language:
            save_mask_bank(result.mask_bank, tmp / MASKS_FILE)
        finish_pruned_folder(tmp, loaded, result, fmt, values)
    return out


def finish_pruned_folder(tmp: Path, loaded: LoadedModel, result: PruneOutcome, fmt: StorageFormat, values: ValuesDtype) -> None:
    """The last files of an output folder whose weights are written: the tokenizer and the pruning record."""
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(tmp)
    files = sorted([p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()] + [METADATA_FILE])
    text = json.dumps(_metadata(loaded, result, fmt, files) | {"values": values}, indent=2, ensure_ascii=False)
    (tmp / METADATA_FILE).write_text(text + "\n", encoding="utf-8")


def read_pruning_metadata(folder: Path) -> dict | None:
    """The metadata of a pruned-model folder, None when it has none."""
    return read_json_record(Path(folder) / METADATA_FILE, FORMAT_VERSION, "babelprune prune")


def _load_hf(folder: Path) -> PreTrainedModel:
    check_weight_files(folder, REDO)  # a damaged weights file is named, not reported as the whole folder
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        # dtype "auto" keeps the saved dtype; use_safetensors: never unpickle a stray .bin beside them
        model = model_class(config).from_pretrained(folder, dtype="auto", trust_remote_code=False, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise _corrupt(folder) from exc
    return model.eval()


def _has_hf_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))


def load_pruned(folder: Path) -> LoadedModel:
    """Load a folder written by `save_pruned`: the HF weights when present, else the sparse copy; plus the mask bank."""
    folder = Path(folder)
    metadata = read_pruning_metadata(folder)
    if metadata is None:
        raise BabelpruneError(f"{folder} has no {METADATA_FILE}; give a folder written by `babelprune prune --out`.")
    refuse_remote_code(folder)  # weights are safetensors or the sparse copy, never pickles: see _load_hf
    model = _load_hf(folder) if _has_hf_weights(folder) else load_sparse(folder)
    tokenizer = load_tokenizer(folder)
    bank = load_mask_bank(folder, model) if (folder / MASKS_FILE).is_file() else None
    return LoadedModel(
        model=model, tokenizer=tokenizer, spec=str(folder), path=folder, kind=model_kind(model.config),
        pruning=metadata, mask_bank=bank,
    )
