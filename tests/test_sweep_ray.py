"""The Ray backend: the same store as the local backend on the same grid; a missing Ray or an unreachable cluster is one sentence."""

from __future__ import annotations

import socket
import sys

import pytest

from babelprune.sweep.local import run_local
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus, write_tiny_model

RUNS = [
    {"kind": "dense"},
    {"kind": "oneshot", "prune": {"method": ["wanda", "sparsegpt"], "sparsity": 0.5}},
    {"kind": "structured", "structured": {"units": ["ffn"], "importance": "activation", "sparsity": 0.25}},
]


@pytest.fixture(scope="module")
def experiment_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-sweep")
    model = write_tiny_model(root / "model")
    corpus = write_tiny_corpus(root / "tiny.jsonl")
    data = experiment(model, corpus, RUNS) | {"resources": {"cpus": 1}}
    return write_experiment(root / "exp.yaml", data)


def _metrics(store_path) -> dict[str, list[float]]:
    with ResultsStore(store_path, create=False) as store:
        assert all(record.state == "done" for record in store.records()), [r.error for r in store.records()]
        return {
            record.key: [score.nll_nats for result in record.evaluations.values() for score in result.scores]
            + [record.measurements["block_sparsity"], record.measurements["parameters"]]
            for record in store.records()
        }


@pytest.mark.ray
def test_ray_backend_writes_the_same_store_as_the_local_backend(tmp_path, experiment_file):
    pytest.importorskip("ray")
    from babelprune.sweep.ray_backend import ray_cluster, run_ray

    plan = plan_experiment(experiment_file)
    with ResultsStore(tmp_path / "local.sqlite") as store:
        run_local(plan, store, progress=False)
    with ray_cluster(cpus=2) as ray, ResultsStore(tmp_path / "ray.sqlite") as store:
        summary = run_ray(ray, plan, store, progress=False)
        hosts = {record.environment["host"] for record in store.records()}
    assert len(summary.done) == 4 and not summary.failed
    local, remote = _metrics(tmp_path / "local.sqlite"), _metrics(tmp_path / "ray.sqlite")
    assert set(local) == set(remote) == {run.key for run in plan.runs}
    for key in local:
        assert remote[key] == pytest.approx(local[key], abs=1e-5, rel=1e-5), key
    assert hosts == {socket.gethostname()}


def test_ray_not_installed_is_one_sentence_and_writes_nothing(monkeypatch, capsys, tmp_path, experiment_file):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "sweep", str(experiment_file), "--backend", "ray", "--store", str(tmp_path / "s.sqlite"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "Ray is not installed; pip install 'babelprune[ray]'" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_cluster_is_one_sentence_and_writes_nothing(monkeypatch, capsys, tmp_path, experiment_file):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    address = f"ray://127.0.0.1:{port}"
    code, _, err = run_cli(monkeypatch, capsys, "sweep", str(experiment_file), "--backend", "ray", "--address", address,
                           "--store", str(tmp_path / "s.sqlite"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"Cannot reach a Ray cluster at {address}" in lines[0] and "leave --address out" in lines[0]
    assert list(tmp_path.iterdir()) == []
