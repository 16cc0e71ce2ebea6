"""Opening a store changes nothing it refuses or only reads; saved records from a newer babelprune are refused.

The store is checked read-only before anything writes to it: an unrelated
SQLite database or an empty file is refused byte for byte as it was, the
readers (`runs`, `report`) never create, migrate or switch a store's
journal, and a store in a folder nobody may write to still opens for them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from babelprune.errors import BabelpruneError
from babelprune.report.records import SCHEMA_VERSION, EvalResult
from babelprune.sweep.store import STORE_SCHEMA_VERSION, ResultsStore
from tests import report_store as made
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus

REPO = Path(__file__).resolve().parent.parent


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    return lines[0]


def _unrelated_database(path: Path) -> Path:
    """Another program's SQLite file, in SQLite's default (rollback journal) mode."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE people (name TEXT)")
    db.execute("INSERT INTO people VALUES ('Ada')")
    db.commit()
    db.close()
    return path


def _command(kind: str, store: Path, tmp_path: Path) -> list[str]:
    if kind == "runs":
        return ["runs", str(store)]
    if kind == "report":
        return ["report", str(store), "--out", str(tmp_path / "page")]
    # The experiment only has to plan (an existing model folder, a corpus): the store is refused before any model loads.
    (tmp_path / "model").mkdir()
    corpus = write_tiny_corpus(tmp_path / "tiny.jsonl")
    path = write_experiment(tmp_path / "exp.yaml", experiment(tmp_path / "model", corpus, [{"kind": "dense"}]))
    return ["sweep", str(path), "--store", str(store)]


@pytest.mark.parametrize("kind", ["runs", "report", "sweep"])
def test_an_unrelated_sqlite_database_is_refused_byte_for_byte(monkeypatch, capsys, tmp_path, kind):
    store = _unrelated_database(tmp_path / "other.sqlite")
    before = _digest(store)
    args = _command(kind, store, tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert "not a babelprune results store" in _one_line(code, err)
    # Switching it to WAL mode rewrites two bytes of its header: the digest catches that.
    assert _digest(store) == before
    assert not (tmp_path / "other.sqlite-wal").exists() and not (tmp_path / "other.sqlite-shm").exists()
    assert sqlite3.connect(store).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("kind", ["runs", "report", "sweep"])
def test_an_empty_file_is_refused_and_stays_empty(monkeypatch, capsys, tmp_path, kind):
    store = tmp_path / "runs.sqlite"
    store.touch()
    args = _command(kind, store, tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, *args)
    line = _one_line(code, err)
    assert "empty file" in line and str(store) in line and "0 runs" not in out
    assert store.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("runs")) == ["runs.sqlite"]


def test_readers_never_create_a_store(tmp_path):
    with pytest.raises(BabelpruneError, match="No results store"):
        ResultsStore(tmp_path / "absent.sqlite", create=False)
    assert list(tmp_path.iterdir()) == []


def test_a_reader_opens_the_store_read_only(tmp_path):
    """The connection of a reader cannot write, and reading leaves the store's bytes as they were."""
    store = made.write_store(tmp_path / "runs.sqlite", [made.failed_record()])
    before = _digest(store)
    with ResultsStore(store, create=False) as results:
        assert [record.state for record in results.records()] == ["failed"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            results._db.execute("DELETE FROM runs")
    assert _digest(store) == before


def test_the_read_only_fallback_creates_no_files_and_changes_no_byte(tmp_path, monkeypatch):
    """Where SQLite cannot make its -wal/-shm files, the store is opened as immutable: nothing is written beside it."""
    from babelprune.sweep import store as store_module

    store = made.write_store(tmp_path / "runs.sqlite", [made.failed_record()])
    before = _digest(store)
    real = store_module._connect_read_only

    def no_shared_memory(path, immutable):
        if not immutable:  # what SQLite answers in a folder it may not write to
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(path, immutable)

    monkeypatch.setattr(store_module, "_connect_read_only", no_shared_memory)
    with ResultsStore(store, create=False) as results:
        assert [record.state for record in results.records()] == ["failed"]
    assert _digest(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def _without_write_permission() -> list[str] | None:
    """A command prefix under which the folder's permission bits apply (root ignores them unless it drops its capabilities)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"] if setpriv else None


@pytest.mark.parametrize("kind", ["runs", "report"])
def test_a_store_in_a_read_only_folder_opens_for_readers(tmp_path, kind):
    prefix = _without_write_permission()
    if prefix is None:
        pytest.skip("running as root without setpriv: a chmod 0555 folder stays writable")
    folder = tmp_path / "readonly"
    folder.mkdir()
    store = made.write_store(folder / "runs.sqlite", made.full_records())
    before = _digest(store)
    args = ["runs", str(store)] if kind == "runs" else ["report", str(store), "--out", str(tmp_path / "page")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "300", "OMP_NUM_THREADS": "1"}
    folder.chmod(0o555)
    try:
        # Proof that the folder really is read-only for the command (as root too, once its capabilities are dropped).
        probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"], capture_output=True)
        assert probe.returncode != 0 and b"Permission denied" in probe.stderr
        result = subprocess.run([*prefix, sys.executable, "-m", "babelprune.cli", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
    finally:
        folder.chmod(0o755)
    assert result.returncode == 0, result.stderr[-2000:]
    if kind == "runs":
        assert f"{len(made.full_records())} runs" in result.stdout and made.failed_record().key in result.stdout
    else:
        assert (tmp_path / "page" / "index.html").is_file()
    assert _digest(store) == before and sorted(p.name for p in folder.iterdir()) == ["runs.sqlite"]


# ----- version 1 stores: read as they are, migrated only by a sweep ---------------------------------------------

_VERSION_1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (key TEXT PRIMARY KEY, sweep TEXT NOT NULL, kind TEXT NOT NULL, label TEXT NOT NULL,
                   state TEXT NOT NULL, finished TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX runs_by_sweep ON runs (sweep, state);
INSERT INTO meta VALUES ('format', 'babelprune-results');
INSERT INTO meta VALUES ('schema_version', '1');
"""


def _version_1_store(path: Path) -> Path:
    """A store as babelprune wrote it before claims: no claims table, schema version 1, one failed run."""
    record = made.failed_record()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_VERSION_1)
    db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
               (record.key, record.sweep, record.kind, record.label, record.state, record.finished, record.model_dump_json()))
    db.close()
    return path


