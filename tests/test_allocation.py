"""Layer-wise sparsity: uniform, OWL, CWL and the shared spreading rule."""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.allocation import allocate_owl, allocate_uniform, owl_outlier_ratio, spread_sparsity
from babelprune.prune.mwanda import allocate_cwl, block_cross_lingual_correlation, cross_lingual_correlation, distinct_inputs
from babelprune.prune.stats import LanguageStats


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_uniform():
    assert allocate_uniform(3, 0.5) == [0.5, 0.5, 0.5]
    with pytest.raises(BabelpruneError):
        allocate_uniform(3, 1.2)


def test_spread_hand_case_symmetric():
    # u = [0, 0.5, 1]; raw = 1 - u = [1, 0.5, 0]; centred [0.5, 0, -0.5]; scale 0.1 / 0.5 = 0.2.
    assert spread_sparsity([0.0, 1.0, 2.0], 0.5, 0.1) == pytest.approx([0.6, 0.5, 0.4], abs=1e-12)


def test_spread_hand_case_asymmetric():
    # raw = [1, 1, 0], mean 2/3, centred [1/3, 1/3, -2/3]; the largest deviation (2/3) becomes lam = 0.08,
    # so the sparsities are 0.5 + [0.04, 0.04, -0.08].
    got = spread_sparsity([0.0, 0.0, 1.0], 0.5, 0.08)
    assert got == pytest.approx([0.54, 0.54, 0.42], abs=1e-12)
    assert abs(_mean(got) - 0.5) < 1e-9


def test_spread_respects_lower_bound_keeping_mean():
    # s = 0.05 with lam = 0.08 would go below 0; centred raw [0.5, 0, -0.5] scaled by 0.05 / 0.5 = 0.1.
    got = spread_sparsity([0.0, 1.0, 2.0], 0.05, 0.08)
    assert got == pytest.approx([0.1, 0.05, 0.0], abs=1e-12)
    assert min(got) >= 0.0


def test_spread_respects_upper_bound_keeping_mean():
    # s = 0.95: the upper bound 0.99 allows a deviation of 0.04 -> [0.99, 0.95, 0.91].
    got = spread_sparsity([0.0, 1.0, 2.0], 0.95, 0.08)
    assert got == pytest.approx([0.99, 0.95, 0.91], abs=1e-12)
    assert max(got) <= 0.99


def test_spread_equal_importances_is_uniform():
    assert spread_sparsity([0.3, 0.3, 0.3, 0.3], 0.6, 0.08) == [0.6] * 4


def test_spread_bad_arguments():
    with pytest.raises(BabelpruneError):
        spread_sparsity([1.0, 2.0], 0.5, -0.1)
    with pytest.raises(BabelpruneError):
        spread_sparsity([], 0.5, 0.1)
    with pytest.raises(BabelpruneError):
        spread_sparsity([1.0, float("nan")], 0.5, 0.1)


def test_owl_outlier_ratio_pools_the_block():
    # 8 scores in total, sum 40, mean 5; threshold 5 * 5 = 25; only 33 exceeds it -> 1/8.
    # (Per matrix, the second one alone would have mean 9 and threshold 45: no outlier.)
    scores = [torch.ones(2, 2), torch.tensor([[1.0, 1.0, 1.0, 33.0]])]
    assert owl_outlier_ratio(scores) == pytest.approx(0.125)
    # Mean 6, threshold 30: 41 is the only outlier of 8; with m = 10 (threshold 60) none.
    single = [torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 41.0]])]
    assert owl_outlier_ratio(single) == pytest.approx(0.125)
    assert owl_outlier_ratio(single, m=10.0) == 0.0


def test_owl_ordering_mean_and_bounds():
    ratios = [0.01, 0.05, 0.03, 0.02, 0.04]
    s, lam = 0.6, 0.08
    got = allocate_owl(ratios, s, lam)
    assert abs(_mean(got) - s) < 1e-6
    assert all(s - lam - 1e-12 <= v <= s + lam + 1e-12 for v in got)
    # More outliers -> lower sparsity: order of sparsities is the reverse order of ratios.
    assert sorted(range(5), key=lambda i: got[i]) == [1, 4, 2, 3, 0]
    assert allocate_owl([0.02] * 4, s, lam) == [s] * 4


