"""Claims: several sweeps on one store run each run once, and a sweep that dies mid-run loses nothing.

The first tests drive `ResultsStore.claim` directly; the last ones start two
real `babelprune sweep` processes on one store, with `execute` wrapped to
log every run's start and end (and, for one of them, to hang in a run until
it is killed with SIGKILL).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from babelprune.sweep import local
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore
from tests import report_store as made
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus, write_tiny_model

REPO = Path(__file__).resolve().parent.parent


def _claims(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT key, host, pid, token FROM claims ORDER BY key").fetchall()
    finally:
        db.close()


def _plant_claim(path: Path, key: str, host: str, pid: int, heartbeat: float) -> None:
    """A claim row as another process would have left it."""
    db = sqlite3.connect(path)
    db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, 'someone-else', '2026-01-01T00:00:00+00:00', ?)",
               (key, host, pid, heartbeat))
    db.commit()
    db.close()


def _dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----- the claim, one transaction ---------------------------------------------------------------------------------

def test_a_live_claim_keeps_other_sweeps_off_until_its_record_is_written(tmp_path):
    path = tmp_path / "runs.sqlite"
    record = made.failed_record().model_copy(update={"state": "done", "error": None})
    with ResultsStore(path) as first, ResultsStore(path) as second:
        assert first.claim(record.key).outcome == "claimed"
        busy = second.claim(record.key)
        assert busy.outcome == "busy" and busy.holder == f"{first.host} pid {os.getpid()}"
        first.put(record)
        assert _claims(path) == []  # dropped in the transaction that wrote the record
        assert second.claim(record.key).outcome == "done" and first.claim(record.key).outcome == "done"


def test_a_released_claim_is_free_at_once(tmp_path):
    path = tmp_path / "runs.sqlite"
    with ResultsStore(path) as first, ResultsStore(path) as second:
        assert first.claim("k").outcome == "claimed"
        first.release("k")
        assert second.claim("k").outcome == "claimed"
        assert [row[3] for row in _claims(path)] == [second.token]


def test_the_claim_of_a_dead_process_of_this_host_is_taken_over(tmp_path):
    path = tmp_path / "runs.sqlite"
    with ResultsStore(path) as store:
        pid = _dead_pid()
        _plant_claim(path, "k", store.host, pid, heartbeat=time.time())  # a fresh heartbeat: only the pid says it died
        claim = store.claim("k")
        assert claim.outcome == "claimed" and claim.taken_from == f"{store.host} pid {pid}"
        assert _claims(path) == [("k", store.host, os.getpid(), store.token)]


def test_a_claim_from_another_host_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path):
    path = tmp_path / "runs.sqlite"
    with ResultsStore(path, stale_seconds=60) as store:
        # pid 1 runs on every host: on another host the pid proves nothing, the heartbeat decides.
        _plant_claim(path, "k", "elsewhere", 1, heartbeat=time.time() - 10)
        assert store.claim("k").outcome == "busy"
        _plant_claim(path, "k", "elsewhere", 1, heartbeat=time.time() - 61)
        claim = store.claim("k")
        assert claim.outcome == "claimed" and claim.taken_from == "elsewhere pid 1"


def test_the_heartbeat_thread_keeps_a_claim_fresh(tmp_path):
    path = tmp_path / "runs.sqlite"
    with ResultsStore(path, heartbeat_seconds=0.05) as store:
        store.claim("k")
        db = sqlite3.connect(path)
        first = db.execute("SELECT heartbeat FROM claims").fetchone()[0]
        deadline = time.monotonic() + 20
        while db.execute("SELECT heartbeat FROM claims").fetchone()[0] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.execute("SELECT heartbeat FROM claims").fetchone()[0] > first
        db.close()
    assert _claims(path) == []  # closing the store drops what it still held


def test_a_failed_run_is_retried_once_per_sweep_not_after_another_sweep_just_failed_it(tmp_path):
    path = tmp_path / "runs.sqlite"
    failed = made.failed_record()
    with ResultsStore(path) as store:
        store.put(failed)
        assert store.claim(failed.key, failed_seen=failed.finished).outcome == "claimed"  # the failure this sweep came to retry
        store.release(failed.key)
        assert store.claim(failed.key, failed_seen=None).outcome == "failed"  # written since this sweep looked


def test_a_late_failed_record_does_not_replace_a_done_one(tmp_path):
    path = tmp_path / "runs.sqlite"
    failed = made.failed_record()
    done = failed.model_copy(update={"state": "done", "error": None})
    with ResultsStore(path) as store:
        store.put(done)
        store.put(failed)
        assert store.get(failed.key).state == "done"


def test_a_run_stopped_by_an_exception_releases_its_claim(tmp_path, monkeypatch):
    model = write_tiny_model(tmp_path / "model")
    corpus = write_tiny_corpus(tmp_path / "tiny.jsonl")
    plan = plan_experiment(write_experiment(tmp_path / "exp.yaml", experiment(model, corpus, [{"kind": "dense"}])))

    def interrupted(session, spec, workdir):
        assert _claims(tmp_path / "runs.sqlite")  # claimed before it started
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "execute", interrupted)
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        with pytest.raises(KeyboardInterrupt):
            local.run_local(plan, store, progress=False)
        assert _claims(tmp_path / "runs.sqlite") == []  # released before the store closed


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray),
                                     pytest.param("local-failed", id="local-the-other-sweep-fails-it")])
def test_a_sweep_waits_for_the_run_another_sweep_holds_and_does_not_redo_it(tmp_path, monkeypatch, backend):
    """Another sweep (a thread with its own store) holds one run; this sweep does the rest, waits, and leaves that run to it."""
    import threading

    model = write_tiny_model(tmp_path / "model")
    corpus = write_tiny_corpus(tmp_path / "tiny.jsonl")
    runs = [{"kind": "dense"}, {"kind": "oneshot", "prune": {"method": "magnitude", "sparsity": [0.3, 0.5]}}]
    data = experiment(model, corpus, runs) | {"resources": {"cpus": 1}}
    plan = plan_experiment(write_experiment(tmp_path / "exp.yaml", data))
    path, held = tmp_path / "runs.sqlite", plan.runs[1]
    state = "failed" if backend == "local-failed" else "done"
    planted = made.failed_record().model_copy(update={"key": held.key, "label": "written by the other sweep", "state": state})
    claimed, waiting = threading.Event(), threading.Event()

    def other_sweep():
        with ResultsStore(path) as other:
            assert other.claim(held.key).outcome == "claimed"
            claimed.set()
            waiting.wait(timeout=300)  # until this sweep says it waits for the run
            other.put(planted)

    real_announce = local.SweepClaims.announce

    def announce(self):
        real_announce(self)
        waiting.set()

    monkeypatch.setattr(local.SweepClaims, "announce", announce)
    ResultsStore(path).close()
    thread = threading.Thread(target=other_sweep)
    thread.start()
    assert claimed.wait(timeout=60)
    with ResultsStore(path) as store:
        if backend == "ray":
            pytest.importorskip("ray")
            from babelprune.sweep.ray_backend import ray_cluster, run_ray

            with ray_cluster(cpus=1) as ray:
                summary = run_ray(ray, plan, store, progress=False, wait_seconds=0.05)
        else:
            summary = local.run_local(plan, store, progress=False, wait_seconds=0.05)
        thread.join(timeout=60)
        records = {record.key: record for record in store.records()}
    assert waiting.is_set() and set(records) == {run.key for run in plan.runs}
    assert records[held.key].label == "written by the other sweep"  # not run again here
    assert set(summary.done) == {run.key for run in plan.runs} - {held.key}
    assert summary.failed == ([held.key] if state == "failed" else [])  # the plan's failed run is this sweep's failure too


# ----- two real sweep processes on one store ----------------------------------------------------------------------

# `babelprune sweep`, with every run's start and end appended to $SWEEP_LOG. Before its first run a process waits
# for the other one to reach its own first run, so that the two sweeps really overlap; with $SWEEP_HANG set, the
# process hangs in its second run (after touching $SWEEP_HANG) until it is killed.
LOGGED_SWEEP = '''
import os, sys, time
from pathlib import Path

from babelprune.sweep import local

log, ready = Path(os.environ["SWEEP_LOG"]), Path(os.environ["SWEEP_READY"])
real, started = local.execute, []


def note(line):
    with log.open("a") as out:
        out.write(f"{line} {os.getpid()}\\n")


def execute(session, spec, workdir):
    if not started:
        (ready / str(os.getpid())).touch()
        deadline = time.monotonic() + 180
        while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    started.append(spec.key)
    note(f"start {spec.key}")
    if os.environ.get("SWEEP_HANG") and len(started) == 2:
        Path(os.environ["SWEEP_HANG"]).write_text(spec.key)
        time.sleep(600)
    record = real(session, spec, workdir)
    note(f"end {spec.key}")
    return record


local.execute = execute
from babelprune import cli

sys.argv = ["babelprune", *sys.argv[1:]]
cli.main()
'''

RUNS = [{"kind": "dense"}, {"kind": "oneshot", "prune": {"method": ["magnitude", "wanda"], "sparsity": [0.3, 0.5, 0.7]}}]
SUMMARY = re.compile(r"(\d+) runs: (\d+) done now, (\d+) done before, (?:(\d+) done by another sweep, )?(\d+) failed")


@pytest.fixture
def two_sweeps(tmp_path):
    """Start two logged sweeps of one 7-run experiment on one store; yields (processes, plan, paths)."""
    model = write_tiny_model(tmp_path / "model")
    corpus = write_tiny_corpus(tmp_path / "tiny.jsonl")
    exp = write_experiment(tmp_path / "exp.yaml", experiment(model, corpus, RUNS))
    script = tmp_path / "logged_sweep.py"
    script.write_text(LOGGED_SWEEP)
    (tmp_path / "ready").mkdir()
    paths = {"store": tmp_path / "runs.sqlite", "log": tmp_path / "runs.log", "hang": tmp_path / "hung", "tmp": tmp_path}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "SWEEP_LOG": str(paths["log"]), "SWEEP_READY": str(tmp_path / "ready")}
    processes = []

    def start(name: str, hang: bool = False):
        out = (tmp_path / f"{name}.out").open("wb")  # a file, not a pipe: nobody reads while it runs
        extra = {"SWEEP_HANG": str(paths["hang"])} if hang else {}
        process = subprocess.Popen([sys.executable, str(script), "sweep", str(exp), "--store", str(paths["store"])],
                                   cwd=tmp_path, env=env | extra, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        processes.append(process)
        return process

    yield start, plan_experiment(exp), paths
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _output(tmp_path: Path, name: str) -> str:
    return " ".join((tmp_path / f"{name}.out").read_text(errors="replace").split())


def _log(path: Path) -> tuple[Counter, Counter, dict[str, set[str]]]:
    """How many times each key started and ended, and which pids ran what."""
    starts, ends, pids = Counter(), Counter(), {}
    for line in path.read_text().splitlines():
        event, key, pid = line.split()
        (starts if event == "start" else ends)[key] += 1
        pids.setdefault(pid, set()).add(key)
    return starts, ends, pids


def _stored(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, COUNT(*) FROM runs WHERE state = 'done' GROUP BY key"))
    finally:
        db.close()


def test_two_sweeps_on_one_store_run_each_run_once(two_sweeps):
    start, plan, paths = two_sweeps
    first, second = start("first"), start("second")
    assert first.wait(timeout=300) == 0, _output(paths["tmp"], "first")[-2000:]
    assert second.wait(timeout=300) == 0, _output(paths["tmp"], "second")[-2000:]
    planned = {run.key for run in plan.runs}
    starts, ends, pids = _log(paths["log"])
    assert set(starts) == planned and set(starts.values()) == {1} and ends == starts  # every run, once
    assert len(pids) == 2 and all(pids.values())  # both sweeps did part of the work
    assert _stored(paths["store"]) == {key: 1 for key in planned} and _claims(paths["store"]) == []
    # Each sweep ends only once every run is done, and says how many the other one did.
    for name, pid in (("first", first.pid), ("second", second.pid)):
        match = SUMMARY.search(_output(paths["tmp"], name))
        assert match, _output(paths["tmp"], name)
        planned_count, now, before, other, failed = (int(group or 0) for group in match.groups())
        assert (planned_count, before, failed) == (7, 0, 0)
        assert now == len(pids[str(pid)]) and other == 7 - now


def test_a_sweep_killed_mid_run_loses_nothing_the_other_takes_its_run_over(two_sweeps):
    start, plan, paths = two_sweeps
    doomed, survivor = start("doomed", hang=True), start("survivor")
    deadline = time.monotonic() + 240
    while not paths["hang"].exists() and doomed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    hung = paths["hang"].read_text()  # the run the doomed sweep holds a claim on, mid-run
    # The survivor does everything else, then waits for the hung run: its claimer is alive.
    while "being run by another sweep" not in _output(paths["tmp"], "survivor") and time.monotonic() < deadline:
        assert survivor.poll() is None, _output(paths["tmp"], "survivor")[-2000:]
        time.sleep(0.05)
    assert hung not in _stored(paths["store"])
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    assert survivor.wait(timeout=240) == 0, _output(paths["tmp"], "survivor")[-2000:]
    out = _output(paths["tmp"], "survivor")
    assert re.search(r"\b\d+ run\(s\) are being run by another sweep on this store", out) and f"taking over {hung}" in out
    planned = {run.key for run in plan.runs}
    starts, ends, pids = _log(paths["log"])
    assert set(ends) == planned and set(ends.values()) == {1}  # every run finished once, none lost
    assert starts == ends + Counter({hung: 1})  # only the killed run was started twice
    assert hung in pids[str(survivor.pid)] and hung in pids[str(doomed.pid)]
    assert _stored(paths["store"]) == {key: 1 for key in planned} and _claims(paths["store"]) == []
