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
    h = hessian.detach().double()
    return h + _damping(h, damp) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)


def _damping(hessian: Tensor, damp: float) -> float:
    """lambda = damp * mean(diag H) (damp alone when the diagonal is all zero), after checking both."""
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1]:
        raise BabelpruneError(f"The Hessian must be a square (in, in) matrix, got shape {tuple(hessian.shape)}.")
    if not damp > 0:
        raise BabelpruneError(f"The reconstruction damping {damp} must be positive, e.g. 0.01.")
    scale = float(torch.diagonal(hessian).double().mean())
    return damp * (scale if scale > 0 else 1.0)


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


def refit_pcg(
    weight: Tensor, pruned: Tensor, damped: Tensor, iterations: int = 30, tolerance: float = 1e-4, gradient: Tensor | None = None,
) -> tuple[Tensor, int, Tensor]:
    """The refit by batched Jacobi-preconditioned CG, float32 (out, in).

    Each row solves (H_d)_SS z = (H_d w)_S on its own support; the masked
    weight is the starting point, so zero iterations return the mask method's
    weight. Stops when every row's residual fell below `tolerance` times its
    starting residual.

    Besides the refit and the iterations run, returns G = (W - W_refit) H_d
    (out, in) on every input, not only the kept ones: the residual is G's kept
    part, and G gives the output errors of the report without another product.
    `gradient`, when given, is G at the start, (W - W_masked) H_d; it is updated in place.
    """
    keep = (~pruned).float()  # (out, in)
    h = damped.float()
    x = weight.detach().float() * keep  # (out, in) warm start: the masked weight
    g = (weight.detach().float() - x) @ h if gradient is None else gradient  # (out, in) H_d (w - x), every input
    residual = g * keep  # (out, in): on each row's support
    inverse_diag = 1.0 / torch.diagonal(h)  # (in,) Jacobi preconditioner
    z = residual * inverse_diag
    direction = z.clone()
    rz = _row_dot(residual, z)  # (out,)
    tiny = torch.finfo(torch.float32).tiny
    start_norm = residual.norm(dim=1).clamp_min(tiny)
    done = 0
    for done in range(1, iterations + 1):
        product = direction @ h  # (out, in): H_d p on every input; p lies on the support
        curvature = _row_dot(direction, product)  # (out,)
        step = torch.where(curvature > 0, rz / curvature.clamp_min(tiny), torch.zeros_like(rz)).unsqueeze(1)
        x.add_(step * direction)
        g.sub_(step * product)
        torch.mul(g, keep, out=residual)
        if bool((residual.norm(dim=1) <= tolerance * start_norm).all()):
            break
        torch.mul(residual, inverse_diag, out=z)
        rz_next = _row_dot(residual, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(tiny), torch.zeros_like(rz)).unsqueeze(1)
        direction.mul_(beta).add_(z)
        rz = rz_next
    return x * keep, done, g


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """(rows,): the dot product of each row of a with the same row of b."""
    return torch.linalg.vecdot(a, b, dim=1)


def output_energy(weight: Tensor, hessian: Tensor) -> float:
    """||W X||^2 from H = X X^T alone: tr(W H W^T), one float32 product summed in float64.

    (float64 products would cost as much as the whole refit on a wide layer, for a ratio that needs no more precision.)
    """
    w = weight.detach().float()
    return float(((w @ hessian.detach().float()) * w).sum(dtype=torch.float64))


def relative_output_error(weight: Tensor, candidate: Tensor, hessian: Tensor) -> float:
    """||(W - W') X||^2 / ||W X||^2 from H = X X^T alone: tr(D H D^T) / tr(W H W^T).

    The direct definition; `reconstruct` reads the same ratio off its solver's running gradient instead.
    """
    total = output_energy(weight, hessian)
    return output_energy(weight.detach().float() - candidate.detach().float(), hessian) / total if total > 0 else 0.0