def test_cross_lingual_correlation_hand_cases():
    a = [1.0, 2.0, 3.0]
    b = [2.0, 4.0, 6.0]  # a scaled: correlation 1
    c = [3.0, 2.0, 1.0]  # a reversed: correlation -1
    assert cross_lingual_correlation(torch.tensor([a, b])) == pytest.approx(1.0)
    assert cross_lingual_correlation(torch.tensor([a, c])) == pytest.approx(-1.0)
    # Pairs (a,b)=1, (a,c)=-1, (b,c)=-1 -> mean -1/3.
    assert cross_lingual_correlation(torch.tensor([a, b, c])) == pytest.approx(-1 / 3)
    # [1,0,0] vs [0,1,0]: centred [2,-1,-1]/3 and [-1,2,-1]/3, dot -3/9, norms^2 6/9 -> -0.5.
    assert cross_lingual_correlation(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])) == pytest.approx(-0.5)


def test_cross_lingual_correlation_is_a_rank_correlation():
    # [1, 4, 9] orders the features as [1, 2, 3] does: rank correlation 1 (Pearson would be 0.99).
    assert cross_lingual_correlation(torch.tensor([[1.0, 2.0, 3.0], [1.0, 4.0, 9.0]])) == pytest.approx(1.0)
    # An outlier feature does not decide it: ranks [0, 1, 2] vs [1, 0, 2], centred [-1, 0, 1] and
    # [0, -1, 1], dot 1, norms sqrt(2) each -> 0.5 (Pearson of the raw values: 0.86).
    assert cross_lingual_correlation(torch.tensor([[1.0, 2.0, 100.0], [2.0, 1.0, 3.0]])) == pytest.approx(0.5)
    # Ties share their average rank: [1, 1, 2] -> [0.5, 0.5, 2], centred [-0.5, -0.5, 1]; against
    # ranks [0, 1, 2] (centred [-1, 0, 1]): dot 1.5 / (sqrt(1.5) * sqrt(2)) = sqrt(3) / 2.
    assert cross_lingual_correlation(torch.tensor([[1.0, 1.0, 2.0], [1.0, 2.0, 3.0]])) == pytest.approx(3**0.5 / 2)
    # Scale-free: multiplying one language's norms by 1000 changes nothing.
    assert cross_lingual_correlation(torch.tensor([[1.0, 2.0, 100.0], [2000.0, 1000.0, 3000.0]])) == pytest.approx(0.5)


def _stats_from_norms(first: list[float], second: list[float]) -> LanguageStats:
    """Statistics of two languages with one token each, so their per-language norms are |token|."""
    stats = LanguageStats(len(first), ["en", "fr"], track_activity=False)
    stats.update(torch.tensor([first]), "en")
    stats.update(torch.tensor([second]), "fr")
    return stats


def test_block_correlation_counts_each_shared_input_once():
    shared = _stats_from_norms([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])  # q, k, v read it: correlation 1
    own = _stats_from_norms([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])  # o reads it: correlation -1
    # Two distinct inputs: (1 + -1) / 2 = 0. Counting q, k and v separately would give (3 - 1) / 4 = 0.5.
    assert distinct_inputs([shared, shared, shared, own]) == [shared, own]
    assert block_cross_lingual_correlation([shared, shared, shared, own]) == pytest.approx(0.0)
    assert block_cross_lingual_correlation([shared, own, own]) == pytest.approx(0.0)
    with pytest.raises(BabelpruneError):
        block_cross_lingual_correlation([])


def test_cross_lingual_correlation_needs_two_languages():
    with pytest.raises(BabelpruneError):
        cross_lingual_correlation(torch.ones(1, 5))


def test_cwl_ordering_mean_and_bounds():
    correlations = [0.9, 0.5, 0.7, 0.95]
    s, lam = 0.5, 0.08
    got = allocate_cwl(correlations, s, lam)
    assert abs(_mean(got) - s) < 1e-6
    assert all(s - lam - 1e-12 <= v <= s + lam + 1e-12 for v in got)
    # Lowest correlation (most language-specific) -> lowest sparsity.
    assert sorted(range(4), key=lambda i: got[i]) == [1, 2, 0, 3]
    assert allocate_cwl([0.8, 0.8, 0.8], s, lam) == [s] * 3
