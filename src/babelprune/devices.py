"""Where a model runs and in which floating-point type: names in, `torch.device` / `torch.dtype` out.

`resolve_device("auto")` picks CUDA when a card is present, else Apple's
MPS, else the CPU; a device this machine lacks, or a name of no known form,
is refused in one sentence that lists the devices the machine has.
`resolve_dtype(name, device)` turns "auto" into the type that device runs
best (float32 on the CPU and MPS, bfloat16 on CUDA cards that support it,
else float16) and refuses a type the device cannot run.

Both only read what torch reports about the machine; nothing is allocated
except one probe tensor when a type's support on MPS must be tried.

`parse_size("2GB")` reads a memory size (`--activation-memory`), and
`out_of_memory(...)` turns a device running out of memory into one sentence
that names what to lower.
"""

from __future__ import annotations

import contextlib
import math
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from babelprune.choices import DEVICE_FORMS, ModelDtype
from babelprune.errors import BabelpruneError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DEVICE_FORM = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")


def available_devices() -> list[str]:
    """The devices torch can use here, as names `resolve_device` accepts: "cpu", then "cuda:0".., then "mps"."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _refusal(name: object, why: str) -> BabelpruneError:
    return BabelpruneError(f"Device {name!r} {why}; this machine has: {', '.join(available_devices())}.")


def device_form(name: object) -> str:
    """`name` as a device name ("CUDA:1 " -> "cuda:1"), refused when it has no device's form; availability is not checked.

    What an experiment file is checked against when it is read: its runs may be meant for the
    machines of a Ray cluster, not the one that reads the file.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = name.strip().lower() if isinstance(name, str) else ""
    if not _DEVICE_FORM.match(text):
        raise _refusal(name, f"is not a device name (give {DEVICE_FORMS})")
    return text


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device `name` means on this machine ("auto": CUDA, else MPS, else the CPU)."""
    text = device_form(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _refusal(name, "is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise _refusal(name, "is not available")
    if device.type == "mps" and not _mps_available():
        raise _refusal(name, "is not available")
    return device


def auto_dtype(device: torch.device) -> torch.dtype:
    """The type "auto" stands for on `device`: half precision only on CUDA, where it is fast and well supported."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_dtype(name: ModelDtype | torch.dtype, device: torch.device) -> torch.dtype:
    """The torch dtype `name` means on `device`; one sentence when the device cannot run it."""
    if isinstance(name, torch.dtype):
        dtype = name
    elif name == "auto":
        return auto_dtype(device)
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise BabelpruneError(f"Model dtype {name!r} is not one of: auto, {', '.join(DTYPES)}.")
    if dtype not in DTYPES.values():
        raise BabelpruneError(f"Model dtype {dtype} is not one of: {', '.join(DTYPES)}.")
    if not runs_on(dtype, device):
        raise BabelpruneError(f"{device} cannot run {dtype_name(dtype)} on this machine; give --dtype float32 or --dtype auto.")
    return dtype


