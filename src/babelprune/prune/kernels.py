"""Pruning scores and masks: magnitude, Wanda, RIA, unstructured and N:M.

M-Wanda's scores build on Wanda's and RIA's here; they live in `babelprune.prune.mwanda`.

Conventions used throughout `babelprune.prune`:

* A linear layer computes ``y = W x`` with ``W`` of shape ``(out, in)``.
* A mask is always a boolean tensor named ``pruned`` with the shape of ``W``:
  ``True`` means "this weight is set to zero". Its complement is ``keep``.
* Scores are "importance": the LOWEST scores are pruned.
* Per-row unstructured pruning removes exactly ``floor(s * in)`` weights from
  every row (the rule of the Wanda reference implementation). A tiny epsilon
  guards against ``0.3 * 10 == 3.0000000000000004``-style float noise.
* Ties are broken deterministically by a stable sort: among equal scores the
  weight with the lower index is pruned first.

All functions are pure: tensors in, tensors out; inputs are never modified.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from babelprune.choices import check_sparsity  # defined at the bottom floor; importable from here as before
from babelprune.errors import BabelpruneError

# Guards floor(s * n) against float noise such as 0.7 * 10 = 6.9999999.
_FLOOR_EPS = 1e-9


# --------------------------------------------------------------------------
# Validation and counting
# --------------------------------------------------------------------------


def check_nm(n: int, m: int, width: int | None = None) -> None:
    """Raise BabelpruneError unless N:M is a valid pattern for an input width of `width`."""
    if n < 1:
        raise BabelpruneError(f"N:M pattern {n}:{m} keeps fewer than one weight per group; use N >= 1, e.g. 2:4.")
    if n >= m:
        raise BabelpruneError(f"N:M pattern {n}:{m} prunes nothing because N >= M; use N < M, e.g. 2:4.")
    if width is not None and width % m != 0:
        raise BabelpruneError(
            f"N:M pattern {n}:{m} needs an input width divisible by {m}, but the layer has {width} inputs; "
            "choose another M or use unstructured sparsity."
        )


def pruned_count(width: int, sparsity: float) -> int:
    """How many of `width` weights are pruned at `sparsity`: floor(sparsity * width)."""
    check_sparsity(sparsity)
    return int(math.floor(sparsity * width + _FLOOR_EPS))


# --------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------


def magnitude_scores(weight: Tensor) -> Tensor:
    """|W| as float32, shape (out, in)."""
    values = weight.detach().float()
    # A weight of another dtype was just copied into float32: its copy can take the absolute value in place.
    return values.abs_() if values.dtype != weight.dtype else values.abs()


def wanda_scores(weight: Tensor, feature_weight: Tensor) -> Tensor:
    """Wanda score S_ij = |W_ij| * f_j, shape (out, in).

    `feature_weight` (in,) is Wanda's input norm ||X_j||_2 over the
    calibration tokens (or M-Wanda's replacement for it, see
    `mwanda.mwanda_feature_weight`). Computed in float32.
    """
    _check_feature_weight(weight, feature_weight)
    # |W| is a fresh tensor: scaling it in place saves allocating and filling a second (out, in) one.
    return magnitude_scores(weight).mul_(feature_weight.detach().float().unsqueeze(0))


def _check_feature_weight(weight: Tensor, feature_weight: Tensor) -> None:
    if feature_weight.ndim != 1 or feature_weight.shape[0] != weight.shape[1]:
        raise BabelpruneError(
            f"Input statistics have shape {tuple(feature_weight.shape)} but the weight has "
            f"{weight.shape[1]} inputs; collect statistics on this layer's own inputs."
        )


# RIA's exponent on the input norm (Zhang et al. 2024 use a = 0.5).
RIA_EXPONENT = 0.5


def relative_importance(weight: Tensor) -> Tensor:
    """RIA's relative importance RI_ij = |W_ij| / sum_k |W_ik| + |W_ij| / sum_k |W_kj|, shape (out, in).

    The first term is the weight's share of its output row, the second its
    share of its input column, so a weight that matters to either its output
    or its input scores high even when its magnitude is small overall.
    An all-zero row or column contributes 0 (its weights are all zero).
    """
    magnitude = magnitude_scores(weight)  # (out, in)
    row_sums = magnitude.sum(dim=1, keepdim=True)  # (out, 1)
    column_sums = magnitude.sum(dim=0, keepdim=True)  # (1, in)
    tiny = torch.finfo(magnitude.dtype).tiny  # 0 / tiny = 0 where a whole row or column is zero
    return magnitude / row_sums.clamp_min(tiny) + magnitude / column_sums.clamp_min(tiny)


def ria_scores(weight: Tensor, feature_weight: Tensor, exponent: float = RIA_EXPONENT) -> Tensor:
    """RIA score S_ij = RI_ij * f_j ** a, shape (out, in) (Zhang et al. 2024).

    `feature_weight` (in,) is the input norm ||X_j||_2 (or M-Wanda's f_j);
    `exponent` is a. Computed in float32.
    """
    _check_feature_weight(weight, feature_weight)
    if not math.isfinite(exponent) or exponent < 0:
        raise BabelpruneError(f"The RIA exponent a={exponent} must be a non-negative number, e.g. 0.5.")
    return relative_importance(weight) * feature_weight.detach().float().pow(exponent).unsqueeze(0)


# --------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------


# Below this many entries a selection is too quick to be worth splitting across threads.
_SPLIT_SELECTION_AT = 1 << 18


def kth_smallest(scores: Tensor, k: int) -> Tensor:
    """The k-th smallest value (1-based) along the last dim, shape (..., 1).

    On the CPU, float32 and float64 scores go through NumPy's introselect
    (np.partition), which finds the same value two to three times faster
    than torch.kthvalue, with the rows split across torch's thread count
    (NumPy releases the GIL while it selects). Pruning calls this once per
    linear layer, so at a few thousand calibration tokens it weighs as much
    as a good part of the forward pass (benchmarks/scale.py).
    """
    if scores.device.type != "cpu" or scores.dtype not in (torch.float32, torch.float64):
        return torch.kthvalue(scores, k, dim=-1, keepdim=True).values
    width = scores.shape[-1]
    rows = scores.detach().reshape(-1, width).numpy()  # (R, width), read only: np.partition sorts a copy
    kth = np.empty((rows.shape[0], 1), dtype=rows.dtype)  # (R, 1)

    def select(start: int, end: int) -> None:
        # After partitioning, entry k-1 of each row is the value a full sort would put there.
        kth[start:end] = np.partition(rows[start:end], k - 1, axis=-1)[:, k - 1 : k]

    threads = min(torch.get_num_threads(), rows.shape[0], max(1, rows.size // _SPLIT_SELECTION_AT))
    if threads <= 1:
        select(0, rows.shape[0])
    else:
        edges = [round(i * rows.shape[0] / threads) for i in range(threads + 1)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(select, edges[:-1], edges[1:]))  # list(): a thread's error raises here
    return torch.from_numpy(kth).reshape(*scores.shape[:-1], 1)


def lowest_scores_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k lowest scores along the last dim (stable: lower index first on ties).

    Wide rows use the k-th smallest value as a threshold (about 3x faster than
    a full sort); ties at the threshold are then taken in index order, which
    gives exactly the mask a stable sort would.
    """
    width = scores.shape[-1]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= width:
        return torch.ones_like(scores, dtype=torch.bool)
    if width <= 64:  # N:M groups and tiny rows: a sort is cheap
        pruned = torch.zeros_like(scores, dtype=torch.bool)
        pruned.scatter_(-1, torch.argsort(scores, dim=-1, stable=True)[..., :k], True)
        return pruned
    threshold = kth_smallest(scores, k)  # (..., 1)
    at_most = scores <= threshold
    # Every row holds at least k entries <= its k-th smallest value, so k per row on average means exactly k in
    # each: no row has a tie across its cut, and this is the stable sort's mask (a NaN threshold breaks the count).
    rows = scores.numel() // width
    if count_true(at_most) == k * rows and not bool(threshold.isnan().any()):
        return at_most
    # Only the rows with more (a tie across the cut) or fewer (a NaN threshold) than k are redone: the entries
    # below the cut, then as many tied ones as are missing, in index order. In wide float32 rows a tie at the
    # cut is rare but not negligible (a few rows per large layer), so the other rows keep their mask.
    at_most = at_most.contiguous()
    flat = at_most.view(rows, width)  # (R, width) view: rows written here are at_most's
    redo = (flat.sum(dim=-1) != k).nonzero().squeeze(1)  # (r,)
    part, cut = scores.reshape(rows, width)[redo], threshold.reshape(rows, 1)[redo]  # (r, width), (r, 1)
    pruned = part < cut
    ties = part == cut
    missing = k - pruned.sum(dim=-1, keepdim=True)  # how many tied entries must go, per row
    flat[redo] = pruned | (ties & (ties.cumsum(dim=-1) <= missing))
    return at_most


def unstructured_mask(scores: Tensor, sparsity: float, per_row: bool = True) -> Tensor:
    """`pruned` mask removing the lowest-scoring fraction `sparsity` of weights.

    per_row=True (Wanda's rule, and the default): exactly floor(s * in) weights
    pruned in every output row. per_row=False: floor(s * out * in) weights
    pruned over the whole layer (classic layer-wise magnitude pruning).
    """
    if scores.ndim != 2:
        raise BabelpruneError(f"Scores must be a 2-D (out, in) matrix, got shape {tuple(scores.shape)}.")
    if per_row:
        return lowest_scores_mask(scores, pruned_count(scores.shape[1], sparsity))
    flat = lowest_scores_mask(scores.reshape(-1), pruned_count(scores.numel(), sparsity))
    return flat.reshape(scores.shape)


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """`pruned` mask keeping the N highest scores in each group of M consecutive inputs of a row."""
    out_features, in_features = scores.shape
    check_nm(n, m, in_features)
    groups = scores.reshape(out_features, in_features // m, m)  # (out, in/M, M)
    return lowest_scores_mask(groups, m - n).reshape(out_features, in_features)


def apply_mask(weight: Tensor, pruned: Tensor) -> Tensor:
    """A copy of `weight` with the pruned entries set to zero."""
    return weight.masked_fill(pruned, 0)


def count_true(mask: Tensor) -> int:
    """How many entries of a boolean mask are True (NumPy on the CPU: about ten times faster than torch here)."""
    if mask.device.type == "cpu":
        return int(np.count_nonzero(mask.numpy()))
    return int(torch.count_nonzero(mask))


# Integer types as wide as each float type: the bits of a weight, to be masked without touching its value.
_SAME_WIDTH_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}


def zero_pruned_(weight: Tensor, pruned: Tensor) -> Tensor:
    """`weight.masked_fill_(pruned, 0)`: the pruned entries become +0.0 whatever they held, the others keep their bits.

    On the CPU this is a bitwise AND of the weight's bits with 0 (pruned) or
    all ones (kept), in NumPy: torch's boolean-mask fill there is about five
    times slower, and one-shot pruning runs it over every weight of the model.
    """
    bits = _SAME_WIDTH_INT.get(weight.dtype)
    plain = pruned.dtype == torch.bool and pruned.shape == weight.shape
    if weight.device.type != "cpu" or pruned.device.type != "cpu" or bits is None or not plain:
        return weight.masked_fill_(pruned, 0)
    words = weight.detach().view(bits).numpy()  # the weight's own storage, read as integers of its width
    keep_bits = pruned.numpy().view(np.int8) - np.int8(1)  # (out, in): 0 where pruned, -1 (every bit set) where kept
    np.bitwise_and(words, keep_bits, out=words)
    return weight
