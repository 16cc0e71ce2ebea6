"""The fine-tuning analysis: means and stds over seeds, changes, gaps, correlations, and the report's tables of them."""

from __future__ import annotations

import pytest

from babelprune.errors import BabelpruneError
from babelprune.records.run import RunRecord
from babelprune.report.finetune_analysis import (
    average_over_languages,
    by_sparsity,
    correlations,
    critical_rho,
    gainers_and_losers,
    language_changes,
    language_scores,
    mean_std,
    resource_analysis,
    robustness,
)
from babelprune.report.finetune_records import FinetuneResult, TaskScore
from babelprune.report.html import write_report
from tests import report_store
from tests.test_report_html import column, parse, row_of

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


def test_the_analysis_needs_a_dense_run():
    with pytest.raises(BabelpruneError, match="no dense run"):
        by_sparsity([r for r in sweep() if r.sparsity > 0])


def test_robustness_by_hand():
    rows = {(row.perturbation, row.sparsity): row for row in robustness(sweep())}
    assert set(rows) == {("chars", 0.0), ("chars", 0.5)}
    # Dense: per-seed gaps 0.10 and 0.20 on a clean mean of 0.70; 50%: 0.05 on 0.70, smaller than dense in all 4 languages.
    dense, sparse = rows[("chars", 0.0)], rows[("chars", 0.5)]
    assert (dense.gap.mean, dense.share, dense.smaller) == (pytest.approx(0.15), pytest.approx(0.15 / 0.70), None)
    assert (sparse.gap.mean, sparse.share, sparse.smaller) == (pytest.approx(0.05), pytest.approx(0.05 / 0.70), 4)


def test_resource_analysis_by_hand():
    (half,) = resource_analysis(sweep())
    assert half.sparsity == 0.5
    assert half.changes == pytest.approx({"en": -0.15, "ru": -0.05, "id": 0.05, "sw": 0.15})
    assert half.mean_change == pytest.approx(0.0)
    assert (half.gain, half.loss) == (["sw", "id"], ["en", "ru"])
    assert half.correlations["cc100_gib"] == pytest.approx(-1.0)


def test_critical_rho():
    assert critical_rho(22) == pytest.approx(1.96 / 21 ** 0.5)
    assert critical_rho(1) is None


def test_robustness_gaps_gains_and_correlations_reach_the_html_report(tmp_path):
    records = [RunRecord(key=f"r{index}", sweep="ft", kind="finetune", label=f"run {index}", config={}, state="done",
                         finetune=result) for index, result in enumerate(sweep())]
    page = write_report(report_store.write_store(tmp_path / "runs.sqlite", records), tmp_path / "report")
    tables = parse(page).tables
    title = "m on t (zero-shot)"
    summary = tables[f"finetune {title}"]
    # The dense per-seed gaps over languages are 0.10 and 0.20: mean 0.15, sample std 0.1 / sqrt(2).
    assert row_of(summary, "dense")[column(summary, "gap chars")][0] == "0.150 ± 0.071"
    gaps = tables[f"finetune robustness {title}"]
    half = next(row for row in gaps["rows"] if row[1][0] == "50%")
    assert [cell[0] for cell in half] == ["chars", "50%", "0.050 ± 0.000", "7%", "4"]
    per_language = tables[f"finetune gaps chars {title}"]
    assert row_of(per_language, "sw")[column(per_language, "dense")][0] == "0.150 ± 0.071"
    resources = tables[f"finetune resources {title}"]
    row = row_of(resources, "50%")
    assert row[column(resources, "rho with CC-100 size")][0] == "-1.00"
    assert row[column(resources, "rho with Joshi class")][0] == "-1.00"
    assert row[column(resources, "rho with training examples")][0] == "n/a"  # 50 English examples, none elsewhere
    assert row[column(resources, "languages gaining")][0] == "sw +15.0, id +5.0"
    assert row[column(resources, "languages losing")][0] == "en -15.0, ru -5.0"
    assert "|rho| above about 1.13" in page.read_text(encoding="utf-8")  # 1.96 / sqrt(3) with 4 languages
    assert len(parse(page).images) == 3  # change against resource class and pretraining data, curves


def test_negative_zero_is_printed_as_zero():
    assert str(mean_std([-1e-12, 1e-12 - 1e-12])) == "0.000 ± 0.000"
