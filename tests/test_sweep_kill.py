"""A sweep process killed with SIGKILL mid-run loses nothing and duplicates nothing: the next invocation finishes the rest."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus, write_tiny_model

REPO = Path(__file__).resolve().parent.parent
# 4 methods x 6 sparsities + dense: enough runs that the sweep is still going when the first one is stored.
RUNS = [
    {"kind": "dense"},
    {"kind": "oneshot", "prune": {"method": ["magnitude", "wanda", "sparsegpt", "mwanda"],
                                  "sparsity": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]}},
]


def _done_keys(path: Path) -> set[str]:
    """The done keys, read with plain sqlite3 while the sweep writes (nothing of babelprune's in between)."""
    if not path.exists():
        return set()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return {row[0] for row in db.execute("SELECT key FROM runs WHERE state = 'done'")}
        finally:
            db.close()
    except sqlite3.OperationalError:  # the store is being created
        return set()


def test_kill_9_mid_sweep_then_resume(monkeypatch, capsys, tmp_path):
    model = write_tiny_model(tmp_path / "model")
    corpus = write_tiny_corpus(tmp_path / "tiny.jsonl")
    data = experiment(model, corpus, RUNS)
    data["evaluation"][0]["max_tokens"] = 512  # a few tenths of a second per run
    path = write_experiment(tmp_path / "exp.yaml", data)
    store = tmp_path / "runs.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "sweep.log").open("wb")  # a file, not a pipe: nobody reads while it runs
    process = subprocess.Popen([sys.executable, "-m", "babelprune.cli", "sweep", str(path), "--store", str(store)],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not _done_keys(store) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    log.close()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "sweep.log").read_text(errors="replace")[-2000:]

    planned = {run.key for run in plan_experiment(path).runs}
    assert len(planned) == 25
    with ResultsStore(store, create=False) as results:
        before = {record.key: record for record in results.records()}  # every stored record parses whole
    assert before and set(before) < planned, "the kill came after the sweep had finished: nothing was tested"
    assert all(record.state == "done" and record.evaluations["tiny"].scores for record in before.values())

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--store", str(store))
    assert code == 0, err
    assert f"{len(planned) - len(before)} done now, {len(before)} done before" in out
    with ResultsStore(store, create=False) as results:
        after = {record.key: record for record in results.records()}
        rows = sqlite3.connect(store).execute("SELECT key, COUNT(*) FROM runs GROUP BY key").fetchall()
    assert set(after) == planned and all(count == 1 for _, count in rows) and len(rows) == len(planned)
    for key, record in before.items():  # the runs done before the kill were not redone
        assert after[key].finished == record.finished and after[key] == record
