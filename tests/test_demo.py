"""The main job: the packaged demo sweep, its substitutions, and a whole run that resumes into the HTML report."""

from __future__ import annotations

import pytest

from babelprune import demo
from babelprune.errors import BabelpruneError
from babelprune.shrink import ScoreStore as ShrinkScores
from babelprune.sweep.experiment import recipe_path
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests.sweep_fixtures import write_tiny_model


def test_the_demo_recipe_is_seven_runs_on_two_evaluation_sets():
    plan = plan_experiment(recipe_path("demo"), check_data=False)
    labels = sorted(run.label for run in plan.runs)
    assert len(plan.runs) == 7
    assert "mwanda 50% cwl + refit" in labels  # the recommended configuration at 50%
    assert sum(run.kind == "dense" for run in plan.runs) == 1
    assert [name for name in (e.name for e in plan.experiment.evaluation)] == ["bible", "udhr"]
    assert plan.experiment.evaluation[1].languages == list(demo.DEMO_UDHR_LANGUAGES)
    assert sum("2:4" in label for label in labels) == 1


def test_without_the_udhr_its_set_is_dropped_and_named(monkeypatch):
    monkeypatch.setattr("babelprune.data.udhr.udhr_available", lambda root=None: False)
    experiment, dropped = demo.demo_experiment()
    assert dropped == ("udhr",)
    assert [e["name"] for e in experiment["evaluation"]] == ["bible"]


def test_model_and_token_budget_replace_the_recipes(monkeypatch):
    monkeypatch.setattr("babelprune.data.udhr.udhr_available", lambda root=None: True)
    experiment, dropped = demo.demo_experiment(model="some/folder", max_tokens=40)
    assert dropped == ()
    assert experiment["models"] == ["some/folder"]
    assert [e["max_tokens"] for e in experiment["evaluation"]] == [40, 40]


def test_the_demo_on_the_cpu_keeps_its_keys_and_another_dtype_is_other_runs(monkeypatch, tmp_path):
    import yaml

    from babelprune.sweep.experiment import recipe_path
    from babelprune.sweep.runs import plan_experiment

    monkeypatch.setattr("babelprune.data.udhr.udhr_available", lambda root=None: True)

    def keys_and_labels(experiment: dict) -> list[tuple[str, str]]:
        path = tmp_path / "demo.yaml"
        path.write_text(yaml.safe_dump(experiment), encoding="utf-8")
        return [(run.key, run.label) for run in plan_experiment(path, check_data=False).runs]

    recipe = keys_and_labels(yaml.safe_load(recipe_path(demo.DEMO_RECIPE).read_text(encoding="utf-8")))
    assert keys_and_labels(demo.demo_experiment()[0]) == recipe
    low = keys_and_labels(demo.demo_experiment(dtype="bfloat16")[0])
    assert [label for _, label in low] == [f"{label} bfloat16" for _, label in recipe]
    assert not {key for key, _ in low} & {key for key, _ in recipe}


def test_a_non_positive_token_budget_is_refused():
    with pytest.raises(BabelpruneError, match="--max-tokens is 0"):
        demo.demo_experiment(max_tokens=0)


def test_an_out_folder_that_is_not_a_report_is_refused_before_any_work(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BabelpruneError, match="not a folder written by `babelprune report`"):
        demo.run_demo(out, model=str(tmp_path / "absent"))
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "mine.sqlite").exists()


@pytest.mark.real
def test_the_demo_runs_on_real_text_resumes_and_writes_the_report(tmp_path):
    """The whole main job on a tiny model over the real Bible (and UDHR when fetched) text, twice."""
    model = write_tiny_model(tmp_path / "tiny")
    out = tmp_path / "report"
    first = demo.run_demo(out, model=str(model), max_tokens=24)
    assert first.ok and first.report == out / "index.html"
    html = first.report.read_text(encoding="utf-8")
    with ResultsStore(first.store, create=False) as store:
        records = store.records()
    assert len(records) == 7 and {r.state for r in records} == {"done"}
    expected_sets = {"bible"} if first.dropped_sets else {"bible", "udhr"}
    assert all(set(r.evaluations) == expected_sets for r in records)
    assert len(records[0].evaluations["bible"].scores) == 22
    for record in records:
        assert record.label in html
    finished = {r.key: r.finished for r in records}

    # The last step: shrink for the calibration languages, beside the report and summarised on it.
    shrunk = demo.shrink_folder(out)
    summary = first.shrink
    assert summary is not None and "The smallest model for the calibration languages" in html
    if summary.record is not None:
        chosen = next(c for c in summary.record.candidates if c.number == summary.record.chosen)
        assert (shrunk / "shrink.json").is_file() and (shrunk / "index.html").is_file() and (shrunk / "model").is_dir()
        assert summary.record.settings.languages == ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
        assert [report.spec for report in summary.speeds] == [str(model), str(shrunk / "model")]
        assert chosen.label in html and f"../{shrunk.name}/index.html" in html
    else:  # nothing within the budget: the page says which candidate came closest, and no folder is written
        assert "No model was chosen" in html and "the closest" in summary.refusal and not shrunk.exists()
    with ShrinkScores(demo.shrink_store(out)) as scores:
        scored = len(scores)

    second = demo.run_demo(out, model=str(model), max_tokens=24)
    with ResultsStore(second.store, create=False) as store:
        again = store.records()
    assert {r.key: r.finished for r in again} == finished  # nothing was run twice
    assert second.report.is_file()
    with ShrinkScores(demo.shrink_store(out)) as scores:
        assert len(scores) == scored  # no candidate was scored twice
    assert (second.shrink.record is None) == (summary.record is None)


def test_a_shrink_folder_the_demo_did_not_write_is_refused_before_any_work(tmp_path):
    out = tmp_path / "report"
    mine = demo.shrink_folder(out)
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(BabelpruneError, match="was not written by `babelprune shrink`"):
        demo.run_demo(out, model=str(tmp_path / "absent"))
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not out.exists() and not (tmp_path / "report.sqlite").exists()


@pytest.mark.real
def test_the_demo_without_its_shrink_step_leaves_no_shrink_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr("babelprune.data.udhr.udhr_available", lambda root=None: False)
    model = write_tiny_model(tmp_path / "tiny")
    out = tmp_path / "report"
    outcome = demo.run_demo(out, model=str(model), max_tokens=12, shrink=None)
    assert outcome.ok and outcome.shrink is None
    assert "The smallest model for the calibration languages" not in outcome.report.read_text(encoding="utf-8")
    assert not demo.shrink_folder(out).exists() and not demo.shrink_store(out).exists()
