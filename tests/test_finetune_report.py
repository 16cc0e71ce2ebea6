"""The sweep report: means and stds over seeds, changes, correlations and the files written."""

from __future__ import annotations

import pytest

from babelprune.errors import BabelpruneError
from babelprune.report.finetune_records import FinetuneResult, TaskScore
from babelprune.report.finetune_report import (
    average_over_languages,
    correlations,
    gainers_and_losers,
    language_changes,
    language_scores,
    mean_std,
    robustness_lines,
    write_finetune_report,
)

# Four languages of Joshi classes 5 (en), 4 (ru), 3 (id), 2 (sw); CC-100 sizes 300.8, 278.0, 148.3, 1.6.
LANGS = ("en", "ru", "id", "sw")


def _result(sparsity: float, seed: int, clean: dict[str, float], gap: float) -> FinetuneResult:
    scores = []
    for lang in LANGS:
        base = dict(language=lang, name=lang, script="Latn", resource="high", metric="accuracy", n_examples=10)
        scores.append(TaskScore(**base, value=clean[lang]))
        scores.append(TaskScore(**base, value=clean[lang] - gap, perturbation="chars", gap=gap))
    return FinetuneResult(
        model="m", task="t", mode="zero-shot", train_languages=["en"], train_examples={"en": 50}, seed=seed,
        sparsity=sparsity, achieved_sparsity=sparsity, steps=5, seconds=1.0, scores=scores,
    )


def sweep() -> list[FinetuneResult]:
    dense = {"en": 0.8, "ru": 0.7, "id": 0.6, "sw": 0.5}
    return [
        _result(0.0, 0, dense, 0.10),
        _result(0.0, 1, {k: v + 0.1 for k, v in dense.items()}, 0.20),
        # At 50%, high-resource languages lose, low-resource ones gain (seed means below).
        _result(0.5, 0, {"en": 0.7, "ru": 0.7, "id": 0.7, "sw": 0.7}, 0.05),
        _result(0.5, 1, {"en": 0.7, "ru": 0.7, "id": 0.7, "sw": 0.7}, 0.05),
    ]


def test_mean_std_by_hand():
    stats = mean_std([0.8, 0.9])
    assert stats.mean == pytest.approx(0.85)
    assert stats.std == pytest.approx(0.0707106781)  # sample std: |0.1| / sqrt(2)
    assert mean_std([0.3]).std == 0.0


def test_language_scores_and_changes_by_hand():
    table = language_scores(sweep())
    assert table[0.0]["en"].mean == pytest.approx(0.85)
    assert table[0.5]["sw"].mean == pytest.approx(0.7)
    changes = language_changes(sweep(), 0.5)
    # Dense means: en 0.85, ru 0.75, id 0.65, sw 0.55; sparse: 0.7 everywhere.
    assert changes == pytest.approx({"en": -0.15, "ru": -0.05, "id": 0.05, "sw": 0.15})


def test_average_gaps_over_languages_by_hand():
    gaps = average_over_languages(sweep(), "chars", "gap")
    assert gaps[0.0].mean == pytest.approx(0.15) and gaps[0.0].std == pytest.approx(0.0707106781)
    assert gaps[0.5].mean == pytest.approx(0.05) and gaps[0.5].std == pytest.approx(0.0)


def test_correlations_by_hand():
    changes = language_changes(sweep(), 0.5)
    rho = correlations(changes, {"en": 50, "ru": 0, "id": 0, "sw": 0})
    # The change falls exactly as the Joshi class and the CC-100 size rise: rank correlation -1.
    assert rho["joshi_class"] == pytest.approx(-1.0)
    assert rho["cc100_gib"] == pytest.approx(-1.0)
    assert rho["train_examples"] is None  # only two distinct values (50 and 0)


def test_gainers_and_losers_are_ordered():
    gain, loss = gainers_and_losers({"a": 0.1, "b": -0.3, "c": 0.2, "d": -0.1, "e": 0.0})
    assert gain == ["c", "a"]
    assert loss == ["b", "d"]


def test_report_files(tmp_path):
    path = write_finetune_report(sweep(), tmp_path)
    text = path.read_text()
    assert "| dense | 0.000 | 2 | 0.700 ± 0.071 |" in text  # dense mean over languages per seed: 0.65, 0.75
    assert "| en (English) | high (5) | 0.850 ± 0.071 | 0.700 ± 0.000 |" in text
    assert "gain: sw +15.0, id +5.0; lose: en -15.0, ru -5.0." in text
    for name in ("change_vs_resource.png", "change_vs_pretraining.png", "sparsity_curves.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_report_needs_a_dense_run(tmp_path):
    with pytest.raises(BabelpruneError, match="no dense run"):
        write_finetune_report([r for r in sweep() if r.sparsity > 0], tmp_path)


def test_robustness_table_by_hand():
    text = "\n".join(robustness_lines(sweep()))
    # Dense: gap 0.15 (per-seed 0.10, 0.20) on clean 0.70 -> 21%; 50%: gap 0.05 on 0.70 -> 7%, smaller in all 4 languages.
    assert "| chars | dense | 0.150 ± 0.071 | 21% |  |" in text
    assert "| chars | 50% | 0.050 ± 0.000 | 7% | 4 |" in text


def test_negative_zero_is_printed_as_zero():
    assert str(mean_std([-1e-12, 1e-12 - 1e-12])) == "0.000 ± 0.000"
