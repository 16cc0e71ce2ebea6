"""The report's structured-pruning-after-fine-tuning tables, from a small store of task-structured runs written by hand."""

from __future__ import annotations


import pytest

from babelprune.report.html import write_report
from babelprune.report.html_li2022 import mean_difference, paired
from babelprune.report.task_prune_records import LanguageOutcomes, ModelScores, TaskPruneResult
from babelprune.sweep.store import ResultsStore, RunRecord
from tests.test_report_html import column, parse

KEYS = [f"k{i}" for i in range(5)]


def scores(name: str, outcomes: dict[str, list[int]], speed: float = 100.0, parameters: int = 1000, blocks: int = 600) -> ModelScores:
    return ModelScores(name=name, languages=[LanguageOutcomes(language=lang, keys=KEYS, outcomes=o) for lang, o in outcomes.items()],
                       parameters=parameters, block_parameters=blocks, sparsity=round(1 - blocks / 600, 6),
                       items_per_second=speed, eval_seconds=0.1)


DENSE = scores("dense", {"en": [1, 1, 1, 1, 1], "sw": [1, 1, 1, 0, 0]})


def result(importance: str, setting: str, models: list[ModelScores], kind: str = "task-structured") -> TaskPruneResult:
    return TaskPruneResult(kind=kind, task="bible-genre", units=["ffn"], importance=importance, setting=setting, ranking="global",
                           target_sparsity=0.5 if kind == "task-structured" else None, dense=DENSE, models=models)


def record(key: str, value: TaskPruneResult) -> RunRecord:
    return RunRecord(key=key, sweep="li2022", kind=value.kind, label=key, config={"kind": value.kind}, state="done",
                     task_pruning=value)


RUNS = {
    "gradient-shared": result("gradient", "shared", [scores("shared", {"en": [0] * 5, "sw": [1, 1, 1, 0, 0]}, 150.0, 800, 300)]),
    "l0-shared": result("l0", "shared", [scores("shared", {"en": [1] * 5, "sw": [1, 1, 1, 0, 0]}, 120.0, 800, 300)]),
    "gradient-per-language": result("gradient", "per-language", [scores("en", {"en": [1, 1, 1, 1, 0]}, 140.0, 800, 300),
                                                                 scores("sw", {"sw": [1] * 5}, 160.0, 800, 300)]),
    "dynamic": result("gradient", "shared", [scores("0", {"en": [1] * 5, "sw": [1, 1, 1, 0, 0]}),
                                              scores("0.5", {"en": [0] * 5, "sw": [1, 1, 1, 0, 0]}, 130.0, 800, 300)], "task-dynamic"),
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("li2022")
    with ResultsStore(folder / "runs.sqlite") as store:
        for key, value in RUNS.items():
            store.put(record(key, value))
    return parse(write_report(folder / "runs.sqlite", folder / "out")).tables


def row(table: dict, **match) -> list[tuple]:
    return next(r for r in table["rows"] if all(r[column(table, name)][0] == value for name, value in match.items()))


def cell(table: dict, found: list[tuple], name: str) -> tuple:
    return found[column(table, name)]


def test_change_against_dense_per_language_and_mean(tables):
    table = tables["task-structured change"]
    gradient = row(table, importance="gradient", setting="shared")
    # en: all 5 right -> all wrong, on every resample: -1 exactly; sw: the same outcomes, 0 exactly (n.s.)
    assert cell(table, gradient, "en")[0] == "-1.000 [-1.000, -1.000]" and not cell(table, gradient, "en")[2]
    assert cell(table, gradient, "sw")[0] == "+0.000 [+0.000, +0.000] n.s." and cell(table, gradient, "sw")[2]
    assert cell(table, gradient, "mean change")[0] == "-0.500 [-0.500, -0.500]"
    per_language = row(table, importance="gradient", setting="per-language")
    # each language's own model: en 4/5 against 5/5, sw 5/5 against 3/5
    assert float(cell(table, per_language, "en")[1]) == pytest.approx(-0.2)
    assert float(cell(table, per_language, "sw")[1]) == pytest.approx(0.4)
    assert float(cell(table, per_language, "mean change")[1]) == pytest.approx(0.1)


def test_gradient_against_l0_is_paired_item_by_item(tables):
    table = tables["l0 vs gradient"]
    (found,) = table["rows"]
    assert cell(table, found, "l0 - gradient")[0] == "+0.500 [+0.500, +0.500]" and not cell(table, found, "l0 - gradient")[2]
    assert cell(table, found, "languages where l0 is better")[0] == "en"
    assert cell(table, found, "where gradient is better")[0] == "-"


def test_per_language_against_shared_on_each_languages_items(tables):
    table = tables["per-language vs shared"]
    (found,) = table["rows"]
    # en: 4/5 against 0/5 = +0.8; sw: 5/5 against 3/5 = +0.4; mean +0.6
    assert float(cell(table, found, "per-language - shared")[1]) == pytest.approx(0.6)


def test_speed_against_size(tables):
    table = tables["task speed size"]
    dense = row(table, model="dense fine-tuned")
    assert (cell(table, dense, "parameters")[0], cell(table, dense, "items/s")[0]) == ("1,000", "100.0")
    gradient = row(table, model="ffn gradient shared 50%")
    assert (cell(table, gradient, "parameters")[0], cell(table, gradient, "speed-up")[0]) == ("800", "1.50")
    per_language = row(table, model="ffn gradient per-language 50%")
    assert cell(table, per_language, "items/s")[0] == "150.0"  # the mean of its two models
    assert cell(table, row(table, model="dynamic ffn level 0.5"), "speed-up")[0] == "1.30"


def test_dynamic_against_separately_pruned_runs(tables):
    table = tables["dynamic vs separate"]
    by_separate = {r[column(table, "separate run")][0]: r for r in table["rows"]}
    assert set(by_separate) == {"gradient (global)", "l0 (global)"}  # the level-0 model is the baseline, not a row
    same = by_separate["gradient (global)"]
    assert cell(table, same, "dynamic - separate")[0] == "+0.000 [+0.000, +0.000] n.s." and cell(table, same, "dynamic - separate")[2]
    assert cell(table, by_separate["l0 (global)"], "dynamic - separate")[0] == "-0.500 [-0.500, -0.500]"
    assert cell(table, same, "dynamic - dense")[0] == "-0.500 [-0.500, -0.500]"


def test_pairs_use_the_items_both_sides_scored():
    a = LanguageOutcomes(language="en", keys=["a", "b", "c"], outcomes=[1, 0, 1])
    b = LanguageOutcomes(language="en", keys=["c", "a", "z"], outcomes=[0, 1, 1])
    assert paired(a, b) == ("en", [1, 1], [1, 0])
    assert mean_difference([paired(a, b)]) == (-0.5, None)  # fewer than 5 items: no interval