@dataclass(frozen=True)
class RefitSystem:
    """The damped Hessian of one layer input in float32, shared by every linear that reads that input.

    q, k and v (and gate and up) read one tensor: the float64 damping and the
    float32 copy are made once for all of them.
    """

    damped: Tensor  # (in, in) float32: H + lam I
    lam: float  # the damping added to the diagonal

    @classmethod
    def of(cls, hessian: Tensor, damp: float) -> RefitSystem:
        lam = _damping(hessian, damp)
        damped = hessian.detach().float() + lam * torch.eye(hessian.shape[0], device=hessian.device)
        return cls(damped=damped, lam=lam)

    def energy(self, difference: Tensor, gradient: Tensor) -> float:
        """d^T H d summed over rows, from G = d H_d: sum(d * G) - lam ||d||^2 (float64 sums)."""
        return float(_row_dot(difference, gradient).sum(dtype=torch.float64)
                     - self.lam * difference.square().sum(dtype=torch.float64))


def reconstruct(
    weight: Tensor,
    pruned: Tensor,
    hessian: Tensor | None,
    damp: float = 0.01,
    shrink: float = 0.0,
    solver: str = "pcg",
    iterations: int = 30,
    system: RefitSystem | None = None,
) -> tuple[Tensor, RefitReport]:
    """Refit the kept weights of `weight` (out, in) on `hessian` = X X^T (in, in); zero where `pruned`.

    `system`, when given, is `RefitSystem.of(hessian, damp)` made beforehand
    (and `hessian` may then be None). Returns the new weight in the input's
    dtype, exactly zero where pruned, and the report of the calibration error
    before and after.
    """
    if not 0.0 <= shrink <= 1.0:
        raise BabelpruneError(f"The reconstruction shrink {shrink} must lie in [0, 1] (0: full refit, 1: no refit).")
    if solver not in ("pcg", "exact"):
        raise BabelpruneError(f"Unknown reconstruction solver {solver!r}; use 'pcg' or 'exact'.")
    if solver == "pcg" and iterations < 1:
        raise BabelpruneError(f"PCG needs at least one iteration, got {iterations}.")
    if system is None:
        _check_shapes(weight, pruned, hessian)
        system = RefitSystem.of(hessian, damp)
    else:
        _check_shapes(weight, pruned, system.damped)
    w = weight.detach().float()
    removed = w.masked_fill(~pruned, 0.0)  # (out, in) d0 = W - W_masked: the pruned weights
    start_gradient = removed @ system.damped  # (out, in) d0 H_d
    before = system.energy(removed, start_gradient)
    if solver == "exact":
        refit = refit_exact(weight, pruned, damped_hessian(hessian, damp) if hessian is not None else system.damped.double()).float()
        used, gradient = 0, (w - refit) @ system.damped
    else:
        refit, used, gradient = refit_pcg(weight, pruned, system.damped, iterations, gradient=start_gradient)
    # The result is W_masked + (1 - s)(W_refit - W_masked), so W - result = s d0 + (1 - s) d with d = W - W_refit,
    # and its error s^2 E(d0) + (1 - s)^2 E(d) + 2 s (1 - s) d0^T H d. Since d and d0 agree on the pruned inputs and
    # d0 is zero elsewhere, <d0, d> = ||d0||^2, so d0^T H d = sum(d0 * G) - lam ||d0||^2 = system.energy(d0, G).
    refit_error = system.energy(w - refit, gradient)
    cross = system.energy(removed, gradient)
    after = shrink**2 * before + (1.0 - shrink) ** 2 * refit_error + 2.0 * shrink * (1.0 - shrink) * cross
    total = system.energy(w, w @ system.damped)  # ||W X||^2, the one product that is not part of the solve
    masked = w - removed
    result = (masked + (1.0 - shrink) * (refit - masked)).masked_fill(pruned, 0.0)
    report = RefitReport(
        error_before=before / total if total > 0 else 0.0,
        error_after=max(after, 0.0) / total if total > 0 else 0.0,
        iterations=used,
    )
    return result.to(weight.dtype), report
