"""SparseGPT: hand-checked masks and updates, optimality on a rank-one layer, reconstruction."""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.kernels import apply_mask, unstructured_mask, wanda_scores
from babelprune.prune.sparsegpt import sparsegpt_prune

T, F = True, False


def _hessian(x: torch.Tensor) -> torch.Tensor:
    """X X^T over tokens, with tokens as rows of x: (in, in)."""
    return x.T @ x


def test_diagonal_hessian_no_cross_update_and_hand_mask():
    # Orthogonal input columns -> H = diag(1, 4, 9, 0.25).
    x = torch.diag(torch.tensor([1.0, 2.0, 3.0, 0.5]))
    weight = torch.tensor([[1.0, 1.0, 0.5, 2.0], [3.0, -0.4, 0.2, 1.0]])
    # damping = 0.01 * mean(1, 4, 9, 0.25) = 0.035625; H^-1 diagonal, U_jj^2 = 1 / (H_jj + 0.035625).
    # Saliency w^2 * (H_jj + damping):
    #   row0: 1*1.0356=1.04, 1*4.0356=4.04, 0.25*9.0356=2.26, 4*0.2856=1.14 -> prune cols 0, 3
    #   row1: 9*1.0356=9.32, 0.16*4.0356=0.65, 0.04*9.0356=0.36, 1*0.2856=0.29 -> prune cols 3, 2
    # (magnitude would prune cols 2, 1 in row 1).
    expected = torch.tensor([[T, F, F, T], [F, F, T, T]])
    new_weight, pruned = sparsegpt_prune(weight, _hessian(x), 0.5)
    assert torch.equal(pruned, expected)
    # No off-diagonal curvature, so the surviving weights are untouched.
    assert torch.equal(new_weight, apply_mask(weight, expected))


def test_correlated_feature_takes_over_pruned_weight():
    # Feature 1 = 2 * feature 0 on every token: H = 14 * [[1, 2], [2, 4]].
    x0 = torch.tensor([1.0, 2.0, 3.0])
    x = torch.stack([x0, 2 * x0], dim=1)  # (tokens, in)
    weight = torch.tensor([[1.0, 1.0], [0.5, -2.0]])
    # Default damping 0.01 * mean(14, 56) = 0.35. Saliency of column 0 is
    # a^2 * det(H_damped) / H11_damped = a^2 * 24.62 / 56.35 (tiny), of column 1 b^2 * 56.35,
    # so column 0 is pruned in both rows. Its OBS update moves a * H01 / H11_damped onto
    # column 1: row0 1 + 1 * 28 / 56.35 = 1.496894, row1 -2 + 0.5 * 28 / 56.35 = -1.751553.
    new_weight, pruned = sparsegpt_prune(weight, _hessian(x), 0.5)
    assert torch.equal(pruned, torch.tensor([[T, F], [T, F]]))
    assert torch.allclose(new_weight, torch.tensor([[0.0, 1.496894], [0.0, -1.751553]]), atol=1e-5)

    # With almost no damping the output is reproduced: w1' = b + a / 2 exactly.
    new_weight, _ = sparsegpt_prune(weight, _hessian(x), 0.5, damp=1e-7)
    assert torch.allclose(new_weight, torch.tensor([[0.0, 1.5], [0.0, -1.75]]), atol=1e-4)
    assert torch.allclose(x @ new_weight.T, x @ weight.T, rtol=1e-4, atol=1e-4)


def test_nm_version_of_rank_one_case():
    # Same layer under 1:2: the single group of 2 keeps column 1 with the transferred weight.
    x0 = torch.tensor([1.0, 2.0, 3.0])
    x = torch.stack([x0, 2 * x0], dim=1)
    weight = torch.tensor([[1.0, 1.0]])
    new_weight, pruned = sparsegpt_prune(weight, _hessian(x), n=1, m=2, block_size=2)
    assert torch.equal(pruned, torch.tensor([[T, F]]))
    assert torch.allclose(new_weight, torch.tensor([[0.0, 1.496894]]), atol=1e-5)


def _random_layer(seed: int = 0, out: int = 16, width: int = 48, tokens: int = 256):
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=gen)
    x = torch.randn(tokens, width, generator=gen) @ mixing  # correlated inputs
    weight = torch.randn(out, width, generator=gen)
    return weight, x


