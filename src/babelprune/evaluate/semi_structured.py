"""2:4 block linears as PyTorch semi-structured sparse weights, for `eval` and `bench-speed --sparse-kernels 2:4`.

A 2:4 weight keeps at most 2 non-zeros in every group of 4 consecutive inputs
of a row. On a CUDA card, `torch.sparse.to_sparse_semi_structured` stores such
a weight as its kept half plus a small index (cuSPARSELt, or CUTLASS where
cuSPARSELt is missing or `SparseSemiStructuredTensor._FORCE_CUTLASS` is set),
and `F.linear` then runs a sparse tensor-core product: the same numbers as the
dense product, up to the order of float16/bfloat16 sums, in less time.

    check_sparse_kernels("2:4", device, dtype)      # before loading: CUDA, half precision, a torch that has it
    with semi_structured_linears(model) as record:  # every eligible block linear converted, restored on exit
        ...                                         # run the model; `record` says what was converted and why not

A block linear is converted when `convertible` says so: an `nn.Linear` (GPT-2's
Conv1D stores its weight (in, out), the wrong side for these kernels), in
float16 or bfloat16, whose (out, in) shape is a multiple of the kernels'
minimum tile, and whose weight `is_two_four`. The others stay dense, and the
record names each with its reason: nothing falls back silently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from babelprune.choices import SparseKernels
from babelprune.devices import dtype_name
from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, named_linears
from babelprune.models.base import LoadedModel
from babelprune.records.kernels import SparseKernelRecord

SPARSE_KERNELS: tuple[str, ...] = ("none", "2:4")
HALF_DTYPES = (torch.float16, torch.bfloat16)

# torch's documented minimum tile for float16/bfloat16 weights, (rows, columns) of the (out, in) matrix: both
# dimensions must be a positive multiple of it. Used when torch's own table cannot be read.
_DOCUMENTED_TILE = {"cutlass": (32, 64), "cusparselt": (16, 16)}

NOT_LINEAR = "not an nn.Linear (a Conv1D stores its weight (in, out))"
ALREADY = "already semi-structured"
NOT_TWO_FOUR = "not 2:4 along the input"


def semi_structured_function() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torch.sparse.to_sparse_semi_structured, looked up when called; None in a torch build without it."""
    sparse = getattr(torch, "sparse", None)
    return getattr(sparse, "to_sparse_semi_structured", None)


