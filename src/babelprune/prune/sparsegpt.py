"""SparseGPT (Frantar & Alistarh 2023): prune a linear layer and repair it with OBS updates.

Maths, for a layer y = W x with W (out, in) and calibration inputs X (in, T):

* H = X X^T + damp * mean(diag(H)) * I, shape (in, in). Inputs never active
  in calibration (H_jj = 0) are "dead": H_jj is set to 1 and W[:, j] to 0.
* U = upper Cholesky factor of H^-1 (H^-1 = U^T U). Row j of U, divided by
  U_jj, is the OBS update that removing column j (after columns < j are
  fixed) spreads onto columns > j, and U_jj^2 is the [H^-1]_jj of the
  columns not yet processed. The saliency of pruning w_ij is thus
  w_ij^2 / U_jj^2.
* Columns are processed left to right. When column j is fixed, each row's
  error e_i = (w_ij - q_ij) / U_jj (q = 0 if pruned, else w) is subtracted as
  e_i * U[j, k] from every later column k. Updates to columns outside the
  current block of `block_size` columns are applied lazily, once per block,
  as one matrix product (same result, much faster).
* Mask choice. Unstructured: at the start of each block, each row prunes the
  lowest-saliency columns of the block; the per-block quota is
  floor(k * end / in) - floor(k * start / in) with k = floor(s * in), so every
  row ends with exactly k pruned weights, spread evenly over the blocks.
  N:M: at the start of each group of M columns, each row prunes the M - N
  lowest-saliency columns of the group, using the already-updated weights.

Everything is deterministic (stable sorts, no randomness). The Hessian
inverse and its Cholesky factor are computed in float64; the column sweep
runs in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from babelprune.errors import BabelpruneError
from babelprune.prune.kernels import check_nm, lowest_scores_mask, pruned_count

DEFAULT_DAMP = 0.01
DEFAULT_BLOCK_SIZE = 128
# If H + damping is still not positive definite, damping is multiplied by 10, at most this often.
_MAX_DAMP_RETRIES = 6


def inverse_hessian_factor(hessian: Tensor, damp: float = DEFAULT_DAMP) -> tuple[Tensor, Tensor]:
    """Upper Cholesky factor U of (H + damping)^-1, float64 (in, in), and the dead-input mask (in,).

    `hessian` is X X^T summed over the calibration tokens (any positive scale).
    """
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1]:
        raise BabelpruneError(f"The Hessian must be a square (in, in) matrix, got shape {tuple(hessian.shape)}.")
    h = hessian.detach().double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0  # dead inputs: any positive value keeps H invertible; their weights are zeroed
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    mean_diag = torch.diagonal(h).mean()
    for attempt in range(_MAX_DAMP_RETRIES + 1):
        damped = h + (damp * 10**attempt) * mean_diag * eye
        chol, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper, dead
    raise BabelpruneError(
        "The calibration Hessian is not positive definite even with strong damping; "
        "check the calibration inputs for NaN or infinite values."
    )


def _block_quotas(width: int, pruned_per_row: int, block_size: int) -> list[tuple[int, int, int]]:
    """(start, end, pruned-per-row in this block) for each block; quotas sum to pruned_per_row."""
    quotas = []
    for start in range(0, width, block_size):
        end = min(start + block_size, width)
        quota = (pruned_per_row * end) // width - (pruned_per_row * start) // width
        quotas.append((start, end, quota))
    return quotas


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run the column sweep on one thread, then restore the thread count.

    Each step of the sweep is a tiny operation; splitting it across threads
    costs more in synchronisation than it gains, and on a busy machine it was
    measured 100x slower than one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sweep_block(block_t: Tensor, factor: Tensor, pruned_t: Tensor, n: int, m: int) -> Tensor:
    """Fix the columns of one block in place, left to right; return the scaled errors (width, out).

    Works on TRANSPOSED tensors so that one input column is one contiguous row
    (strided column updates are many times slower on CPU):
    block_t: (width, out) weights, updated in place; factor: (width, width) block of U;
    pruned_t: (width, out) mask, filled in place per group when N:M (m > 0).
    """
    errors_t = torch.zeros_like(block_t)
    diag = torch.diagonal(factor)
    for col in range(block_t.shape[0]):
        if m > 0 and col % m == 0:
            group = slice(col, col + m)
            saliency = block_t[group] ** 2 / diag[group].unsqueeze(1) ** 2  # (M, out)
            pruned_t[group] = lowest_scores_mask(saliency.T, m - n).T
        weights = block_t[col]  # (out,)
        kept = weights.masked_fill(pruned_t[col], 0.0)
        err = (weights - kept) / diag[col]  # (out,)
        # OBS update of this and the later columns of the block; column `col` becomes `kept`.
        block_t[col:].addr_(factor[col, col:], err, alpha=-1.0)
        block_t[col] = kept  # exact zeros where pruned (removes rounding residue)
        errors_t[col] = err
    return errors_t


def sparsegpt_prune(
    weight: Tensor,
    hessian: Tensor,
    sparsity: float = 0.5,
    n: int = 0,
    m: int = 0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    damp: float = DEFAULT_DAMP,
) -> tuple[Tensor, Tensor]:
    """Prune `weight` (out, in) with SparseGPT; return (updated weight, `pruned` mask).

    hessian: (in, in) X X^T accumulated over the calibration tokens.
    sparsity: unstructured target (ignored when n and m are given).
    n, m: N:M semi-structured pattern, e.g. 2, 4 (both 0 means unstructured).
    The returned weight has the input's dtype and is exactly zero where
    `pruned` is True (and also in the columns of dead inputs).
    """
    out_features, in_features = weight.shape
    if hessian.shape != (in_features, in_features):
        raise BabelpruneError(
            f"The Hessian has shape {tuple(hessian.shape)} but the weight has {in_features} inputs; "
            "collect it on this layer's own inputs."
        )
    if block_size < 1:
        raise BabelpruneError(f"SparseGPT block size must be positive, got {block_size}.")
    structured = n > 0 or m > 0
    if structured:
        check_nm(n, m, in_features)
        if block_size % m != 0:
            raise BabelpruneError(f"SparseGPT block size {block_size} must be a multiple of M={m}.")
        per_row = 0
    else:
        per_row = pruned_count(in_features, sparsity)

    factor64, dead = inverse_hessian_factor(hessian, damp)
    factor = factor64.float()
    work_t = weight.detach().float().T.contiguous()  # (in, out): one input column per row
    work_t[dead] = 0.0
    pruned_t = torch.zeros(in_features, out_features, dtype=torch.bool, device=weight.device)

    for start, end, quota in _block_quotas(in_features, per_row, block_size):
        block_t = work_t[start:end]  # (width, out) view: updated in place
        block_factor = factor[start:end, start:end].contiguous()
        block_pruned_t = pruned_t[start:end]  # view: filled in place
        if not structured:
            saliency = block_t**2 / torch.diagonal(block_factor).unsqueeze(1) ** 2  # (width, out)
            block_pruned_t.copy_(lowest_scores_mask(saliency.T, quota).T)
        with _single_thread():
            errors_t = _sweep_block(block_t, block_factor, block_pruned_t, n if structured else 0, m if structured else 0)
        # Lazy update: the block's errors spread onto every later column at once.
        work_t[end:] -= factor[start:end, end:].T @ errors_t

    return work_t.T.to(weight.dtype).contiguous(), pruned_t.T.contiguous()
