"""The local backend on a tiny model: records, resume, failed runs, bad stores and a full disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from babelprune.sweep import local
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests.cli_runner import run_cli
from tests.sweep_fixtures import FullDisk, experiment, write_experiment, write_tiny_corpus, write_tiny_model

RUNS = [
    {"kind": "dense"},
    {"kind": "oneshot", "prune": {"method": ["magnitude", "wanda"], "sparsity": 0.5}},
    {"kind": "structured", "structured": {"units": ["ffn"], "importance": "magnitude", "sparsity": 0.5}},
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-assets")
    return write_tiny_model(root / "model"), write_tiny_corpus(root / "tiny.jsonl")


@pytest.fixture
def counted(monkeypatch):
    """The keys `execute` was called with, in order."""
    calls: list[str] = []
    real = local.execute

    def execute(session, spec, workdir):
        calls.append(spec.key)
        return real(session, spec, workdir)

    monkeypatch.setattr(local, "execute", execute)
    return calls


def _sweep(monkeypatch, capsys, tmp_path, data, *extra):
    path = write_experiment(tmp_path / "exp.yaml", data)
    monkeypatch.chdir(tmp_path)
    return run_cli(monkeypatch, capsys, "sweep", str(path), "--store", str(tmp_path / "runs.sqlite"), *extra)


def test_records_hold_the_whole_run(monkeypatch, capsys, tmp_path, assets):
    model, corpus = assets
    code, out, err = _sweep(monkeypatch, capsys, tmp_path, experiment(model, corpus, RUNS))
    assert code == 0, err
    plan = plan_experiment(tmp_path / "exp.yaml")
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        records = {record.label: record for record in store.records()}
    assert set(records) == {"dense", "magnitude 50%", "wanda 50%", "structured ffn magnitude 50%"}
    for run in plan.runs:
        record = records[run.label]
        assert record.key == run.key and record.config == run.config and record.kind == run.kind and record.state == "done"
        assert record.sweep == "tiny" and set(record.evaluations) == {"tiny"}
        assert [score.language for score in record.evaluations["tiny"].scores] == ["en", "sw"]
        assert {"commit", "babelprune", "torch", "transformers", "threads", "host", "python"} <= set(record.environment)
        assert {"prune_seconds", "eval_seconds", "parameters", "block_sparsity"} <= set(record.measurements)
    assert records["dense"].pruning is None
    assert records["wanda 50%"].pruning["method"] == "wanda" and records["wanda 50%"].measurements["block_sparsity"] == 0.5
    structured = records["structured ffn magnitude 50%"]
    assert structured.pruning["method"] == "structured-magnitude"
    assert structured.measurements["parameters"] < records["dense"].measurements["parameters"]
    assert "4 runs: 4 done now, 0 done before, 0 failed" in out


def test_each_run_starts_from_the_dense_model(monkeypatch, capsys, tmp_path, assets):
    """Dense after prunings and a trim (which shrink a copy) scores exactly as a dense run alone.

    The dense run after the others also reuses the windows they tokenized, and the trim (another tokenizer) does not.
    """
    model, corpus = assets
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trim = {"kind": "trim", "trim": {"corpus": str(corpus), "languages": ["en"], "split": "all"}}
    after = [trim, *reversed(RUNS)]  # trim, structured, oneshot..., then dense
    assert _sweep(monkeypatch, capsys, tmp_path / "a", experiment(model, corpus, after))[0] == 0
    assert _sweep(monkeypatch, capsys, tmp_path / "b", experiment(model, corpus, [{"kind": "dense"}]))[0] == 0
    dense = []
    for folder in ("a", "b"):
        with ResultsStore(tmp_path / folder / "runs.sqlite", create=False) as store:
            (record,) = [record for record in store.records() if record.kind == "dense"]
            dense.append([score.nll_nats for score in record.evaluations["tiny"].scores])
    assert dense[0] == dense[1]


def test_a_second_sweep_runs_only_what_is_not_done(monkeypatch, capsys, tmp_path, assets, counted):
    model, corpus = assets
    data = experiment(model, corpus, RUNS)
    assert _sweep(monkeypatch, capsys, tmp_path, data)[0] == 0
    assert len(counted) == 4
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        finished = {record.key: record.finished for record in store.records()}
    code, out, _ = _sweep(monkeypatch, capsys, tmp_path, data)
    assert code == 0 and len(counted) == 4 and "0 done now, 4 done before" in out
    data["runs"] = RUNS + [{"kind": "oneshot", "prune": {"method": "sparsegpt"}}]
    assert _sweep(monkeypatch, capsys, tmp_path, data)[0] == 0
    assert len(counted) == 5
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        assert len(store) == 5
        assert {key: store.get(key).finished for key in finished} == finished  # the done runs were not redone


def test_a_failed_run_is_recorded_and_the_others_go_on(monkeypatch, capsys, tmp_path, assets):
    model, corpus = assets
    runs = [{"kind": "oneshot", "prune": {"method": "wanda"}, "calibration": {"corpus": str(corpus), "samples": 5000, "seq_len": 16}},
            {"kind": "dense"}]
    code, out, err = _sweep(monkeypatch, capsys, tmp_path, experiment(model, corpus, runs))
    assert code == 1 and "1 run(s) failed" in err
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        failed, done = store.records(state="failed"), store.records(state="done")
    assert [record.label for record in done] == ["dense"]
    assert len(failed) == 1 and failed[0].label == "wanda 50%" and failed[0].evaluations == {}
    assert "calibration tokens" in failed[0].error and "\n" not in failed[0].error
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_cli(monkeypatch, capsys, "runs", str(tmp_path / "runs.sqlite"))
    assert code == 0 and failed[0].key in out and "failed" in out and "calibration tokens" in out
    assert done[0].key in out and "dense" in out


def test_a_model_that_does_not_load_fails_its_runs_only(monkeypatch, capsys, tmp_path, assets):
    model, corpus = assets
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    data = experiment(model, corpus, [{"kind": "dense"}]) | {"models": [str(broken), str(model)]}
    code, _, _ = _sweep(monkeypatch, capsys, tmp_path, data)
    assert code == 1
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        states = {record.label: record.state for record in store.records()}
    assert states == {f"dense ({broken})": "failed", f"dense ({model})": "done"}


def test_a_store_that_is_not_babelprunes_is_refused_and_left_alone(monkeypatch, capsys, tmp_path, assets):
    model, corpus = assets
    (tmp_path / "runs.sqlite").write_text("my notes\n")
    code, _, err = _sweep(monkeypatch, capsys, tmp_path, experiment(model, corpus, RUNS))
    assert code == 2 and "not a babelprune results store" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "runs.sqlite").read_text() == "my notes\n"


def test_a_store_from_a_newer_babelprune_is_refused(monkeypatch, capsys, tmp_path, assets):
    model, corpus = assets
    ResultsStore(tmp_path / "runs.sqlite").close()
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    db.commit()
    db.close()
    code, _, err = _sweep(monkeypatch, capsys, tmp_path, experiment(model, corpus, RUNS))
    assert code == 2 and "newer babelprune" in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_stops_the_sweep_in_one_sentence_and_keeps_what_was_stored(monkeypatch, capsys, tmp_path, assets, counted):
    model, corpus = assets
    real_put = ResultsStore.put
    puts: list[str] = []

    def put(self, record):
        puts.append(record.key)
        if len(puts) == 2:  # the disk fills up after the first run is stored
            self._db = FullDisk(self._db)
        return real_put(self, record)

    monkeypatch.setattr(ResultsStore, "put", put)
    code, _, err = _sweep(monkeypatch, capsys, tmp_path, experiment(model, corpus, RUNS))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "No space left" in lines[0], err
    assert len(counted) == 2  # the sweep stopped: no run after the one it could not store
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        assert store.keys(None) == {puts[0]}
        assert store.get(puts[0]).state == "done"


def test_runs_of_a_missing_store_is_one_sentence(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "runs", str(tmp_path / "absent.sqlite"))
    assert code == 2 and "No results store" in err and not (tmp_path / "absent.sqlite").exists()


def test_address_needs_the_ray_backend(monkeypatch, capsys, tmp_path, assets):
    model, corpus = assets
    code, _, err = _sweep(monkeypatch, capsys, tmp_path, experiment(model, corpus, RUNS), "--address", "auto")
    assert code == 2 and "--backend ray" in err and not (tmp_path / "runs.sqlite").exists()


def test_a_finetune_entry_runs_the_fine_tuning_and_stores_its_result(monkeypatch, capsys, tmp_path, other_tiny_folder, assets):
    _, corpus = assets
    base = {"max_steps": 2, "batch_size": 4, "max_train_examples": 8, "max_eval_examples": 2, "languages": ["en", "sw"],
            "perturbations": [], "checkpoint_every": 1, "max_length": 48}
    wikiann = str(Path(__file__).parent / "fixtures" / "tasks" / "wikiann")
    runs = [{"kind": "finetune", "finetune": {"task": "wikiann", "task_options": {"source": wikiann},
                                              "config": base | {"gmp": [None, {"final_sparsity": 0.5, "start": 0.0, "end": 1.0}]}}}]
    data = experiment(other_tiny_folder, corpus, runs) | {"evaluation": []}
    code, out, err = _sweep(monkeypatch, capsys, tmp_path, data)
    assert code == 0, err
    with ResultsStore(tmp_path / "runs.sqlite", create=False) as store:
        records = {record.label: record for record in store.records()}
    assert set(records) == {"finetune wikiann dense seed 0", "finetune wikiann gmp 50% seed 0"}
    pruned = records["finetune wikiann gmp 50% seed 0"]
    assert pruned.finetune.sparsity == 0.5 and pruned.finetune.achieved_sparsity == 0.5 and pruned.finetune.steps == 2
    assert {score.language for score in pruned.finetune.scores} == {"en", "sw"}
    assert pruned.pruning == {"method": "gmp", "sparsity": 0.5} and pruned.evaluations == {}
    assert records["finetune wikiann dense seed 0"].finetune.method == "dense"
    assert not (tmp_path / "runs-work").exists() or not any((tmp_path / "runs-work").iterdir())  # checkpoints dropped


def test_runs_record_the_commit_the_sweep_started_with(monkeypatch, tmp_path, assets):
    """The process runs the code it imported at its start: a commit made while it runs must not be recorded."""
    from babelprune.sweep import execute as execute_module

    head = ["commit-at-start"]
    monkeypatch.setattr(execute_module, "_git_commit", lambda: head[0])
    real = local.execute

    def execute_after_a_commit(session, spec, workdir):
        head[0] = "commit-made-during-the-sweep"
        return real(session, spec, workdir)

    monkeypatch.setattr(local, "execute", execute_after_a_commit)
    execute_module.environment.cache_clear()
    model, corpus = assets
    path = write_experiment(tmp_path / "exp.yaml", experiment(model, corpus, RUNS[:2]))
    try:
        with ResultsStore(tmp_path / "runs.sqlite") as store:
            local.run_local(plan_experiment(path), store, progress=False)
            recorded = {record.environment["commit"] for record in store.records()}
    finally:
        execute_module.environment.cache_clear()
    assert recorded == {"commit-at-start"}