def check_sparse_kernels(kernels: SparseKernels, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, in one sentence, sparse kernels this device, dtype or torch build cannot run ("none" always passes)."""
    if kernels == "none":
        return
    if kernels not in SPARSE_KERNELS:
        raise BabelpruneError(f"--sparse-kernels {kernels!r} is not one of: {', '.join(SPARSE_KERNELS)}.")
    if device.type != "cuda":
        raise BabelpruneError(f"--sparse-kernels {kernels} runs PyTorch's semi-structured sparse kernels, which need CUDA, "
                              f"not {device}; give --device cuda, or --sparse-kernels none.")
    if dtype not in HALF_DTYPES:
        raise BabelpruneError(f"--sparse-kernels {kernels} needs float16 or bfloat16 weights (the semi-structured kernels "
                              f"take no {dtype_name(dtype)}); give --dtype float16, --dtype bfloat16 or --dtype auto.")
    if semi_structured_function() is None:
        raise BabelpruneError(f"This torch build ({torch.__version__}) has no torch.sparse.to_sparse_semi_structured; "
                              "install torch 2.1 or newer with CUDA, or give --sparse-kernels none.")


def check_fixed_weights(loaded: LoadedModel, kernels: SparseKernels) -> None:
    """A model whose weights change per language (a mask bank) cannot keep them in a compressed, fixed form."""
    if kernels != "none" and loaded.mask_bank:
        raise BabelpruneError(f"--sparse-kernels {kernels} needs fixed weights, but {loaded.spec} applies a different mask "
                              "per language; evaluate it with --sparse-kernels none, or save one language's model.")


def is_two_four(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive entries along the last dimension holds at least 2 zeros.

    `weight` is an nn.Linear's (out, in) matrix, so a group is 4 consecutive inputs of one output
    row: the pattern the kernels compress. A matrix that is 2:4 down its columns only (its transpose
    is 2:4) is not; neither is one whose inputs are not a multiple of 4.
    """
    if weight.dim() != 2 or weight.numel() == 0 or weight.shape[1] % 4:
        return False
    groups = weight.reshape(weight.shape[0], weight.shape[1] // 4, 4)  # (out, in/4, 4)
    return bool(((groups != 0).sum(dim=-1) <= 2).all())


def backend() -> str:
    """The semi-structured class to_sparse_semi_structured makes here: "cusparselt", else "cutlass"."""
    base = getattr(torch.sparse, "SparseSemiStructuredTensor", None)
    if getattr(base, "_FORCE_CUTLASS", False) or not _cusparselt_available():
        return "cutlass"
    return "cusparselt"


def _cusparselt_available() -> bool:
    module = getattr(torch.backends, "cusparselt", None)
    return bool(module is not None and module.is_available())


def min_tile(dtype: torch.dtype) -> tuple[int, int]:
    """(rows, columns) that both dimensions of a weight must be positive multiples of, for the backend in use."""
    name = backend()
    cls = getattr(torch.sparse, "SparseSemiStructuredTensorCUTLASS" if name == "cutlass"
                  else "SparseSemiStructuredTensorCUSPARSELT", None)
    config = getattr(cls, "_DTYPE_SHAPE_CONSTRAINTS", {}).get(dtype)
    if config is None:
        return _DOCUMENTED_TILE[name]
    return int(config.sparse_min_rows), int(config.sparse_min_cols)


def _is_semi_structured(weight: torch.Tensor) -> bool:
    base = getattr(torch.sparse, "SparseSemiStructuredTensor", None)
    return base is not None and isinstance(weight, base)


def convertible(linear: nn.Module) -> tuple[bool, str]:
    """(True, "") when the kernels take this linear's weight as it is, else (False, why it stays dense).

    Checked from the weight alone (the device is `check_sparse_kernels`'s): the module type, the
    dtype, the (out, in) shape against the backend's tile, then the 2:4 pattern itself.
    """
    if not isinstance(linear, nn.Linear):
        return False, NOT_LINEAR
    weight = linear.weight
    if _is_semi_structured(weight):
        return False, ALREADY
    if weight.dtype not in HALF_DTYPES:
        return False, f"{dtype_name(weight.dtype)} weights (the kernels take float16 or bfloat16)"
    rows, cols = min_tile(weight.dtype)
    out_features, in_features = weight.shape
    if out_features < rows or out_features % rows or in_features < cols or in_features % cols:
        return False, f"shape not a multiple of {rows} x {cols} (out x in)"
    if not is_two_four(weight.detach()):
        return False, NOT_TWO_FOUR
    return True, ""


@contextlib.contextmanager
def _cutlass_without_cusparselt() -> Iterator[None]:
    """Inside, to_sparse_semi_structured makes CUTLASS tensors where cuSPARSELt is missing (it would fail otherwise)."""
    base = getattr(torch.sparse, "SparseSemiStructuredTensor", None)
    if base is None or _cusparselt_available() or getattr(base, "_FORCE_CUTLASS", False):
        yield
        return
    base._FORCE_CUTLASS = True
    try:
        yield
    finally:
        base._FORCE_CUTLASS = False


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the linear's input (..., in) as a contiguous tensor."""
    return (args[0].contiguous(), *args[1:])


@contextlib.contextmanager
def semi_structured_linears(model: nn.Module, kernels: SparseKernels = "2:4") -> Iterator[SparseKernelRecord]:
    """Inside, every convertible block linear of `model` holds a semi-structured weight; dense again on exit.

    Yields the record of what was converted and what stayed dense, and why. The model must be on a
    CUDA device (`check_sparse_kernels`); each dense weight is freed once converted, and rebuilt
    from the compressed one on exit (the compression keeps every non-zero, so exactly).
    """
    convert = semi_structured_function()
    if convert is None:
        raise BabelpruneError(f"This torch build ({torch.__version__}) has no torch.sparse.to_sparse_semi_structured; "
                              "install torch 2.1 or newer with CUDA, or give --sparse-kernels none.")
    linears = named_linears(model, adapter_for(model))
    left_dense: dict[str, list[str]] = {}
    converted: dict[str, bool] = {}  # name -> whether its dense weight required grad, to restore it alike
    hooks = []
    used = None
    try:
        with torch.no_grad(), _cutlass_without_cusparselt():
            for name, linear in linears.items():
                ok, why = convertible(linear)
                if not ok:
                    left_dense.setdefault(why, []).append(name)
                    continue
                dense = linear.weight
                sparse = convert(dense.detach().contiguous())  # (out, in), compressed to out x in/2 values + metadata
                converted[name] = dense.requires_grad
                # A tensor subclass stays itself inside nn.Parameter; F.linear then dispatches to the sparse product.
                linear.weight = nn.Parameter(sparse, requires_grad=False)
                # torch's sparse linear flattens the input with .view(-1, in): an input that is a strided view
                # (a permuted attention output) would fail there, so it is made contiguous first (free when it is).
                hooks.append(linear.register_forward_pre_hook(_contiguous_input))
                used = used or getattr(type(sparse), "BACKEND", None)
                del dense
        yield SparseKernelRecord(kernels=kernels, backend=used, total=len(linears), converted=len(converted),
                                 left_dense=left_dense)
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for name, requires_grad in converted.items():
                linear = linears[name]
                linear.weight = nn.Parameter(linear.weight.to_dense().contiguous(), requires_grad=requires_grad)


@contextlib.contextmanager
def converted_models(models: list[LoadedModel], kernels: SparseKernels) -> Iterator[list[SparseKernelRecord | None]]:
    """`semi_structured_linears` over several models at once; one record each (None for each with kernels "none")."""
    if kernels == "none":
        yield [None] * len(models)
        return
    for loaded in models:
        check_sparse_kernels(kernels, loaded.device, loaded.dtype)
        check_fixed_weights(loaded, kernels)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(semi_structured_linears(loaded.model, kernels)) for loaded in models]
