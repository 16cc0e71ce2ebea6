"""Sweep run kinds come from one registry: a kind registered in a test is planned and run like a built-in one.

The toy kinds below are registered only inside a fixture, after the planner,
the runner and the experiment file's shapes were imported, and unregistered
afterwards. That an experiment file may name them, that the plan keys and
labels them and that `babelprune sweep` runs them shows that adding a run
kind is one registration: no Literal, key table or branch to extend.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

import babelprune.version
from babelprune.errors import BabelpruneError
from babelprune.sweep.kinds import RUN_KINDS, TASK_KINDS, Kind, register
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus, write_tiny_model

# Keys and labels of this experiment, computed with the code as it was before run kinds became a
# registry (the version pinned, so that a release does not change them): the registry must key and
# label every built-in kind exactly as the branches on kind names did.
PINNED_EXPERIMENT = """
name: pinned
models: [gemma3-270m]
calibration: {corpus: bible, languages: [en, fr], samples: 2, seq_len: 32}
evaluation:
  - {name: bible, corpus: bible, languages: [en, fr], max_tokens: 64}
runs:
  - kind: dense
  - kind: oneshot
    prune: {method: [magnitude, wanda, mwanda], sparsity: 0.5}
  - kind: oneshot
    prune: {method: sparsegpt, pattern: "2:4"}
  - kind: structured
    structured: {units: [ffn], importance: [magnitude, gradient], sparsity: 0.3}
  - kind: trim
    trim: {languages: [en]}
  - kind: finetune
    finetune: {task: bible-genre}
  - kind: task-structured
    task_structured: {prune: {importance: magnitude}}
  - kind: task-dynamic
