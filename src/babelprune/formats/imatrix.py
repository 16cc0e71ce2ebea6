"""Importance matrices for llama.cpp's quantizer: per-column mean squared inputs of every weight matrix.

llama.cpp's quantizer chooses each block's scales to minimise the error
weighted by how large the inputs of each column are: for a weight W (out, in)
it reads one value per input column j, the mean over calibration tokens of
x_j^2 (llama.cpp's imatrix tool sums x_j^2 into `in_sum2` and counts the
tokens; the quantizer divides). Only the relative sizes within a tensor
matter.

`ImportanceMatrix` holds those values by GGUF tensor name. It reaches the
quantizer in memory (`babelprune.formats.gguf_quant`) and can also be saved
as the GGUF imatrix file that llama.cpp's `llama-quantize --imatrix` loads
(`write_imatrix`): general.type "imatrix", the keys `imatrix.datasets`,
`imatrix.chunk_count` and `imatrix.chunk_size`, and per weight two float32
tensors, `<name>.in_sum2` with ne = (in, 1) and `<name>.counts` with
ne = (1, 1); a loader divides the first by the second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from babelprune.errors import BabelpruneError

IN_SUM2, COUNTS = ".in_sum2", ".counts"


@dataclass(frozen=True)
class ImportanceMatrix:
    """Per-column importance of every weight matrix, by GGUF tensor name."""

    values: dict[str, np.ndarray]  # "blk.0.attn_q.weight" -> (in,) float32: mean of x_j^2 over the tokens
    kind: str  # "balanced" (languages weighted equally) or the one language it comes from
    languages: tuple[str, ...]  # the calibration languages behind it
    tokens: int  # calibration tokens behind it, all languages together
    chunk_size: int  # tokens per calibration window
    chunks: int  # calibration windows
    datasets: tuple[str, ...] = field(default=())  # what the windows came from, as imatrix.datasets states it

    def describe(self) -> str:
        if self.kind == "balanced":
            return f"balanced over {', '.join(self.languages)}"
        return f"from {self.kind} alone"


def write_imatrix(matrix: ImportanceMatrix, path: Path | str) -> None:
    """Save `matrix` as llama.cpp's GGUF imatrix file (what `llama-quantize --imatrix FILE` reads)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="")  # no architecture: an imatrix file describes no model
    try:
        writer.add_type("imatrix")
        writer.add_array("imatrix.datasets", list(matrix.datasets) or [matrix.describe()])
        writer.add_uint32("imatrix.chunk_count", matrix.chunks)
        writer.add_uint32("imatrix.chunk_size", matrix.chunk_size)
        # in_sum2 / counts must give back the mean: store mean * tokens as the sum and the token count.
        count = float(max(matrix.tokens, 1))
        for name, values in matrix.values.items():
            means = np.asarray(values, dtype=np.float32).reshape(1, -1)  # numpy (1, in) is ggml's ne = (in, 1)
            writer.add_tensor(name + IN_SUM2, (means.astype(np.float64) * count).astype(np.float32))
            writer.add_tensor(name + COUNTS, np.full((1, 1), count, dtype=np.float32))  # ne = (1, 1): one matrix
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def read_imatrix(path: Path | str) -> dict[str, np.ndarray]:
    """A GGUF imatrix file's values as llama.cpp's loader computes them: name -> in_sum2 / counts (in * matrices,)."""
    from gguf import GGUFReader

    tensors = {tensor.name: np.array(tensor.data, dtype=np.float32) for tensor in GGUFReader(str(path)).tensors}
    values = {}
    for key, sums in tensors.items():
        if not key.endswith(IN_SUM2):
            continue
        name = key[: -len(IN_SUM2)]
        counts = tensors.get(name + COUNTS)
        if counts is None:
            raise BabelpruneError(f"{path} has {key} but no {name + COUNTS}; an imatrix file pairs every sum with its counts.")
        sums = sums.reshape(counts.size, -1)  # (matrices, in)
        counts = counts.reshape(-1, 1)  # (matrices, 1)
        # A matrix that saw no tokens reads as all ones, as llama.cpp's loader treats it.
        values[name] = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), 1.0).reshape(-1).astype(np.float32)
    return values
