"""Scores and masks: magnitude, Wanda, N:M, M-Wanda. Expected masks are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from babelprune.errors import BabelpruneError
from babelprune.prune.kernels import (
    lowest_scores_mask,
    apply_mask,
    magnitude_scores,
    nm_mask,
    pruned_count,
    unstructured_mask,
    wanda_scores,
)
from babelprune.prune.mwanda import MWandaConfig, activation_protection, mwanda_feature_weight, mwanda_scores
from babelprune.prune.stats import LanguageStats

T, F = True, False

# Shared 2x4 layer for the hand cases.
W = torch.tensor([[1.0, -3.0, 0.5, 2.0], [-4.0, 0.2, 3.0, -1.0]])
# Tokens whose column norms are exactly [1, 0.1, 4, 1]:
# col0 sqrt(1^2)=1, col1 sqrt(0.1^2)=0.1, col2 sqrt(4^2)=4, col3 sqrt(0.6^2+0.8^2)=1.
X = torch.tensor([[1.0, 0.0, 0.0, 0.6], [0.0, 0.1, 4.0, 0.8]])


def test_magnitude_mask_per_row():
    # |W| row0 = [1, 3, 0.5, 2]: two lowest are 0.5 (col2) and 1 (col0).
    # |W| row1 = [4, 0.2, 3, 1]: two lowest are 0.2 (col1) and 1 (col3).
    expected = torch.tensor([[T, F, T, F], [F, T, F, T]])
    assert torch.equal(unstructured_mask(magnitude_scores(W), 0.5), expected)


def test_magnitude_mask_per_layer_breaks_ties_by_index():
    # floor(0.375 * 8) = 3 pruned over the layer. Sorted |W|: 0.2 (r1c1), 0.5 (r0c2),
    # then a tie at 1.0 between r0c0 (flat index 0) and r1c3 (flat index 7): index 0 wins.
    expected = torch.tensor([[T, F, T, F], [F, T, F, F]])
    assert torch.equal(unstructured_mask(magnitude_scores(W), 0.375, per_row=False), expected)


def test_wanda_mask_differs_from_magnitude():
    norms = torch.linalg.norm(X, dim=0)
    # Scores row0 = [1*1, 3*0.1, 0.5*4, 2*1] = [1, 0.3, 2, 2] -> prune col1 (0.3) and col0 (1).
    # Scores row1 = [4*1, 0.2*0.1, 3*4, 1*1] = [4, 0.02, 12, 1] -> prune col1 and col3.
    expected = torch.tensor([[T, T, F, F], [F, T, F, T]])
    got = unstructured_mask(wanda_scores(W, norms), 0.5)
    assert torch.equal(got, expected)
    # Row 0 differs from magnitude, which prunes cols 0 and 2 there.
    assert not torch.equal(got, unstructured_mask(magnitude_scores(W), 0.5))


def test_apply_mask_zeroes_only_pruned():
    pruned = torch.tensor([[T, F, T, F], [F, T, F, T]])
    expected = torch.tensor([[0.0, -3.0, 0.0, 2.0], [-4.0, 0.0, 3.0, 0.0]])
    assert torch.equal(apply_mask(W, pruned), expected)


def test_nm_hand_case():
    scores = torch.tensor(
        [
            [4.0, 1.0, 3.0, 2.0, 5.0, 6.0, 7.0, 8.0],
            [1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 0.0, 3.0],
        ]
    )
    # Row0: group [4,1,3,2] keeps 4,3 -> prune cols 1,3; group [5,6,7,8] keeps 7,8 -> prune 4,5.
    # Row1: group of four equal scores -> stable order prunes cols 0,1; group [0,2,0,3] prunes 4,6.
    expected = torch.tensor([[F, T, F, T, T, T, F, F], [T, T, F, F, T, F, T, F]])
    assert torch.equal(nm_mask(scores, 2, 4), expected)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 2)])
def test_nm_every_group_keeps_exactly_n(n, m):
    scores = torch.rand(5, 32, generator=torch.Generator().manual_seed(0))
    keep = ~nm_mask(scores, n, m)
    assert torch.equal(keep.reshape(5, 32 // m, m).sum(-1), torch.full((5, 32 // m), n))


@pytest.mark.parametrize(
    "width,sparsity,expected_per_row",
    [(7, 0.5, 3), (10, 0.3, 3), (10, 0.7, 7), (9, 0.0, 0), (5, 0.99, 4)],
)
def test_exact_per_row_sparsity(width, sparsity, expected_per_row):
    # expected = floor(sparsity * width), written out by hand.
    scores = torch.rand(6, width, generator=torch.Generator().manual_seed(1))
    pruned = unstructured_mask(scores, sparsity)
    assert pruned.sum(dim=1).tolist() == [expected_per_row] * 6
    assert pruned_count(width, sparsity) == expected_per_row


@pytest.mark.parametrize("n,m,width", [(2, 4, 6), (4, 4, 8), (5, 4, 8), (0, 4, 8)])
def test_bad_nm_raises(n, m, width):
    with pytest.raises(BabelpruneError):
        nm_mask(torch.ones(2, width), n, m)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, math.nan])
def test_bad_sparsity_raises(sparsity):
    with pytest.raises(BabelpruneError):
        unstructured_mask(torch.ones(2, 4), sparsity)


def test_wanda_rejects_wrong_norm_width():
    with pytest.raises(BabelpruneError):
        wanda_scores(W, torch.ones(3))


# ----------------------------------------------------------------- M-Wanda


def _three_language_stats(seed: int = 0) -> tuple[LanguageStats, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    stats = LanguageStats(16, ["en", "sw", "zh"])
    batches = []
    for lang, tokens, scale in [("en", 40, 1.0), ("sw", 13, 3.0), ("zh", 25, 0.5)]:
        x = torch.randn(tokens, 16, generator=gen) * scale
        stats.update(x, lang)
        batches.append(x)
    return stats, torch.cat(batches)


def test_mwanda_all_parts_off_is_exactly_wanda():
    stats, all_tokens = _three_language_stats()
    weight = torch.randn(12, 16, generator=torch.Generator().manual_seed(3))
    off = MWandaConfig(language_aware=False)  # activation_prob is off by default
    got = mwanda_scores(
        weight, stats.pooled_norm(), stats.per_language_norm(), stats.activation_probability(), off
    )
    wanda = wanda_scores(weight, stats.pooled_norm())
    assert torch.equal(got, wanda)
    # And the mask equals Wanda's computed from the raw concatenated tokens.
    reference = unstructured_mask(wanda_scores(weight, torch.linalg.norm(all_tokens, dim=0)), 0.5)
    assert torch.equal(unstructured_mask(got, 0.5), reference)


def test_mwanda_all_parts_off_hand_case_is_wanda():
    # Per-language norms and activation probabilities that would change every score if either part ran.
    weight = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    pooled = torch.tensor([2.0, 1.0])
    per_lang = torch.tensor([[1.0, 9.0], [5.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    off = MWandaConfig(language_aware=False)
    assert mwanda_feature_weight(pooled, per_lang, p, off) is pooled
    # |W_ij| * ||X_j||: row 0 [1*2, 2*1] = [2, 2], row 1 [3*2, 0.5*1] = [6, 0.5].
    got = mwanda_scores(weight, pooled, per_lang, p, off)
    assert torch.equal(got, torch.tensor([[2.0, 2.0], [6.0, 0.5]]))
    assert torch.equal(got, wanda_scores(weight, pooled))


def test_language_aware_with_one_language_keeps_wanda_mask():
    # One language: n_j = ||X_j|| / sqrt(T), a constant rescaling, so row rankings are unchanged.
    gen = torch.Generator().manual_seed(5)
    stats = LanguageStats(16, ["en"])
    stats.update(torch.randn(30, 16, generator=gen), "en")
    weight = torch.randn(8, 16, generator=gen)
    options = MWandaConfig(language_aware=True, alpha=1.0)
    got = mwanda_scores(weight, stats.pooled_norm(), stats.per_language_norm(), None, options)
    assert torch.equal(unstructured_mask(got, 0.5), unstructured_mask(wanda_scores(weight, stats.pooled_norm()), 0.5))


def test_alpha_protects_feature_strong_in_one_language():
    weight = torch.tensor([[1.0, 1.0]])
    # Feature 0 is equally strong in both languages, feature 1 only in language A.
    per_lang = torch.tensor([[1.0, 1.6], [1.0, 0.0]])
    pooled = torch.tensor([1.0, 1.0])  # unused when language_aware
    # mu = [1, 0.8]; population sigma = [0, 0.8].
    # alpha = 0: scores [1, 0.8] -> feature 1 pruned.
    no_alpha = mwanda_scores(weight, pooled, per_lang, None, MWandaConfig(language_aware=True, alpha=0.0))
    assert torch.allclose(no_alpha, torch.tensor([[1.0, 0.8]]))
    assert torch.equal(unstructured_mask(no_alpha, 0.5), torch.tensor([[F, T]]))
    # alpha = 1: scores [1 + 0, 0.8 + 0.8] = [1, 1.6] -> feature 1 kept, feature 0 pruned.
    with_alpha = mwanda_scores(weight, pooled, per_lang, None, MWandaConfig(language_aware=True, alpha=1.0))
    assert torch.allclose(with_alpha, torch.tensor([[1.0, 1.6]]))
    assert torch.equal(unstructured_mask(with_alpha, 0.5), torch.tensor([[T, F]]))


def test_activation_probability_factor_hand_case():
    # Languages x features. Per feature: shared = min, specific = max - mean.
    # f0: p=[0.9, 0.8] -> shared 0.8, specific 0.9-0.85=0.05 -> 0.8
    # f1: p=[0.6, 0.0] -> shared 0.0, specific 0.6-0.3=0.3   -> 0.3
    # f2: p=[0.1, 0.1] -> shared 0.1, specific 0.0           -> 0.1
    p = torch.tensor([[0.9, 0.6, 0.1], [0.8, 0.0, 0.1]])
    assert torch.allclose(activation_protection(p, beta=1.0), torch.tensor([1.8, 1.3, 1.1], dtype=torch.float64))
    assert torch.allclose(activation_protection(p, beta=0.5), torch.tensor([1.4, 1.15, 1.05], dtype=torch.float64))

    weight = torch.tensor([[1.0, 1.0, 1.0]])
    pooled = torch.tensor([1.0, 1.3, 1.5])
    # Without the factor: scores [1, 1.3, 1.5]; floor(3 * 1/3) = 1 pruned -> feature 0.
    plain = mwanda_scores(weight, pooled, None, p, MWandaConfig(language_aware=False))
    assert torch.equal(unstructured_mask(plain, 1 / 3), torch.tensor([[T, F, F]]))
    # With beta = 1: [1*1.8, 1.3*1.3, 1.5*1.1] = [1.8, 1.69, 1.65] -> feature 2 pruned.
    options = MWandaConfig(language_aware=False, activation_prob=True, beta=1.0)
    protected = mwanda_scores(weight, pooled, None, p, options)
    assert torch.allclose(protected, torch.tensor([[1.8, 1.69, 1.65]]))
    assert torch.equal(unstructured_mask(protected, 1 / 3), torch.tensor([[F, F, T]]))


def test_mwanda_missing_statistics_raise():
    with pytest.raises(BabelpruneError):
        mwanda_feature_weight(torch.ones(3), None, None, MWandaConfig(language_aware=True))
    with pytest.raises(BabelpruneError):
        mwanda_feature_weight(torch.ones(3), None, None, MWandaConfig(language_aware=False, activation_prob=True))


@pytest.mark.parametrize("field", ["alpha", "beta", "tau"])
@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan])
def test_mwanda_config_refuses_negative_and_non_finite_values(field, value):
    with pytest.raises(ValidationError, match=field):
        MWandaConfig(**{field: value})


def test_threshold_path_equals_a_stable_sort_with_many_ties():
    # Wide rows (> 64) take the k-th value path; scores drawn from 5 values force many ties.
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (6, 100), generator=generator).float()
    for k in (1, 37, 50, 99):
        expected = torch.zeros_like(scores, dtype=torch.bool)
        expected.scatter_(1, torch.argsort(scores, dim=1, stable=True)[:, :k], True)
        got = lowest_scores_mask(scores, k)
        assert torch.equal(got, expected), k
        assert torch.all(got.sum(dim=1) == k)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.5", None])
def test_check_sparsity_refuses_what_is_not_a_fraction_below_one(bad):
    from babelprune.choices import check_sparsity
    from babelprune.prune import kernels

    # One check, defined at the bottom (choices) and still importable from prune.kernels.
    assert kernels.check_sparsity is check_sparsity
    with pytest.raises(BabelpruneError, match="Sparsity"):
        check_sparsity(bad)
    assert check_sparsity(0) == 0.0 and isinstance(check_sparsity(0), float) and check_sparsity(0.5) == 0.5


def _stable_sort_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    expected = torch.zeros_like(scores, dtype=torch.bool)
    expected.scatter_(-1, torch.argsort(scores, dim=-1, stable=True)[..., :k], True)
    return expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_smallest_equals_torch_kthvalue_split_across_threads_or_not(monkeypatch, dtype):
    from babelprune.prune import kernels

    scores = torch.randn(40, 300, generator=torch.Generator().manual_seed(0), dtype=dtype).abs()
    expected = torch.kthvalue(scores, 120, dim=-1, keepdim=True).values
    assert torch.equal(kernels.kth_smallest(scores, 120), expected)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    monkeypatch.setattr(kernels, "_SPLIT_SELECTION_AT", 1000)  # 12000 entries: 3 threads of 13 or 14 rows
    try:
        assert torch.equal(kernels.kth_smallest(scores, 120), expected)
        # A transposed (non-contiguous) view and a batch of matrices, as SparseGPT and N:M groups pass them.
        assert torch.equal(kernels.kth_smallest(scores.T, 7), torch.kthvalue(scores.T, 7, dim=-1, keepdim=True).values)
        batched = scores.reshape(4, 10, 300)
        assert torch.equal(kernels.kth_smallest(batched, 5), torch.kthvalue(batched, 5, dim=-1, keepdim=True).values)
    finally:
        torch.set_num_threads(threads)


def test_a_tie_at_the_cut_in_one_row_still_gives_the_stable_sort_mask():
    # Distinct scores take the count shortcut; one row with a tie across its cut must not.
    scores = torch.rand(5, 100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lowest_scores_mask(scores, 40), _stable_sort_mask(scores, 40))
    # Row 2: ten scores of 0.1 (ranks 1-10), ten tied at 0.25 (ranks 11-20), the rest above: k = 15 cuts the ties.
    scores[2, :10] = 0.25
    scores[2, 10:] = torch.linspace(0.3, 1.0, 90)
    scores[2, 50:60] = 0.1
    got = lowest_scores_mask(scores, 15)
    assert torch.equal(got, _stable_sort_mask(scores, 15))
    assert got[2, :5].all() and not got[2, 5:10].any()  # the lower-indexed tied entries go first
    assert torch.all(got.sum(dim=1) == 15)


def test_rows_whose_cut_is_not_a_number_keep_the_threshold_rule():
    # A row whose k-th score is NaN prunes what lies below NaN: nothing; the other rows are unaffected.
    scores = torch.rand(4, 100, generator=torch.Generator().manual_seed(2))
    scores[1, 10:] = float("nan")  # 10 numbers, so the 15th lowest of row 1 is NaN
    got = lowest_scores_mask(scores, 15)
    assert not got[1].any()
    others = torch.tensor([0, 2, 3])
    assert torch.equal(got[others], _stable_sort_mask(scores[others], 15))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_zeroing_pruned_weights_is_masked_fill_bit_for_bit(dtype):
    from babelprune.prune.kernels import zero_pruned_

    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(6, 80, generator=generator).to(dtype)
    weight[0, :4] = torch.tensor([float("nan"), float("inf"), -0.0, -1.0], dtype=dtype)  # pruned: all become +0.0
    weight[1, :2] = torch.tensor([float("nan"), -0.0], dtype=dtype)  # kept: unchanged, sign of zero included
    pruned = torch.rand(6, 80, generator=generator) < 0.5
    pruned[0, :4], pruned[1, :2] = True, False
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[weight.element_size()]
    for view in (lambda t: t, lambda t: t.T):  # contiguous, and a transposed view (a Conv1D weight's (out, in))
        expected = view(weight.clone()).masked_fill_(view(pruned), 0)
        got = view(weight.clone())
        assert zero_pruned_(got, view(pruned)) is got
        assert torch.equal(got.view(bits), expected.view(bits))


def test_counting_true_entries_matches_torch():
    from babelprune.prune.kernels import count_true

    mask = torch.rand(7, 90, generator=torch.Generator().manual_seed(5)) < 0.3
    assert count_true(mask) == int(mask.sum())
    assert count_true(mask.T) == int(mask.sum())
