"""The results store: round trip, one row per key, and refusal of files that are not babelprune's."""

from __future__ import annotations

import sqlite3

import pytest

from babelprune.errors import BabelpruneError
from babelprune.report.records import EvalResult, LMScore, ModelInfo
from babelprune.sweep.store import STORE_SCHEMA_VERSION, ResultsStore, RunRecord
from tests.sweep_fixtures import FullDisk


def _eval_result(nll: float) -> EvalResult:
    score = LMScore(language="sw", name="Swahili", script="Latn", resource="low", n_windows=2, n_tokens=10,
                    n_bytes=40, nll_nats=nll, window_nll=[nll / 2, nll / 2], window_bytes=[20, 20])
    return EvalResult(model=ModelInfo(spec="m", architecture="A", n_parameters=1, block_sparsity=0.0),
                      corpus="bible", split="eval", scores=[score], created="2026-01-01T00:00:00+00:00")  # fixed: two builds compare equal


def _record(key: str, state="done", nll=12.0, finished="2026-01-01T00:00:00+00:00") -> RunRecord:
    return RunRecord(key=key, sweep="s", kind="oneshot", label=f"run {key}", config={"method": "wanda", "sparsity": 0.5},
                     state=state, evaluations={"bible": _eval_result(nll)} if state == "done" else {},
                     error=None if state == "done" else "boom", finished=finished)


def test_round_trip_keeps_every_field(tmp_path):
    path = tmp_path / "runs.sqlite"
    with ResultsStore(path) as store:
        store.put(_record("a"))
    with ResultsStore(path, create=False) as store:
        back = store.get("a")
    assert back == _record("a")
    assert back.evaluations["bible"].scores[0].bits_per_byte == pytest.approx(12.0 / 0.6931471805599453 / 40)


def test_a_key_has_one_row_and_the_later_record_wins(tmp_path):
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        store.put(_record("a", state="failed"))
        store.put(_record("b", finished="2026-01-02T00:00:00+00:00"))
        store.put(_record("a", finished="2026-01-03T00:00:00+00:00"))
        assert len(store) == 2
        assert store.keys("done") == {"a", "b"}
        assert store.keys("failed") == set()
        assert [r.key for r in store.records()] == ["b", "a"]  # in the order they finished


def test_state_and_sweep_filters(tmp_path):
    with ResultsStore(tmp_path / "runs.sqlite") as store:
        store.put(_record("a"))
        store.put(_record("f", state="failed"))
        assert [r.key for r in store.records(state="failed")] == ["f"]
        assert store.records(sweep="other") == []


def test_missing_store_is_refused_when_it_must_exist(tmp_path):
    with pytest.raises(BabelpruneError, match="No results store"):
        ResultsStore(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("just some notes\n" * 50)
    with pytest.raises(BabelpruneError, match="not a babelprune results store"):
        ResultsStore(path)
    assert path.read_text() == "just some notes\n" * 50


def test_another_programs_sqlite_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(BabelpruneError, match="not a babelprune results store"):
        ResultsStore(path)


def test_a_store_from_a_newer_babelprune_is_refused(tmp_path):
    path = tmp_path / "runs.sqlite"
    ResultsStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(STORE_SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(BabelpruneError, match="newer babelprune"):
        ResultsStore(path)


def test_a_full_disk_is_one_sentence_and_keeps_what_was_stored(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    store = ResultsStore(path)
    store.put(_record("a"))

    real = store._db
    monkeypatch.setattr(store, "_db", FullDisk(real))
    with pytest.raises(BabelpruneError, match="No space left"):
        store.put(_record("b"))
    monkeypatch.setattr(store, "_db", real)
    assert store.keys() == {"a"}
    assert not real.in_transaction
    store.close()
