"""Write a safetensors file one tensor at a time, so that the tensors never need to be in memory together.

safetensors' own writer takes every tensor at once. Here each tensor's bytes
are appended to a data file beside the target as it comes; `close` writes
the target (8-byte header length, JSON header, the data) and removes the
data file. The layout is the format's own, so any safetensors reader opens it.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import torch

# torch dtype -> safetensors dtype name
_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
_COPY_CHUNK = 16 << 20  # bytes per read when the data is copied behind the header


class SafetensorsStream:
    """A safetensors file at `path`, written tensor by tensor (`add`), complete once `close` returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data_path = self.path.with_name(self.path.name + ".data")
        self._data = open(self._data_path, "wb")  # noqa: SIM115 - closed by close() or abort()
        self._entries: dict[str, dict] = {}
        self._offset = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self._entries:
            raise ValueError(f"tensor {key!r} was already written")
        if tensor.dtype not in _DTYPE_NAMES:
            raise ValueError(f"safetensors cannot store {tensor.dtype} ({key})")
        tensor = tensor.detach().contiguous()
        size = tensor.numel() * tensor.element_size()
        if size:
            self._data.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
        self._entries[key] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                              "data_offsets": [self._offset, self._offset + size]}
        self._offset += size

    def close(self, metadata: dict[str, str]) -> None:
        """Write the file: header (with `metadata`), then the data in the order it was added."""
        self._data.close()
        header = json.dumps({"__metadata__": metadata, **self._entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned
        with open(self.path, "wb") as out, open(self._data_path, "rb") as data:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            shutil.copyfileobj(data, out, _COPY_CHUNK)
        self._data_path.unlink()

    def abort(self) -> None:
        """Close the data file after a failure (the caller's temporary folder goes with it)."""
        self._data.close()
