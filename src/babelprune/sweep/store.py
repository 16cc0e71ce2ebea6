"""The results store: one SQLite file, one row per finished run, one transaction per row.

A sweep writes a `RunRecord` when a run ends (done or failed) and never
before, inside a single transaction, so a process killed at any moment
(`kill -9` included) leaves either the whole record or nothing: the next
invocation sees the run as not finished and runs it again. No server is
needed; several readers (`babelprune runs`, `babelprune report`) may look
at the file while a sweep writes to it (write-ahead log).

The file says whose it is: a `meta` table holds the format name and the
schema version, so a store from another program, or from a newer
babelprune, is refused in one sentence instead of being misread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from babelprune.cache import disk_full_error
from babelprune.errors import BabelpruneError
from babelprune.report.finetune_records import FinetuneResult
from babelprune.report.records import EvalResult, now
from babelprune.report.task_prune_records import TaskPruneResult

STORE_FORMAT = "babelprune-results"
STORE_SCHEMA_VERSION = 1

RunState = Literal["done", "failed"]


class RunRecord(BaseModel):
    """What one finished run leaves in the store.

    `config` is the run's whole configuration (the dict its key is the hash
    of); `evaluations` maps an evaluation set's name ("bible", "udhr"...) to
    its per-language result; `pruning` is the pruning record of the model
    (method, config, sparsity per layer...), None for a dense run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    sweep: str  # the experiment's name
    kind: str  # "dense", "oneshot", "structured", "finetune", "trim"...
    label: str  # a short human name of the run, e.g. "wanda 50%"
    config: dict[str, Any]
    state: RunState
    evaluations: dict[str, EvalResult] = Field(default_factory=dict)
    finetune: FinetuneResult | None = None
    pruning: dict[str, Any] | None = None
    task_pruning: TaskPruneResult | None = None  # task-structured and task-dynamic runs: outcomes item by item
    measurements: dict[str, Any] = Field(default_factory=dict)  # speed, size, seconds of each stage...
    error: str | None = None  # the failed run's error, one line
    environment: dict[str, Any] = Field(default_factory=dict)  # commit, versions, threads, host
    started: str = ""
    finished: str = Field(default_factory=now)
    seconds: float = 0.0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    state TEXT NOT NULL,
    finished TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs (sweep, state);
"""


class ResultsStore:
    """An open results store; use as a context manager or call `close()`."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise BabelpruneError(f"No results store at {self.path}; give the --store of a `babelprune sweep` run.")
        if self.path.is_dir():
            raise BabelpruneError(f"{self.path} is a folder, not a results store; give the path of a .sqlite file.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if fresh:
                self._initialise()
            else:
                self._check_owner()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            if _disk_full(exc):
                raise disk_full_error(self.path) from None
            raise BabelpruneError(
                f"{self.path} is not a babelprune results store ({exc}); give another --store path."
            ) from None

    # ----- opening -----------------------------------------------------------------

    def _initialise(self) -> None:
        # One script, one transaction: a store is created whole or not at all.
        self._db.executescript(
            "BEGIN IMMEDIATE;" + _SCHEMA
            + f"INSERT OR REPLACE INTO meta VALUES ('format', '{STORE_FORMAT}');"
            + f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{STORE_SCHEMA_VERSION}');COMMIT;"
        )

    def _check_owner(self) -> None:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "runs"} <= tables:
            raise BabelpruneError(f"{self.path} is an SQLite file but not a babelprune results store; give another --store path.")
        meta = dict(self._db.execute("SELECT name, value FROM meta"))
        if meta.get("format") != STORE_FORMAT:
            raise BabelpruneError(f"{self.path} is not a babelprune results store (format {meta.get('format')!r}); give another --store path.")
        version = int(meta.get("schema_version", "0"))
        if version > STORE_SCHEMA_VERSION:
            raise BabelpruneError(
                f"{self.path} was written by a newer babelprune (store schema {version}, this one reads "
                f"{STORE_SCHEMA_VERSION}); upgrade babelprune or give another --store path."
            )

    # ----- writing -----------------------------------------------------------------

    def put(self, record: RunRecord) -> None:
        """Write one finished run in one transaction (a later record of the same key replaces it)."""
        payload = record.model_dump_json()
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO runs (key, sweep, kind, label, state, finished, record) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.key, record.sweep, record.kind, record.label, record.state, record.finished, payload),
                )
        except sqlite3.OperationalError as exc:
            if _disk_full(exc):
                raise disk_full_error(self.path) from None
            raise

    # ----- reading -----------------------------------------------------------------

    def keys(self, state: RunState | None = "done") -> set[str]:
        """Keys of the runs in `state` (all runs when None)."""
        if state is None:
            return {row[0] for row in self._db.execute("SELECT key FROM runs")}
        return {row[0] for row in self._db.execute("SELECT key FROM runs WHERE state = ?", (state,))}

    def records(self, sweep: str | None = None, state: RunState | None = None) -> list[RunRecord]:
        """Stored runs in the order they finished, optionally of one sweep and/or one state."""
        query, params = "SELECT key, record FROM runs", []
        clauses = []
        if sweep is not None:
            clauses.append("sweep = ?")
            params.append(sweep)
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY finished, key"
        return [self._parse(key, text) for key, text in self._db.execute(query, params)]

    def get(self, key: str) -> RunRecord | None:
        row = self._db.execute("SELECT key, record FROM runs WHERE key = ?", (key,)).fetchone()
        return self._parse(*row) if row else None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def _parse(self, key: str, text: str) -> RunRecord:
        try:
            return RunRecord.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            raise BabelpruneError(f"Run {key} in {self.path} cannot be read ({first}); delete that run or use another --store.") from None

    # ----- plumbing ----------------------------------------------------------------

    def _transaction(self):
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.records())


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")


def _disk_full(exc: BaseException) -> bool:
    return "disk is full" in str(exc) or "disk I/O error" in str(exc)
