"""Refit the kept weights of a pruned linear layer to its dense outputs on the calibration inputs.

For a layer y = W x with dense weight W (out, in), a chosen mask (`pruned`,
True = zero) and calibration inputs X (in, T), each output row i is refitted
on its support S_i (the inputs it keeps):

    w'_i = argmin ||(w_i - w'_i) X||^2 + lambda ||w_i - w'_i||^2   subject to w'_ij = 0 for j not in S_i

With H = X X^T and the damped H_d = H + lambda I, lambda = damp * mean(diag H)
(SparseGPT's convention), setting the gradient on S_i to zero gives

    (H_d)_{S_i S_i} w'_{S_i} = (H_d w_i)_{S_i}.

Rows are independent. Two solvers:

* "exact": one Cholesky solve per row (float64). Costs |S_i|^3 / 3 per row;
  meant for small layers and for checking.
* "pcg": all rows at once by preconditioned conjugate gradient with the
  Jacobi preconditioner diag(H_d), warm-started from the masked dense weight
  (the mask method's own answer), as in ALPS's post-processing step. Each
  iteration is one (out, in) x (in, in) product.

The damping pulls the refit towards the dense values of the kept weights
(lambda -> infinity gives back the masked weight unchanged), and `shrink`
moves the final weight linearly back towards the masked one:
W_out = W_masked + (1 - shrink) (W_refit - W_masked). Both limit how far the
update can fit the calibration languages at the expense of others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from babelprune.errors import BabelpruneError


@dataclass(frozen=True)
class RefitReport:
    """How a layer's refit went: the calibration error before and after, relative to the dense output."""

    error_before: float  # ||(W - W_masked) X||^2 / ||W X||^2
    error_after: float  # the same with the refitted weight
    iterations: int  # PCG iterations run (0 for the exact solver)


def damped_hessian(hessian: Tensor, damp: float) -> Tensor:
    """H + damp * mean(diag H) * I in float64; an all-zero H gets damp * I."""
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1]:
        raise BabelpruneError(f"The Hessian must be a square (in, in) matrix, got shape {tuple(hessian.shape)}.")
    if not damp > 0:
        raise BabelpruneError(f"The reconstruction damping {damp} must be positive, e.g. 0.01.")
    h = hessian.detach().double()
    scale = torch.diagonal(h).mean()
    scale = scale if scale > 0 else torch.ones((), dtype=h.dtype)
    return h + damp * scale * torch.eye(h.shape[0], dtype=h.dtype)


def _check_shapes(weight: Tensor, pruned: Tensor, hessian: Tensor) -> None:
    if pruned.shape != weight.shape:
        raise BabelpruneError(f"The mask has shape {tuple(pruned.shape)} but the weight {tuple(weight.shape)}.")
    if hessian.shape != (weight.shape[1], weight.shape[1]):
        raise BabelpruneError(
            f"The Hessian has shape {tuple(hessian.shape)} but the weight has {weight.shape[1]} inputs; "
            "collect it on this layer's own inputs."
        )


def refit_exact(weight: Tensor, pruned: Tensor, damped: Tensor) -> Tensor:
    """The exact refit, one Cholesky solve per row; float64 (out, in), zero where pruned."""
    w = weight.detach().double()
    target = w @ damped  # (out, in): row i is (H_d w_i)^T, symmetric H_d
    refit = torch.zeros_like(w)
    for row in range(w.shape[0]):
        support = (~pruned[row]).nonzero().squeeze(1)
        if len(support) == 0:
            continue
        system = damped[support][:, support]  # (|S|, |S|), positive definite
        chol = torch.linalg.cholesky(system)
        refit[row, support] = torch.cholesky_solve(target[row, support].unsqueeze(1), chol).squeeze(1)
    return refit


