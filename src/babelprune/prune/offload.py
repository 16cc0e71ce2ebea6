"""`--offload disk`: prune a model kept on disk, with one block's weights in memory at a time.

`open_offloaded(spec)` builds the model on the meta device (no memory for
weights) and reads from its safetensors files only what lies outside the
blocks: embeddings, the final norm, a head that is not tied. `prune_offloaded`
then runs the usual engine (babelprune.prune.engine) with a store that reads
each block just before it runs, writes it into the output folder once it is
pruned and frees it. Every method prunes a block from that block's own
inputs, so the result is the in-memory one; peak memory is the parts outside
the blocks, one block and the calibration activations, whatever the depth.

The output folder is the one `save_pruned` writes (a Hugging Face folder,
the sparse copy, the tokenizer and the pruning record), its weight files
written tensor by tensor (babelprune.formats.stream), in a temporary folder
renamed into place at the end: a failure or a full disk leaves nothing.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM

from babelprune.cache import atomic_dir
from babelprune.choices import StorageFormat, ValuesDtype
from babelprune.errors import BabelpruneError
from babelprune.formats.hf import WEIGHTS_FILE, check_weight_files, load_config, load_tokenizer, weight_files
from babelprune.formats.pruned import (
    SPARSE_DIR,
    SPARSE_FILE,
    block_linear_keys,
    finish_pruned_folder,
    save_sparse_config,
    sparse_entries,
    sparse_header,
    stored_values_dtype,
)
from babelprune.formats.registry import saved_format_loader
from babelprune.formats.stream import SafetensorsStream
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel, model_kind
from babelprune.formats.loading import resolve_spec
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import BlockStore, PruneResult, prune

REDO = "re-create the folder with save_pretrained"


@dataclass
class Offloaded:
    """A model whose blocks stay on disk: `loaded.model` holds them on the meta device."""

    loaded: LoadedModel
    files: dict[str, Path]  # key in the safetensors files -> the file holding it
    prefixes: list[str]  # the module name of each block, e.g. "model.layers.3"
    dtype: torch.dtype

    def read(self, root: nn.Module, names: list[str], prefix: str = "") -> None:
        """Read the parameters `names` of `root` (named from root; `prefix` names root in the model) from disk."""
        model = self.loaded.model
        wanted: dict[Path, list[tuple[str, str]]] = {}
        for name in names:
            key = _file_key(f"{prefix}{name}", self.files, model)
            wanted.setdefault(self.files[key], []).append((name, key))
        for file, pairs in wanted.items():
            with safe_open(str(file), framework="pt") as handle:
                for name, key in pairs:
                    tensor = handle.get_tensor(key)
                    _set_parameter(root, name, tensor.to(self.dtype) if tensor.is_floating_point() else tensor)


def _file_key(name: str, files: dict[str, Path], model: nn.Module) -> str:
    """The key of parameter `name` in the files (a bare encoder's weights may be saved under its prefix)."""
    for key in (name, f"{getattr(model, 'base_model_prefix', '')}.{name}"):
        if key in files:
            return key
    raise BabelpruneError(
        f"The weights files lack {name}; --offload disk reads folders written by save_pretrained for this model class: "
        "prune without --offload."
    )


def _set_parameter(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = root.get_submodule(module_name)
    module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def _drop_parameters(block: nn.Module) -> None:
    """Put the block's parameters back on the meta device: their memory is freed (buffers stay)."""
    for module in block.modules():
        for leaf, param in module._parameters.items():
            if param is not None:
                module._parameters[leaf] = nn.Parameter(param.to("meta"), requires_grad=False)


def _malloc_trim() -> None:
    """Hand memory freed inside glibc's heap back to the system (nothing elsewhere).

    A freed block's weights sit among smaller allocations that live on, so
    the heap cannot shrink by itself and would grow by about a block each time.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def open_offloaded(spec: str, dtype: torch.dtype = torch.float32) -> Offloaded:
    """The model of `spec` (an alias or a local safetensors folder) with only its non-block parts in memory."""
    folder = Path(spec).expanduser()
    if saved_format_loader(folder) is not None:
        raise BabelpruneError(f"{folder} was written by babelprune; --offload disk reads plain Hugging Face folders, so prune it without --offload.")
    source = resolve_spec(spec)
    if not isinstance(source, Path):
        raise BabelpruneError(f"--offload disk reads weights from a local folder, but '{spec}' is a hub id; download it to a folder first.")
    files = weight_files(source, REDO)
    if not files:
        raise BabelpruneError(f"{source} holds no {WEIGHTS_FILE} (nor a sharded index); --offload disk reads safetensors weights only.")
    check_weight_files(source, REDO)
    config = load_config(source, spec)
    adapter_for(config)  # unknown architectures fail here, naming the supported families
    kind = model_kind(config)
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModel
    with init_empty_weights():
        model = auto.from_config(config, dtype=dtype)
    model.eval()
    model.tie_weights()  # so that a tied head is not looked for in the files
    index: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            index.update({key: file for key in handle.keys()})
    module_names = {id(module): name for name, module in model.named_modules()}
    prefixes = [module_names[id(block)] for block in adapter_for(model).get_blocks(model)]
    loaded = LoadedModel(model=model, tokenizer=load_tokenizer(source), spec=spec, path=source, kind=kind)
    offloaded = Offloaded(loaded, index, prefixes, dtype)
    outside = [name for name, _ in model.named_parameters() if not name.startswith(tuple(p + "." for p in prefixes))]
    offloaded.read(model, outside)
    model.tie_weights()  # a tied head is the embedding read above
    return offloaded


class DiskBlocks(BlockStore):
    """Blocks read from disk when opened, written to the output streams once pruned, freed when closed."""

    def __init__(self, offloaded: Offloaded, output: _Output) -> None:
        self.offloaded = offloaded
        self.output = output

    @contextlib.contextmanager
    def open(self, index: int, block: nn.Module) -> Iterator[None]:
        prefix = self.offloaded.prefixes[index] + "."
        self.offloaded.read(block, [name for name, _ in block.named_parameters()], prefix)
        try:
            yield
        finally:
            _drop_parameters(block)
            _malloc_trim()

    def pruned(self, index: int, block: nn.Module) -> None:
        prefix = self.offloaded.prefixes[index] + "."
        for name, tensor in block.state_dict().items():
            self.output.add(prefix + name, tensor)


class _Output:
    """The weight files of the output folder: the HF model.safetensors and the sparse copy, per `fmt`."""

    def __init__(self, tmp: Path, model: nn.Module, fmt: StorageFormat, values: ValuesDtype) -> None:
        self.model, self.values, self.stored = model, values, stored_values_dtype(values)
        self.tmp = tmp
        self.hf = SafetensorsStream(tmp / WEIGHTS_FILE) if fmt in ("hf", "both") else None
        self.sparse = SafetensorsStream(tmp / SPARSE_DIR / SPARSE_FILE) if fmt in ("sparse", "both") else None
        state = model.state_dict(keep_vars=True)
        self.order = list(state)
        # Tied tensors (a head tied to the embeddings) are written once, the others named as aliases.
        first: dict[int, str] = {}  # id of a tensor -> the first key naming it
        self.aliases: dict[str, str] = {}
        for key, tensor in state.items():
            kept = first.setdefault(id(tensor), key)
            if kept != key:
                self.aliases[key] = kept
        self.linear_keys = block_linear_keys(model)
        self.shapes: dict[str, list[int]] = {}

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self.aliases:
            return
        if self.hf is not None:
            self.hf.add(key, tensor)
        if self.sparse is not None:
            entries, shape = sparse_entries(key, tensor, key in self.linear_keys, self.stored)
            for stored_key, stored in entries.items():
                self.sparse.add(stored_key, stored)
            if shape is not None:
                self.shapes[key] = shape

    def add_outside_blocks(self, prefixes: list[str]) -> None:
        """Every tensor outside the blocks (read at opening, or a buffer made with the model)."""
        inside = tuple(prefix + "." for prefix in prefixes)
        for key, tensor in self.model.state_dict().items():
            if not key.startswith(inside):
                self.add(key, tensor)

    def close(self) -> None:
        if self.hf is not None:
            self.hf.close({"format": "pt"})
            config = copy.deepcopy(self.model.config)
            config.architectures = [type(self.model).__name__]
            config.save_pretrained(self.tmp)
            if self.model.can_generate() and self.model.generation_config is not None:
                self.model.generation_config.save_pretrained(self.tmp)
        if self.sparse is not None:
            unique = set(self.order) - set(self.aliases)
            block_linears = sorted(k for k in self.linear_keys if k in unique)
            self.sparse.close(sparse_header(self.order, self.shapes, self.aliases, block_linears, self.values))
            save_sparse_config(self.model, self.tmp / SPARSE_DIR)

    def abort(self) -> None:
        for stream in (self.hf, self.sparse):
            if stream is not None:
                stream.abort()


def check_offload_request(config: PruneConfig) -> None:
    """The settings --offload disk cannot serve, refused before anything is read."""
    if config.setting != "shared":
        raise BabelpruneError(
            "--offload disk writes each block once it is pruned, but the per-language setting keeps every block's "
            "dense weights under each language's mask; use --setting shared, or drop --offload."
        )


def prune_offloaded(
    offloaded: Offloaded, config: PruneConfig, calibration: Calibration | None, out: Path,
    fmt: StorageFormat | None = None, values: ValuesDtype = "fp32", progress: bool = True,
    onload: torch.device | str | None = None, activation_memory: int | None = None,
) -> PruneResult:
    """Prune block by block from disk into the new folder `out` (the layout of `save_pruned`); returns the result.

    `onload` and `activation_memory` are the engine's: each block read from disk runs on that
    device while it is pruned and is written out from the CPU.
    """
    check_offload_request(config)
    out = Path(out)
    if out.exists():
        raise BabelpruneError(f"Output folder {out} exists; choose another --out or remove it.")
    fmt = fmt or "both"
    if fmt not in ("hf", "sparse", "both"):
        raise BabelpruneError(f"Unknown storage format '{fmt}'; choose hf, sparse or both.")
    stored_values_dtype(values)
    if fmt == "hf" and values != "fp32":
        raise BabelpruneError(f"--values {values} sets the type of the sparse copy, which format 'hf' does not write; use --format sparse or both.")
    loaded = offloaded.loaded
    with atomic_dir(out) as tmp:
        output = _Output(tmp, loaded.model, fmt, values)
        try:
            output.add_outside_blocks(offloaded.prefixes)
            result = prune(loaded, config, calibration, progress, DiskBlocks(offloaded, output), onload, activation_memory)
            output.close()
        except BaseException:
            output.abort()
            raise
        finish_pruned_folder(tmp, loaded, result, fmt, values)
    return result
