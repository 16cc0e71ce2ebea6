"""Quantized GGUF: the f32 (or f16) export, then llama.cpp's own quantizer, optionally with an importance matrix.

    export_quantized(loaded, "model-q4km.gguf", "Q4_K_M", matrix=matrix)

The quantizer is llama.cpp's `llama_model_quantize`, reached through
llama-cpp-python's C bindings (the `babelprune[llama]` extra). The
unquantized file is written beside the output under a temporary name,
quantized into a second temporary that is renamed to the output when
complete, and removed in every case.

An importance matrix (`babelprune.formats.imatrix.ImportanceMatrix`) goes to
the quantizer in memory: `llama_model_quantize_params.imatrix` points at an
array of {name, data, size} entries (one per weight, `size` = its input
width) that ends with an entry whose name is NULL.

What llama.cpp does with rows its k-quants cannot take: a k-quant (Q2_K to
Q6_K) packs 256 columns per block, so a tensor whose rows are not a multiple
of 256 wide gets another type (with llama-cpp-python 0.3.36: Q6_K -> Q8_0,
Q5_K -> Q5_1, Q4_K -> Q5_0, Q3_K and Q2_K -> Q4_0) and llama.cpp warns that
it "required fallback quantization". Those tensors are named in the file's
metadata (babelprune.quantize.fallback_tensors) and, with the types they
got, in the returned record. Q8_0 packs 32 columns and reads no importance
matrix.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
from pathlib import Path
from typing import get_args

import numpy as np

from babelprune.choices import GgufDtype, GgufQuant
from babelprune.errors import BabelpruneError, refuse_existing_output
from babelprune.formats.gguf import GgufExport, export_gguf, linear_gguf_names, write_atomically
from babelprune.formats.imatrix import ImportanceMatrix
from babelprune.models.base import LoadedModel

QUANTS: tuple[str, ...] = get_args(GgufQuant)
K_QUANT_BLOCK = 256  # columns per k-quant block (ggml's QK_K)
READS_NO_IMATRIX = ("Q8_0",)  # llama.cpp rounds Q8_0 blocks to their own scale, with no weighting
INSTALL = "pip install 'babelprune[llama]'"


def check_quant(quant: str) -> None:
    """Refuse a mix llama.cpp's quantizer is not offered for here, in one sentence."""
    if quant not in QUANTS:
        raise BabelpruneError(f"Unknown GGUF quantization '{quant}'; choose one of {', '.join(QUANTS)}.")


def llama_cpp_bindings(purpose: str = "Quantized GGUF export runs llama.cpp's own quantizer"):
    """llama-cpp-python's C bindings, or one sentence (starting with `purpose`) saying how to install them."""
    try:
        import llama_cpp
    except ImportError:
        raise BabelpruneError(f"{purpose}, which needs llama-cpp-python: {INSTALL}.") from None
    return llama_cpp


def quantized_widths(loaded: LoadedModel) -> dict[str, int]:
    """GGUF name -> row width (input columns) of every tensor the quantizer quantizes: the linears and token_embd."""
    modules = dict(loaded.model.named_modules())
    widths = {name: modules[module].weight.shape[1] for module, name in linear_gguf_names(loaded).items()}
    widths["token_embd.weight"] = loaded.model.get_input_embeddings().weight.shape[1]  # (vocab, hidden)
    return widths


def fallback_tensors(widths: dict[str, int], quant: str) -> list[str]:
    """Tensors whose rows a k-quant mix cannot pack (width not a multiple of 256): llama.cpp gives them another type."""
    if quant in READS_NO_IMATRIX:
        return []
    return sorted(name for name, width in widths.items() if width % K_QUANT_BLOCK)


def quantize_file(source: Path, target: Path, quant: str, imatrix: dict[str, np.ndarray] | None = None,
                  threads: int = 0) -> None:
    """llama.cpp's quantizer: GGUF `source` (f32/f16) -> `target` in mix `quant`, weighted by `imatrix` when given."""
    llama_cpp = llama_cpp_bindings()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = threads  # <= 0: llama.cpp uses every hardware thread
    keep_alive = []  # the names and arrays the C structs point into, alive until the call returns
    if imatrix:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()  # the last stays zero: NULL name ends it
        for entry, (name, values) in zip(entries, imatrix.items()):
            array = np.ascontiguousarray(values, dtype=np.float32)  # (in,)
            encoded = name.encode()
            keep_alive += [array, encoded]
            entry.name = encoded
            entry.data = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = array.size
        keep_alive.append(entries)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    log = logging.getLogger("llama-cpp-python")  # llama-cpp-python prints llama.cpp's log below this level
    level = log.level
    log.setLevel(logging.ERROR)  # one line per tensor otherwise
    try:
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    finally:
        log.setLevel(level)
    if code != 0:
        raise BabelpruneError(f"llama.cpp's quantizer could not write {quant} from {source.name} (it returned {code}).")


def export_quantized(loaded: LoadedModel, path: Path | str, quant: str, dtype: GgufDtype = "f32",
                     matrix: ImportanceMatrix | None = None, threads: int = 0) -> GgufExport:
    """Write `loaded` as GGUF in `dtype`, then quantize it with llama.cpp into the new file `path`."""
    path = Path(path)
    check_quant(quant)
    llama_cpp_bindings()
    if matrix is not None and quant in READS_NO_IMATRIX:
        raise BabelpruneError(f"{quant} reads no importance matrix; export it with --imatrix none.")
    refuse_existing_output(path)
    widths = quantized_widths(loaded)
    fallbacks = fallback_tensors(widths, quant)
    metadata: dict[str, object] = {
        "babelprune.quantize.type": quant,
        "babelprune.quantize.source_dtype": dtype,
        "babelprune.quantize.imatrix": matrix.kind if matrix is not None else "none",
    }
    if matrix is not None:
        metadata["babelprune.quantize.imatrix.languages"] = list(matrix.languages)
        metadata["babelprune.quantize.imatrix.chunks"] = matrix.chunks
        metadata["babelprune.quantize.imatrix.chunk_size"] = matrix.chunk_size
    if fallbacks:
        metadata["babelprune.quantize.fallback_tensors"] = fallbacks
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{dtype}.gguf", dir=path.parent)
    os.close(fd)
    source = Path(name)
    source.unlink()  # export_gguf writes only a new file
    try:
        written = export_gguf(loaded, source, dtype, metadata)
        values = None if matrix is None else {key: value for key, value in matrix.values.items() if key in widths}
        write_atomically(path, lambda file: quantize_file(source, file, quant, values, threads))
    finally:
        with contextlib.suppress(FileNotFoundError):
            source.unlink()
    types = tensor_types(path)
    return GgufExport(path, written.architecture, written.tensor_count, path.stat().st_size, dtype, written.vocab_size,
                      quant=quant, imatrix=matrix.kind if matrix is not None else "none",
                      imatrix_languages=matrix.languages if matrix is not None else (),
                      fallbacks={name: types[name] for name in fallbacks if name in types})


def tensor_types(path: Path) -> dict[str, str]:
    """GGUF name -> the type its tensor is stored in ("Q4_K", "F32"...)."""
    from gguf import GGUFReader

    return {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(str(path)).tensors}