def refit_pcg(weight: Tensor, pruned: Tensor, damped: Tensor, iterations: int = 30, tolerance: float = 1e-4) -> tuple[Tensor, int]:
    """The refit by batched Jacobi-preconditioned CG, float32 (out, in); returns it and the iterations run.

    Each row solves (H_d)_SS z = (H_d w)_S on its own support; the masked
    weight is the starting point, so zero iterations return the mask method's
    weight. Stops when every row's residual fell below `tolerance` times its
    starting residual.
    """
    keep = (~pruned).float()  # (out, in)
    h = damped.float()
    w = weight.detach().float()
    x = w * keep  # (out, in) warm start: the masked weight
    residual = ((w - x) @ h) * keep  # (out, in): (H_d w - H_d x) on each row's support
    inverse_diag = 1.0 / torch.diagonal(h)  # (in,) Jacobi preconditioner
    z = residual * inverse_diag
    direction = z.clone()
    rz = (residual * z).sum(dim=1)  # (out,)
    start_norm = residual.norm(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    done = 0
    for done in range(1, iterations + 1):
        product = (direction @ h) * keep  # (out, in): (H_d)_SS p
        curvature = (direction * product).sum(dim=1)  # (out,)
        step = torch.where(curvature > 0, rz / curvature.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(rz))
        x += step.unsqueeze(1) * direction
        residual -= step.unsqueeze(1) * product
        if bool((residual.norm(dim=1) <= tolerance * start_norm).all()):
            break
        z = residual * inverse_diag
        rz_next = (residual * z).sum(dim=1)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(rz))
        direction = z + beta.unsqueeze(1) * direction
        rz = rz_next
    return x * keep, done


def output_energy(weight: Tensor, hessian: Tensor) -> float:
    """||W X||^2 from H = X X^T alone: tr(W H W^T), one float32 product summed in float64.

    (float64 products would cost as much as the whole refit on a wide layer, for a ratio that needs no more precision.)
    """
    w = weight.detach().float()
    return float(((w @ hessian.detach().float()) * w).sum(dtype=torch.float64))


def relative_output_error(weight: Tensor, candidate: Tensor, hessian: Tensor, total: float | None = None) -> float:
    """||(W - W') X||^2 / ||W X||^2 from H = X X^T alone: tr(D H D^T) / tr(W H W^T) (`total`, when known)."""
    total = output_energy(weight, hessian) if total is None else total
    return output_energy(weight.detach().float() - candidate.detach().float(), hessian) / total if total > 0 else 0.0


def reconstruct(
    weight: Tensor,
    pruned: Tensor,
    hessian: Tensor,
    damp: float = 0.01,
    shrink: float = 0.0,
    solver: str = "pcg",
    iterations: int = 30,
) -> tuple[Tensor, RefitReport]:
    """Refit the kept weights of `weight` (out, in) on `hessian` = X X^T (in, in); zero where `pruned`.

    Returns the new weight in the input's dtype, exactly zero where pruned,
    and the report of the calibration error before and after.
    """
    _check_shapes(weight, pruned, hessian)
    if not 0.0 <= shrink <= 1.0:
        raise BabelpruneError(f"The reconstruction shrink {shrink} must lie in [0, 1] (0: full refit, 1: no refit).")
    damped = damped_hessian(hessian, damp)
    masked = weight.detach().float().masked_fill(pruned, 0.0)
    if solver == "exact":
        refit, used = refit_exact(weight, pruned, damped).float(), 0
    elif solver == "pcg":
        if iterations < 1:
            raise BabelpruneError(f"PCG needs at least one iteration, got {iterations}.")
        refit, used = refit_pcg(weight, pruned, damped, iterations)
    else:
        raise BabelpruneError(f"Unknown reconstruction solver {solver!r}; use 'pcg' or 'exact'.")
    result = (masked + (1.0 - shrink) * (refit - masked)).masked_fill(pruned, 0.0)
    total = output_energy(weight, hessian)  # shared by both errors
    report = RefitReport(error_before=relative_output_error(weight, masked, hessian, total),
                         error_after=relative_output_error(weight, result, hessian, total), iterations=used)
    return result.to(weight.dtype), report
