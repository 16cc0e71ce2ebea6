"""The li2022 recipe, the task-structured and task-dynamic run kinds through a sweep, and `train-dynamic --config`."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from babelprune.data import tasks as task_registry
from babelprune.finetune import task_structured as pipeline
from babelprune.report.html import write_report
from babelprune.sweep.experiment import recipe_path
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests.cli_runner import run_cli
from tests.test_report_html import parse
from tests.test_task_structured import TinyGenre
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_li2022_recipe_is_the_documented_grid():
    plan = plan_experiment(recipe_path("li2022"), check_data=False)
    assert len(plan.runs) == 61 and plan.duplicates == 0
    kinds = Counter(run.kind for run in plan.runs)
    assert kinds == {"task-structured": 60, "task-dynamic": 1}
    prunes = [run.verb.prune for run in plan.runs if run.kind == "task-structured"]
    grid = Counter((",".join(p.units), p.importance, p.setting) for p in prunes)
    for units in ("heads", "ffn", "ffn,heads"):
        assert grid[(units, "magnitude", "shared")] == 4
        for importance in ("gradient", "l0"):
            assert grid[(units, importance, "shared")] == grid[(units, importance, "per-language")] == 4
    assert {p.sparsity for p in prunes if p.units == ["heads"]} == {0.1, 0.15, 0.2, 0.25}
    assert {p.sparsity for p in prunes if p.units != ["heads"]} == {0.2, 0.3, 0.4, 0.5}
    # every run fine-tunes the same dense model, so the sweep trains it once
    assert len({run.verb.finetune.model_dump_json() for run in plan.runs}) == 1
    (dynamic,) = [run for run in plan.runs if run.kind == "task-dynamic"]
    assert dynamic.verb.dynamic.levels == (0.0, 0.2, 0.3, 0.4, 0.5) and dynamic.verb.dynamic.units == ("ffn", "heads")
    assert "task-structured ffn,heads l0 per-language 40%" in {run.label for run in plan.runs}


@pytest.mark.real
def test_the_recipe_dry_run_lists_every_run(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "--recipe", "li2022", "--dry-run")
    assert code == 0, err
    assert "61 of 61 to run" in out and "task-dynamic" in out and list(tmp_path.iterdir()) == []


EXPERIMENT = """
name: tiny-li
models: [{model}]
runs:
  - kind: task-structured
    task_structured:
      task: tiny-genre
      finetune: {{max_steps: 2, batch_size: 4, max_length: 32, text_prefix: "", eval_batch_size: 8}}
      prune: {{units: [ffn], importance: [gradient, l0], sparsity: 0.25, l0_steps: 3, refinetune_steps: 1, tolerance: 0.05}}
  - kind: task-dynamic
    task_dynamic:
      task: tiny-genre
      finetune: {{max_steps: 2, batch_size: 4, max_length: 32, text_prefix: "", eval_batch_size: 8}}
      dynamic: {{levels: [0.25], steps: 2, batch_size: 4, max_length: 32, text_prefix: "", units: [ffn]}}
"""


def test_a_sweep_runs_both_kinds_stores_outcomes_and_reports_them(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "tiny-bert"
    tiny_model("bert").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    monkeypatch.setattr(task_registry, "get_task", lambda name, **options: TinyGenre())
    monkeypatch.setattr(pipeline, "get_task", lambda name, **options: TinyGenre())
    (tmp_path / "exp.yaml").write_text(EXPERIMENT.format(model=folder))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "exp.yaml")
    assert code == 0, err + out
    with ResultsStore(tmp_path / "tiny-li.sqlite", create=False) as store:
        records = {record.label: record for record in store.records()}
    assert set(records) == {"task-structured ffn gradient shared 25%", "task-structured ffn l0 shared 25%",
                            "task-dynamic ffn magnitude levels 0,0.25"}
    assert all(record.state == "done" for record in records.values())
    gradient = records["task-structured ffn gradient shared 25%"]
    assert gradient.task_pruning.dense == records["task-structured ffn l0 shared 25%"].task_pruning.dense  # trained once
    assert gradient.measurements["parameters"] < gradient.measurements["dense_parameters"]
    assert [m.name for m in records["task-dynamic ffn magnitude levels 0,0.25"].task_pruning.models] == ["0", "0.25"]
    assert len(list((tmp_path / "tiny-li-work" / "task-dense").glob("dense-*/dense.json"))) == 1
    tables = parse(write_report(tmp_path / "tiny-li.sqlite", tmp_path / "report")).tables
    assert {"task-structured change", "l0 vs gradient", "task speed size", "dynamic vs separate"} <= set(tables)


DYNAMIC_YAML = "levels: [0.25, 0.5]\nsteps: 2\nbatch_size: 2\nimportance: magnitude\n"
LM_DATA = ["--calib", "tests/fixtures/tiny.jsonl", "--calib-langs", "en,fr", "--samples", "2", "--seq-len", "8"]


def test_train_dynamic_reads_its_whole_config_from_a_file(monkeypatch, capsys, tmp_path):
    import pathlib

    repo = pathlib.Path(__file__).resolve().parent.parent
    lm = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(lm)
    char_tokenizer().save_pretrained(lm)
    config = tmp_path / "dyn.yaml"
    config.write_text(DYNAMIC_YAML)
    monkeypatch.chdir(repo)
    out = tmp_path / "dyn"
    code, _, err = run_cli(monkeypatch, capsys, "train-dynamic", "--model", str(lm), *LM_DATA, "--config", str(config), "--out", str(out))
    assert code == 0, err
    record = json.loads((out / "babelprune_dynamic.json").read_text())
    assert record["levels"] == [0.0, 0.25, 0.5] and record["steps"] == 2 and record["config"]["batch_size"] == 2
    code, _, err = run_cli(monkeypatch, capsys, "train-dynamic", "--model", str(lm), *LM_DATA, "--config", str(config),
                           "--steps", "3", "--out", str(tmp_path / "other"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--steps" in lines[0] and not (tmp_path / "other").exists()
