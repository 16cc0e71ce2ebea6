"""Paired contests of two pruned models' increases of bits per byte: hand-made window data."""

import math

import pytest

from babelprune.errors import BabelpruneError
from babelprune.report.contest import contest, contest_markdown
from babelprune.report.records import EvalResult, LMScore, ModelInfo

WINDOWS = 6
BYTES = 100


def result(bits: dict[str, list[float]]) -> EvalResult:
    """Per language, the bits per byte of each of its windows (100 bytes each)."""
    scores = [
        LMScore(language=lang, name=lang, script="Latn", resource="high", n_windows=len(values), n_tokens=50 * len(values),
                n_bytes=BYTES * len(values), nll_nats=sum(values) * BYTES * math.log(2),
                window_nll=[v * BYTES * math.log(2) for v in values], window_bytes=[BYTES] * len(values))
        for lang, values in bits.items()
    ]
    return EvalResult(model=ModelInfo(spec="m", architecture="X", n_parameters=1, block_sparsity=0.0),
                      corpus="bible", split="eval", scores=scores)


def varied(base: float) -> list[float]:
    return [base + 0.1 * i for i in range(WINDOWS)]  # windows of unequal difficulty


DENSE = result({"en": varied(1.0), "sw": varied(2.0)})
# Baseline: en +0.5, sw +0.4 on every window; candidate: en +0.2, sw +0.6 on every window.
BASELINE = result({"en": varied(1.5), "sw": varied(2.4)})
CANDIDATE = result({"en": varied(1.2), "sw": varied(2.6)})


def test_per_language_differences_are_exact_when_every_window_moves_alike():
    got = contest(DENSE, BASELINE, CANDIDATE, "base", "cand")
    by_lang = {c.language: c for c in got.languages}
    assert by_lang["en"].baseline_increase == pytest.approx(0.5) and by_lang["en"].candidate_increase == pytest.approx(0.2)
    # Paired: the windows' difficulty cancels, so every bootstrap replicate gives the same difference.
    assert by_lang["en"].difference_interval == pytest.approx((-0.3, -0.3))
    assert by_lang["sw"].difference_interval == pytest.approx((0.2, 0.2))


def test_mean_ratio_and_worst_language_each_get_their_own_verdict():
    got = contest(DENSE, BASELINE, CANDIDATE, "base", "cand")
    assert got.baseline_mean == pytest.approx(0.45) and got.candidate_mean == pytest.approx(0.4)
    assert got.mean_ratio == pytest.approx(0.4 / 0.45)
    assert got.verdict(got.mean_difference_interval) == "cand"  # -0.05 in every replicate
    # Worst: the baseline's is en +0.5, the candidate's sw +0.6: the candidate's worst is worse by 0.1.
    assert got.worst_difference_interval == pytest.approx((0.1, 0.1))
    assert got.verdict(got.worst_difference_interval) == "base"
    table = contest_markdown(got)
    assert "en +0.5000" in table and "sw +0.6000" in table and "(0.89x)" in table


def test_a_difference_within_noise_is_not_resolved():
    noisy = result({"en": [1.5 + (0.2 if i % 2 else -0.2) for i in range(WINDOWS)], "sw": varied(2.4)})
    flipped = result({"en": [1.5 + (-0.2 if i % 2 else 0.2) for i in range(WINDOWS)], "sw": varied(2.4)})
    got = contest(DENSE, noisy, flipped, "a", "b")
    assert got.verdict(got.mean_difference_interval) == "not resolved"
    assert "n.s." in contest_markdown(got)


def test_results_on_other_windows_are_refused():
    other = result({"en": varied(1.2)[:-1], "sw": varied(2.6)})
    with pytest.raises(BabelpruneError, match="different windows of 'en'"):
        contest(DENSE, BASELINE, other, "base", "cand")