def test_reconstruction_beats_wanda_without_update():
    weight, x = _random_layer()
    reference = x @ weight.T
    new_weight, pruned = sparsegpt_prune(weight, _hessian(x), 0.5)
    wanda_pruned = unstructured_mask(wanda_scores(weight, torch.linalg.norm(x, dim=0)), 0.5)
    error_sparsegpt = torch.linalg.norm(reference - x @ new_weight.T)
    error_wanda = torch.linalg.norm(reference - x @ apply_mask(weight, wanda_pruned).T)
    assert error_sparsegpt < error_wanda
    assert pruned.sum(dim=1).tolist() == [24] * 16
    assert torch.all(new_weight[pruned] == 0)


def test_deterministic():
    weight, x = _random_layer(seed=4)
    first = sparsegpt_prune(weight, _hessian(x), 0.6, block_size=16)
    second = sparsegpt_prune(weight, _hessian(x), 0.6, block_size=16)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_exact_per_row_count_with_uneven_blocks():
    # width 37, blocks of 8: k = floor(0.3 * 37) = 11 pruned in every row, spread over 5 blocks.
    weight, x = _random_layer(seed=2, out=5, width=37)
    _, pruned = sparsegpt_prune(weight, _hessian(x), 0.3, block_size=8)
    assert pruned.sum(dim=1).tolist() == [11] * 5


def test_nm_valid_and_independent_of_block_size():
    weight, x = _random_layer(seed=3, width=32)
    small = sparsegpt_prune(weight, _hessian(x), n=2, m=4, block_size=4)
    large = sparsegpt_prune(weight, _hessian(x), n=2, m=4, block_size=128)
    keep = ~small[1]
    assert torch.equal(keep.reshape(16, 8, 4).sum(-1), torch.full((16, 8), 2))
    # Lazy block updates are exact algebra: the block size must not change the answer.
    assert torch.equal(small[1], large[1])
    assert torch.allclose(small[0], large[0], atol=1e-4)


def test_dead_input_column_is_zeroed():
    weight, x = _random_layer(seed=5, out=4, width=8)
    x[:, 3] = 0.0
    new_weight, _ = sparsegpt_prune(weight, _hessian(x), 0.25)
    assert torch.isfinite(new_weight).all()
    assert torch.equal(new_weight[:, 3], torch.zeros(4))


def test_bad_inputs_raise():
    weight = torch.ones(2, 6)
    with pytest.raises(BabelpruneError):
        sparsegpt_prune(weight, torch.eye(5), 0.5)
    with pytest.raises(BabelpruneError):
        sparsegpt_prune(weight, torch.eye(6), n=2, m=4)
    with pytest.raises(BabelpruneError):
        sparsegpt_prune(weight, torch.eye(6), 1.0)


def _naive_obs(weight: torch.Tensor, hessian: torch.Tensor, pruned: torch.Tensor, damp: float = 0.01):
    """Textbook sequential OBS for a fixed mask, in float64, with explicit inverse downdates.

    For j = 0, 1, ...: every row's pruning error delta = w_j - q_j is compensated on the
    remaining columns by -delta / [H^-1]_jj * [H^-1]_{j,:}; then column j is eliminated
    from H^-1 by one Gaussian-elimination step.
    """
    h = hessian.double() + damp * torch.diagonal(hessian.double()).mean() * torch.eye(hessian.shape[0])
    inverse = torch.linalg.inv(h)
    w = weight.double().clone()
    for j in range(w.shape[1]):
        delta = torch.where(pruned[:, j], w[:, j], torch.zeros_like(w[:, j]))
        w -= delta.unsqueeze(1) * (inverse[j] / inverse[j, j]).unsqueeze(0)
        inverse = inverse - torch.outer(inverse[:, j], inverse[j]) / inverse[j, j]
    return w


def test_matches_textbook_sequential_obs():
    weight, x = _random_layer(seed=6, out=6, width=12, tokens=64)
    new_weight, pruned = sparsegpt_prune(weight, _hessian(x), 0.5, block_size=5)
    expected = _naive_obs(weight, _hessian(x), pruned)
    assert torch.allclose(new_weight.double(), expected, atol=1e-5)