def _tables(path: Path) -> set[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def test_a_version_1_store_is_read_as_it_is(tmp_path):
    store = _version_1_store(tmp_path / "runs.sqlite")
    before = _digest(store)
    with ResultsStore(store, create=False) as results:
        assert [record.key for record in results.records()] == [made.failed_record().key]
    assert _digest(store) == before and "claims" not in _tables(store)


def test_a_version_1_store_gets_its_claims_table_when_a_sweep_opens_it(tmp_path):
    store = _version_1_store(tmp_path / "runs.sqlite")
    with ResultsStore(store) as results:
        assert results.get(made.failed_record().key) == made.failed_record()
        assert results.claim("k1").outcome == "claimed"
    assert "claims" in _tables(store)
    db = sqlite3.connect(store)
    assert db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0] == str(STORE_SCHEMA_VERSION)
    db.close()


# ----- saved records: a newer schema is one sentence ------------------------------------------------------------

def _eval_payload(version: int) -> dict:
    record = made.core_records()[0].evaluations
    return json.loads(next(iter(record.values())).to_json()) | {"schema_version": version}


def test_compare_refuses_a_result_from_a_newer_babelprune(monkeypatch, capsys, tmp_path):
    (tmp_path / "dense.json").write_text(json.dumps(_eval_payload(SCHEMA_VERSION)))
    (tmp_path / "new.json").write_text(json.dumps(_eval_payload(99)))
    code, _, err = run_cli(monkeypatch, capsys, "compare", str(tmp_path / "dense.json"), str(tmp_path / "new.json"))
    line = _one_line(code, err)
    assert "new.json was written by a newer babelprune (schema 99, this one reads up to 1)" in line and "upgrade" in line


def test_a_fine_tuning_result_from_a_newer_babelprune_is_refused(tmp_path):
    from babelprune.report.finetune_records import FinetuneResult

    payload = json.loads(made.finetune_record(0.5, 0).finetune.to_json()) | {"schema_version": 7}
    (tmp_path / "result.json").write_text(json.dumps(payload))
    with pytest.raises(BabelpruneError, match=r"newer babelprune \(schema 7, this one reads up to 1\)"):
        FinetuneResult.load(tmp_path / "result.json")


def test_a_result_of_this_version_still_loads(tmp_path):
    (tmp_path / "dense.json").write_text(json.dumps(_eval_payload(SCHEMA_VERSION)))
    assert EvalResult.load(tmp_path / "dense.json").schema_version == SCHEMA_VERSION


def test_a_store_nobody_writes_has_no_wal_files_beside_it_after_a_sweep_and_a_read(tmp_path):
    from babelprune.sweep.store import ResultsStore

    path = tmp_path / "s.sqlite"
    with ResultsStore(path) as store:
        assert (tmp_path / "s.sqlite-wal").exists()  # while a sweep writes: write-ahead log
        store.keys()
    with ResultsStore(path, create=False) as reader:
        assert reader.keys() == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]
