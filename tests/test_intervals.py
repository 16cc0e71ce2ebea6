"""Bootstrap intervals over evaluation windows, and paired differences between two models."""

import math

import numpy as np
import pytest

from babelprune.report.compare import compare
from babelprune.report.intervals import (
    bits_per_byte_interval,
    bits_per_byte_replicates,
    draws,
    percentile_interval,
    relative_change_replicates,
    resolved,
)
from babelprune.report.records import EvalResult, LMScore, ModelInfo
from babelprune.report.tables import comparison_markdown, markdown_table

LN2 = math.log(2)


def score(lang: str, window_bits: list[float], window_bytes: list[int]) -> LMScore:
    """A score whose windows cost the given bits per byte each."""
    nll = [bits * size * LN2 for bits, size in zip(window_bits, window_bytes)]
    return LMScore(language=lang, name=lang, script="Latn", resource="high", n_windows=len(nll),
                   n_tokens=10 * len(nll), n_bytes=sum(window_bytes), nll_nats=sum(nll),
                   window_nll=nll, window_bytes=window_bytes)


def result(*scores: LMScore, method="dense") -> EvalResult:
    from babelprune.report.records import PruningInfo

    return EvalResult(model=ModelInfo(spec="m", architecture="X", n_parameters=1, block_sparsity=0.0),
                      pruning=PruningInfo(method=method, sparsity=0.5, setting="shared"),
                      corpus="bible", split="eval", scores=list(scores))


def test_replicates_are_ratios_of_sums_by_hand():
    # Windows: 10 nats over 5 bytes, 30 nats over 15 bytes. Draw (0, 0): 20 / 10 bytes; draw (0, 1): 40 / 20.
    index = np.array([[0, 0], [0, 1], [1, 1]])
    got = bits_per_byte_replicates([10.0, 30.0], [5, 15], index)
    assert got.tolist() == pytest.approx([2 / LN2, 2 / LN2, 2 / LN2])
    got = bits_per_byte_replicates([10.0, 60.0], [5, 15], index)  # 2 and 4 nats per byte
    assert got.tolist() == pytest.approx([2 / LN2, 70 / 20 / LN2, 4 / LN2])


def test_percentile_interval_of_known_values():
    assert percentile_interval(np.arange(0, 101, dtype=float)) == pytest.approx((2.5, 97.5))


def test_identical_windows_have_a_point_interval_and_varied_ones_contain_the_estimate():
    flat = score("en", [1.0] * 8, [100] * 8)
    assert flat.bits_per_byte_interval == pytest.approx((1.0, 1.0))
    varied = score("en", [0.5, 1.5, 0.8, 1.2, 1.0, 0.7, 1.3, 1.0], [100] * 8)
    low, high = varied.bits_per_byte_interval
    assert low < varied.bits_per_byte < high and high - low > 0.1
    assert bits_per_byte_interval([1.0], [3], "en") is None
    assert bits_per_byte_interval([1.0, 2.0, 1.5, 1.2], [3] * 4, "en") is None  # too few windows to resample
    assert bits_per_byte_interval([1.0, 2.0, 1.5, 1.2, 1.1], [3] * 5, "en") is not None


def test_draws_are_seeded_by_language():
    assert (draws(5, "en") == draws(5, "en")).all() and not (draws(5, "en") == draws(5, "fr")).all()


def test_a_uniform_shift_on_the_same_windows_is_resolved_however_varied_the_text():
    bits = [0.5, 1.5, 0.8, 1.2, 1.0, 0.7, 1.3, 1.0]
    dense = result(score("en", bits, [100] * 8))
    pruned = result(score("en", [b * 1.05 for b in bits], [100] * 8), method="wanda")
    change = compare(dense, pruned).changes[0]
    # Paired: every draw sees the same 5% increase, so the interval is the point.
    assert change.relative == pytest.approx(0.05)
    assert change.interval == pytest.approx((0.05, 0.05))
    assert resolved(change.interval)