"""
PINNED_RUNS = [
    ("dense", "dense", "7025a07553e5d3a6"),
    ("oneshot", "magnitude 50%", "aa7d80b2b7e39746"),
    ("oneshot", "wanda 50%", "8abe677ae5902f20"),
    ("oneshot", "mwanda 50% cwl", "5649b0d6be4545ea"),
    ("oneshot", "sparsegpt 2:4", "1dd79f485a1a77ef"),
    ("structured", "structured ffn magnitude 30%", "45b38ed0981b5d00"),
    ("structured", "structured ffn gradient 30%", "d051da5292e17ca5"),
    ("trim", "trim en", "fa0f27602b1b2b98"),
    ("finetune", "finetune bible-genre dense seed 0", "b3acbf49e68f0134"),
    ("task-structured", "task-structured ffn,heads magnitude shared 30%", "b9938b3638f845c5"),
    ("task-dynamic", "task-dynamic ffn,heads magnitude levels 0,0.3,0.5,0.7", "7999861a7e168326"),
]


def test_the_built_in_kinds_keep_their_keys_and_labels(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no local folder named like the model or corpus
    monkeypatch.setattr(babelprune.version, "__version__", "0.0.0-pinned")
    path = tmp_path / "pinned.yaml"
    path.write_text(PINNED_EXPERIMENT, encoding="utf-8")
    plan = plan_experiment(path, check_data=False)
    assert [(run.kind, run.label, run.key) for run in plan.runs] == PINNED_RUNS


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scale: float = 1.0


@pytest.fixture
def toy_kinds():
    """Register `toy` (scored on the evaluation sets, reads calibration) and `toy-task` (a task kind) for one test."""
    assert "toy" not in RUN_KINDS and "toy-task" not in RUN_KINDS
    before = dict(RUN_KINDS)
    seen: list[tuple[str, float, int | None]] = []

    def apply(loaded, verb, calibration):
        seen.append(("toy", verb.scale, calibration.ids.shape[0]))
        return {"toy_scale": verb.scale}

    def run_task(spec, workdir):
        seen.append(("toy-task", spec.verb.scale, None))
        return {"measurements": {"toy_task_scale": spec.verb.scale}}

    register(Kind("toy", key="toy", config=ToyConfig, label=lambda verb: (["toy", f"x{verb.scale:g}"], {"scale"}),
                  apply=apply, uses_calibration=lambda verb: True))
    register(Kind("toy-task", key="toy_task", config=ToyConfig, label=lambda verb: (["toy-task", f"x{verb.scale:g}"], {"scale"}),
                  run_task=run_task))
    yield seen
    # Other tests see the registry as the package defines it.
    RUN_KINDS.clear()
    RUN_KINDS.update(before)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-kind-assets")
    return write_tiny_model(root / "model"), write_tiny_corpus(root / "tiny.jsonl")


def _sweep(monkeypatch, capsys, tmp_path, data):
    path = write_experiment(tmp_path / "exp.yaml", data)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--store", str(tmp_path / "runs.sqlite"))
    assert code == 0, err
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        return plan_experiment(path), {record.label: record for record in store.records()}


def test_a_registered_kind_is_planned_and_run(toy_kinds, monkeypatch, capsys, tmp_path, assets):
    model, corpus = assets
    data = experiment(model, corpus, [{"kind": "toy", "toy": {"scale": [1, 2]}}])
    plan, records = _sweep(monkeypatch, capsys, tmp_path, data)
    assert [run.label for run in plan.runs] == ["toy x1", "toy x2"]
    assert all(run.calibration is not None and run.config["verb"] in ({"scale": 1.0}, {"scale": 2.0}) for run in plan.runs)
    assert sorted(toy_kinds) == [("toy", 1.0, 4), ("toy", 2.0, 4)]  # 2 windows of each of 2 calibration languages
    assert set(records) == {"toy x1", "toy x2"}
    for run in plan.runs:
        record = records[run.label]
        assert record.state == "done" and record.kind == "toy" and record.key == run.key
        assert record.measurements["toy_scale"] == run.verb.scale and set(record.evaluations) == {"tiny"}


def test_a_registered_task_kind_runs_without_the_sweep_loading_a_model(toy_kinds, monkeypatch, capsys, tmp_path, assets):
    _, corpus = assets
    not_a_model = tmp_path / "empty-folder"  # loading it would fail the run
    not_a_model.mkdir()
    data = experiment(not_a_model, corpus, [{"kind": "toy-task", "toy_task": {"scale": 3}}]) | {"evaluation": []}
    assert "toy-task" in TASK_KINDS and "toy" not in TASK_KINDS
    plan, records = _sweep(monkeypatch, capsys, tmp_path, data)
    (run,) = plan.runs
    assert run.evaluation == () and run.config["evaluation"] is None and run.calibration is None
    assert toy_kinds == [("toy-task", 3.0, None)]
    assert records["toy-task x3"].state == "done" and records["toy-task x3"].measurements["toy_task_scale"] == 3.0


def _plan_text(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return plan_experiment(path, check_data=False)


HEAD = "name: x\nmodels: [gemma3-270m]\nevaluation: [{name: e, corpus: bible}]\nruns:\n"


def test_the_experiment_file_checks_kinds_and_keys_against_the_registry(toy_kinds, tmp_path):
    with pytest.raises(BabelpruneError) as raised:
        _plan_text(tmp_path, HEAD + "  - kind: toys\n")
    assert str(raised.value).startswith("exp.yaml line 5: runs[0].kind: input should be 'dense', 'oneshot', 'structured', "
                                        "'trim', 'finetune', 'task-structured', 'task-dynamic', 'toy' or 'toy-task' (given 'toys')")
    with pytest.raises(BabelpruneError, match=r"^exp.yaml line 5: runs\[0\]: a 'dense' run has no 'toy' \(it takes no config\)"):
        _plan_text(tmp_path, HEAD + "  - kind: dense\n    toy: {scale: 2}\n")
    with pytest.raises(BabelpruneError, match=r"^exp.yaml line 7: runs\[0\].toy.scal: unknown key 'scal'; the keys here are: scale"):
        _plan_text(tmp_path, HEAD + "  - kind: toy\n    toy:\n      scal: 2\n")
    with pytest.raises(BabelpruneError, match=r"^exp.yaml line 6: runs\[0\].toyy: unknown key 'toyy'; the keys here are: "
                                              r"calibration, device, dtype, finetune, kind, prune, structured, task_dynamic, task_structured, "
                                              r"toy, toy_task, trim; fix it"):  # the key is quoted, not its value
        _plan_text(tmp_path, HEAD + "  - kind: toy\n    toyy: 2\n")
    with pytest.raises(BabelpruneError, match=r"^exp.yaml line 5: runs\[0\].kind: input should be .* or 'toy-task'; fix it"):
        _plan_text(tmp_path, HEAD + "  - kind: [toy]\n")


def test_an_unregistered_kind_is_refused(tmp_path):
    with pytest.raises(BabelpruneError, match=r"runs\[0\].kind: input should be .* or 'task-dynamic' \(given 'toy'\)"):
        _plan_text(tmp_path, HEAD + "  - kind: toy\n")


def test_a_kind_gives_one_way_to_run():
    with pytest.raises(ValueError, match="exactly one of apply and run_task"):
        register(Kind("half", label=lambda verb: (["half"], set())))
    assert "half" not in RUN_KINDS