def runs_on(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `device` computes in `dtype` (the CPU runs all three, slowly in half precision)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "mps" and dtype != torch.float32:
        try:
            torch.ones(1, dtype=dtype, device=device).matmul(torch.ones(1, dtype=dtype, device=device))
        except (RuntimeError, TypeError):
            return False
    return True


def dtype_name(dtype: torch.dtype) -> str:
    """"bfloat16" for torch.bfloat16: the name records and flags use."""
    return str(dtype).removeprefix("torch.")


def resolve(device: str | torch.device = "cpu", dtype: ModelDtype | torch.dtype = "auto") -> tuple[torch.device, torch.dtype]:
    """Both at once, the device first (the dtype's "auto" and its checks depend on it)."""
    place = resolve_device(device)
    return place, resolve_dtype(dtype, place)


def has_float64(device: torch.device) -> bool:
    """Whether `device` computes in float64: Apple's MPS does not."""
    return device.type != "mps"


def require_float64(device: torch.device, doing: str) -> None:
    """One sentence when `doing` needs float64 sums (pruning statistics, Hessians, Cholesky) on a device without them."""
    if not has_float64(device):
        raise BabelpruneError(
            f"{doing} accumulates statistics in float64, which {device.type.upper()} does not have; "
            "run it with --device cpu (the result can be evaluated on this device afterwards)."
        )


@dataclass(frozen=True)
class Placement:
    """A resolved device and dtype: where a model is loaded and trained, and in which type."""

    device: torch.device
    dtype: torch.dtype

    def is_default(self) -> bool:
        """CPU float32: what every record made before --device and --dtype existed ran in."""
        return self.device.type == "cpu" and self.dtype == torch.float32

    def record(self) -> dict[str, str]:
        """{"device": "cuda", "dtype": "bfloat16"}: the names records keep."""
        return {"device": str(self.device), "dtype": dtype_name(self.dtype)}


CPU_FLOAT32 = Placement(torch.device("cpu"), torch.float32)


def placement(device: str | torch.device = "cpu", dtype: ModelDtype | torch.dtype = "auto") -> Placement:
    """`resolve` as one value: the device and dtype these names mean on this machine."""
    return Placement(*resolve(device, dtype))


# ----- memory sizes and running out of memory -----------------------------------------

# Decimal units count in powers of 1000 (2GB = 2 * 10^9 bytes), binary ones in powers of 1024 (2GiB = 2 * 2^30);
# a bare number is bytes. The letters' case does not matter.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int, option: str = "--activation-memory") -> int:
    """Bytes `text` names: "2GB", "512MiB", "1.5 GiB", "4096" (bytes); one sentence for anything else.

    An int is taken as bytes. Zero and sizes under one byte are refused: a budget of nothing is a slip.
    """
    if isinstance(text, bool):
        raise BabelpruneError(f"{option} {text!r} is not a size; give one such as 2GB or 512MiB.")
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(text) if isinstance(text, str) else None
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise BabelpruneError(
                f"{option} {text!r} is not a size; give a number and a unit such as 2GB, 512MiB or 1.5GiB "
                "(B, KB, MB, GB, TB count in 1000s; KiB, MiB, GiB, TiB in 1024s)."
            )
        value = float(match.group(1)) * _SIZE_UNITS[unit]
        size = math.floor(value) if math.isfinite(value) else 0
    if size < 1:
        raise BabelpruneError(f"{option} {text!r} is no memory at all; give a positive size such as 2GB.")
    return size


def format_size(size: int) -> str:
    """1536 -> "1.5 KiB": bytes in the largest binary unit that keeps the number at least 1."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"


def _is_out_of_memory(error: BaseException) -> bool:
    """A CUDA or other accelerator OutOfMemoryError, MPS's and the CPU allocator's RuntimeErrors."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error) if isinstance(error, RuntimeError) else ""
    return "MPS backend out of memory" in text or "DefaultCPUAllocator: can't allocate memory" in text


@contextlib.contextmanager
def out_of_memory(doing: str, advice: Callable[[str], str]) -> Iterator[None]:
    """Inside: a device running out of memory becomes one BabelpruneError, "Out of memory on <device> while <doing>; <advice>."

    `advice(device_type)` says what to lower; `device_type` is "cpu" for the CPU's
    allocator, else the accelerator's type ("cuda", "mps"). The failed step's
    frames are cleared first, so the tensors they held are freed (and CUDA's
    cached blocks handed back) even while the sentence is being handled.
    """
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        text = str(error)
        where = "cpu" if "DefaultCPUAllocator" in text else "mps" if "MPS backend" in text else "cuda"
        traceback.clear_frames(error.__traceback__)
        if where == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
        place = "the CPU" if where == "cpu" else where
        raise BabelpruneError(f"Out of memory on {place} while {doing}; {advice(where)}.") from None


def planned_names(device: str, dtype: ModelDtype) -> tuple[str, str]:
    """The device and dtype a run planned here will run in, as names, without needing that device here.

    ("auto", "auto") becomes what this machine has ("cuda", "bfloat16"; "cpu", "float32"), so a
    run's name says what it computes in. A named device is only checked for its form: a sweep may
    be planned on a machine without the GPUs of the Ray cluster that runs it. The dtype "auto" of a
    CUDA device is what this machine's card runs best, or bfloat16 where there is no card here (every
    CUDA card of the last generations runs it; one that does not refuses the run when it starts).
    """
    text = device_form(device)
    if text == "auto":
        text = resolve_device("auto").type
    kind = torch.device(text).type
    if dtype != "auto":
        if dtype not in DTYPES:
            raise BabelpruneError(f"Model dtype {dtype!r} is not one of: auto, {', '.join(DTYPES)}.")
        return text, dtype
    if kind == "cuda":
        return text, dtype_name(auto_dtype(torch.device("cuda"))) if torch.cuda.is_available() else "bfloat16"
    return text, "float32"