def test_noise_larger_than_the_change_is_not_resolved_and_tables_say_so():
    bits = [1.0] * 8
    noisy = [1.30, 0.75, 1.20, 0.80, 1.25, 0.78, 1.1, 0.9]  # mean about 1.01: within noise of dense
    comparison = compare(result(score("en", bits, [100] * 8), score("fr", bits, [100] * 8)),
                         result(score("en", noisy, [100] * 8), score("fr", [b * 1.2 for b in bits], [100] * 8), method="wanda"))
    by_lang = {c.language: c for c in comparison.changes}
    assert not resolved(by_lang["en"].interval) and resolved(by_lang["fr"].interval)
    low, high = comparison.mean_interval
    assert low < comparison.mean_degradation < high
    table = comparison_markdown([comparison])
    en_row = next(line for line in table.splitlines() if line.startswith("| en "))
    fr_row = next(line for line in table.splitlines() if line.startswith("| fr "))
    assert "n.s." in en_row and "n.s." not in fr_row and "[+20.0, +20.0]" in fr_row


def test_results_without_window_data_have_no_intervals():
    bare = LMScore(language="en", name="en", script="Latn", resource="high", n_windows=2, n_tokens=4, n_bytes=8, nll_nats=5.0)
    comparison = compare(result(bare), result(bare.model_copy(update={"nll_nats": 6.0}), method="wanda"))
    assert comparison.changes[0].interval is None and comparison.mean_interval is None
    assert "n.s." not in comparison_markdown([comparison])


def test_the_evaluation_table_and_json_carry_the_interval(tmp_path):
    evaluated = result(score("en", [0.5, 1.5, 0.8, 1.2, 1.0, 0.9], [100] * 6))
    low, high = evaluated.scores[0].bits_per_byte_interval
    assert f"{low:.3f}-{high:.3f}" in markdown_table(evaluated)
    evaluated.save(tmp_path / "r.json")
    import json

    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["scores"][0]["metrics"]["bits_per_byte_ci95"] == pytest.approx([low, high])
    assert EvalResult.load(tmp_path / "r.json").scores[0].window_nll == evaluated.scores[0].window_nll


def retrieval(lang: str, hits: list[bool]):
    from babelprune.report.records import RetrievalScore

    return RetrievalScore(language=lang, name=lang, script="Latn", resource="high", source_language="en",
                          n_queries=len(hits), n_correct=sum(hits), query_hits=hits)


def test_retrieval_accuracy_gets_an_interval_and_paired_changes():
    dense_hits = [True] * 30 + [False] * 10
    pruned_hits = [True] * 20 + [False] * 20  # ten of the same queries lost
    low, high = retrieval("fr", dense_hits).primary_interval
    assert low < 0.75 < high
    comparison = compare(result(retrieval("fr", dense_hits)), result(retrieval("fr", pruned_hits), method="wanda"))
    change = comparison.changes[0]
    assert change.relative == pytest.approx(-1 / 3)
    # Accuracy fell: the degradation (higher is better) is positive and its interval excludes 0.
    d_low, d_high = comparison.degradation_interval(change)
    assert 0 < d_low <= 1 / 3 <= d_high


def test_a_resample_with_a_dense_score_of_zero_has_an_open_relative_change(recwarn):
    # Six items scored right (1) or wrong (0) on one each: the dense model gets only item 5 right, the pruned one all.
    dense = ([0, 0, 0, 0, 0, 1], [1] * 6)
    pruned = ([1] * 6, [1] * 6)
    replicates = relative_change_replicates(dense, pruned, "my")
    right = (draws(6, "my") == 5).sum(axis=1)  # (samples,): how often each resample drew item 5
    expected = np.where(right == 0, np.inf, (6 - right) / np.maximum(right, 1))  # (1 - k/6) / (k/6)
    assert (right == 0).any() and (right > 0).any()  # both cases occur among the resamples
    np.testing.assert_allclose(replicates, expected, rtol=1e-12)
    unchanged = relative_change_replicates(dense, dense, "my")
    assert np.array_equal(unchanged, np.zeros_like(unchanged))  # 0 to 0 is no change, not 0/0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
