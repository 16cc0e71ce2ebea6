"""The results store: one SQLite file, one row per finished run, one transaction per row.

A sweep writes a `RunRecord` when a run ends (done or failed) and never
before, inside a single transaction, so a process killed at any moment
(`kill -9` included) leaves either the whole record or nothing: the next
invocation sees the run as not finished and runs it again. No server is
needed; several readers (`babelprune runs`, `babelprune report`) may look
at the file while a sweep writes to it (write-ahead log).

Several sweeps may share one store: a sweep claims a run (a `claims` row
naming its host, pid and a random token) before it starts it, in the
transaction that also checks the run is not done yet, and a background
thread refreshes the claim's heartbeat while the run goes on. Another sweep
skips a run whose claimer is alive, and takes the claim over when that
process is gone (its pid no longer runs on this host) or has not beaten for
`CLAIM_STALE_SECONDS`. The claim is dropped in the transaction that writes
the run's record, or when the run stops without one.

The file says whose it is: a `meta` table holds the format name and the
schema version, so a store from another program, or from a newer
babelprune, is refused in one sentence instead of being misread. That check
is made read-only, before anything writes: a file that is refused, and a
store that is only read (`ResultsStore(path, create=False)`), keep every
byte they had.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import ValidationError

from babelprune.cache import disk_full_error
from babelprune.errors import BabelpruneError
from babelprune.records.eval import now
# RunRecord lives with the other typed records, below the report package that reads it; it is
# re-exported here for code that imported it from the store.
from babelprune.records.run import RunRecord, RunState  # noqa: F401

STORE_FORMAT = "babelprune-results"
# 1: meta and runs; 2: claims (a version-1 store gets the table when a sweep opens it).
STORE_SCHEMA_VERSION = 2

# A claim whose heartbeat is older than this is taken over: its process is gone or hung (on another host,
# where its pid cannot be checked, this is the only sign). Many missed beats, so a busy machine is not taken for dead.
CLAIM_STALE_SECONDS = 120.0
HEARTBEAT_SECONDS = 15.0

SQLITE_HEADER = b"SQLite format 3\x00"

_TABLES_1 = [
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        key TEXT PRIMARY KEY,
        sweep TEXT NOT NULL,
        kind TEXT NOT NULL,
        label TEXT NOT NULL,
        state TEXT NOT NULL,
        finished TEXT NOT NULL,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs (sweep, state)",
]
_TABLES_2 = [
    """CREATE TABLE IF NOT EXISTS claims (
        key TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        token TEXT NOT NULL,
        claimed TEXT NOT NULL,
        heartbeat REAL NOT NULL
    )""",
]

ClaimOutcome = Literal["claimed", "done", "failed", "busy"]


@dataclass(frozen=True)
class Claim:
    """What `ResultsStore.claim` found.

    claimed: this process may run it now (`taken_from` names a dead claimer it replaced);
    done: it is done; failed: another process recorded it failed after this sweep looked (it is not retried twice);
    busy: another live process is running it (`holder` names it).
    """

    outcome: ClaimOutcome
    holder: str = ""
    taken_from: str = ""


class ResultsStore:
    """An open results store; use as a context manager or call `close()`.

    `create=True` (a sweep): a missing file is created, a version-1 store gets its claims table.
    `create=False` (readers): the store must exist and is opened read-only.
    """

    def __init__(self, path: Path, create: bool = True, *, stale_seconds: float = CLAIM_STALE_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.path = Path(path)
        self.writable = create
        self.stale_seconds, self.heartbeat_seconds = stale_seconds, heartbeat_seconds
        self.host, self.token = socket.gethostname(), secrets.token_hex(8)
        self._heartbeat: _Heartbeat | None = None
        self._db: sqlite3.Connection | None = None
        if not create:
            self._db, _ = open_read_only(self.path, writing=False)
            return
        if not self.path.exists():
            _create(self.path)
        check_store(self.path)  # read-only: nothing is written to a file that is not ours
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            if _disk_full(exc):
                raise disk_full_error(self.path) from None
            raise BabelpruneError(
                f"The results store {self.path} cannot be opened for writing ({exc}); make its folder writable or give "
                "another --store path."
            ) from None

    # ----- opening -----------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring a store of an older schema to this one, in one transaction (another sweep may do it at the same time)."""
        with self._transaction():
            meta = dict(self._db.execute("SELECT name, value FROM meta"))
            version = int(meta.get("schema_version", "0"))
            if version >= STORE_SCHEMA_VERSION:
                return
            for statement in _TABLES_2:
                self._db.execute(statement)
            self._db.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(STORE_SCHEMA_VERSION),))

    # ----- claims ------------------------------------------------------------------

    def claim(self, key: str, failed_seen: str | None = None) -> Claim:
        """Claim run `key` for this process, in one transaction with the check that nobody finished it.

        `failed_seen` is the `finished` time of the run's failed record when this sweep looked at the store
        (None if there was none): a failed record written since then is another process's fresh attempt, not
        retried here (it would fail the same way), while the one seen before is what this sweep came to retry.
        """
        self._need_writer()
        with self._transaction():
            row = self._db.execute("SELECT state, finished FROM runs WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == "done":
                return Claim("done")
            if row is not None and row[0] == "failed" and row[1] != failed_seen:
                return Claim("failed")
            held = self._db.execute("SELECT host, pid, token, heartbeat FROM claims WHERE key = ?", (key,)).fetchone()
            taken_from = ""
            if held is not None and held[2] != self.token:
                host, pid, _, beat = held
                if self._holder_alive(host, pid, beat):
                    return Claim("busy", holder=f"{host} pid {pid}")
                taken_from = f"{host} pid {pid}"
            self._db.execute("INSERT OR REPLACE INTO claims (key, host, pid, token, claimed, heartbeat) VALUES (?, ?, ?, ?, ?, ?)",
                             (key, self.host, os.getpid(), self.token, now(), time.time()))
        self._start_heartbeat()
        return Claim("claimed", taken_from=taken_from)

    def release(self, key: str) -> None:
        """Drop this process's claim on `key` (its run stopped without a record); best effort, as on a full disk."""
        try:
            self._db.execute("DELETE FROM claims WHERE key = ? AND token = ?", (key, self.token))
        except sqlite3.Error:
            pass  # the claim goes stale, or dies with this process, and is taken over

    def _holder_alive(self, host: str, pid: int, heartbeat: float) -> bool:
        if time.time() - heartbeat > self.stale_seconds:
            return False
        return host != self.host or _pid_alive(pid)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = _Heartbeat(self.path, self.token, self.heartbeat_seconds)

    # ----- writing -----------------------------------------------------------------

    def put(self, record: RunRecord) -> None:
        """Write one finished run and drop its claim, in one transaction (a later record of the same key replaces it).

        A failed record does not replace a done one: that can only be a late attempt, after another process
        took over a claim thought dead and finished the run.
        """
        self._need_writer()
        payload = record.model_dump_json()
        try:
            with self._transaction():
                row = self._db.execute("SELECT state FROM runs WHERE key = ?", (record.key,)).fetchone()
                if not (record.state == "failed" and row is not None and row[0] == "done"):
                    self._db.execute(
                        "INSERT OR REPLACE INTO runs (key, sweep, kind, label, state, finished, record) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (record.key, record.sweep, record.kind, record.label, record.state, record.finished, payload),
                    )
                self._db.execute("DELETE FROM claims WHERE key = ? AND token = ?", (record.key, self.token))
        except sqlite3.OperationalError as exc:
            if _disk_full(exc):
                raise disk_full_error(self.path) from None
            raise

    def _need_writer(self) -> None:
        if not self.writable:
            raise RuntimeError(f"{self.path} was opened read-only (create=False)")

    # ----- reading -----------------------------------------------------------------

    def keys(self, state: RunState | None = "done") -> set[str]:
        """Keys of the runs in `state` (all runs when None)."""
        if state is None:
            return {row[0] for row in self._db.execute("SELECT key FROM runs")}
        return {row[0] for row in self._db.execute("SELECT key FROM runs WHERE state = ?", (state,))}

    def finished_times(self, state: RunState) -> dict[str, str]:
        """When each run in `state` finished, by key."""
        return dict(self._db.execute("SELECT key, finished FROM runs WHERE state = ?", (state,)))

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
        """Stop the heartbeat and drop the claims still held (an interrupted sweep frees its runs at once)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
            try:
                self._db.execute("DELETE FROM claims WHERE token = ?", (self.token,))
            except sqlite3.Error:
                pass  # they go stale and are taken over
        if self.writable:
            self._leave_write_ahead_log()
        self._db.close()

    def _leave_write_ahead_log(self) -> None:
        """Put a store nobody else has open back in rollback mode, so the -wal and -shm files go.

        A read-only reader (`runs`, `report`) cannot remove them, so a store left
        in WAL mode would keep them beside it for good. The switch needs the only
        connection; with another sweep or a reader attached it fails at once and
        the store stays in WAL mode (the next sweep to open it switches anyway).
        """
        try:
            self._db.execute("PRAGMA busy_timeout = 0")
            self._db.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass

    def _close_quietly(self) -> None:
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.records())


# --------------------------------------------------------------------------- identity, read-only

def check_store(path: Path, writing: bool = True) -> int:
    """The schema version of the store at `path`, checked read-only; anything that is not a store of ours is one sentence.

    `writing`: the sentence's advice is for `sweep --store` rather than for a reader.
    """
    db, version = open_read_only(Path(path), writing)
    db.close()
    return version


def open_read_only(path: Path, writing: bool) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to the babelprune store at `path`, whose identity has been checked; nothing is written.

    SQLite reads a WAL store through -wal/-shm files beside it, which it creates if they are missing; in a folder
    it may not write to, it cannot, and the store is opened as immutable instead (nobody can be writing it there).
    """
    fix = "give another --store path" if writing else "give the --store of a `babelprune sweep` run"
    if not path.exists():
        raise BabelpruneError(f"No results store at {path}; give the --store of a `babelprune sweep` run.")
    if path.is_dir():
        raise BabelpruneError(f"{path} is a folder, not a results store; give the path of a .sqlite file.")
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise BabelpruneError(f"The results store {path} cannot be read ({exc.strerror}); check its permissions or {fix}.") from None
    if not header:
        raise BabelpruneError(f"{path} is an empty file, not a babelprune results store; {fix}.")
    if header != SQLITE_HEADER:
        raise BabelpruneError(f"{path} is not a babelprune results store (not an SQLite file); {fix}.")
    try:
        try:
            db = _connect_read_only(path, immutable=False)
        except sqlite3.OperationalError as exc:
            # Only where SQLite cannot make its -shm file: a store being written (locked, say) must not be read as
            # immutable, which ignores the writer and could read half of a checkpoint.
            if not any(sign in str(exc) for sign in ("readonly", "read-only", "unable to open")):
                raise
            db = _connect_read_only(path, immutable=True)
    except sqlite3.DatabaseError as exc:
        raise BabelpruneError(f"{path} is not a babelprune results store ({exc}); {fix}.") from None
    try:
        return db, _check_owner(db, path, fix)
    except BaseException:
        db.close()
        raise


def _connect_read_only(path: Path, immutable: bool) -> sqlite3.Connection:
    """Open `path` read-only (mode=ro, or immutable=1) and read its schema, so that a failure shows here."""
    uri = f"file:{quote(str(path.absolute()))}?" + ("immutable=1" if immutable else "mode=ro")
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db


def _check_owner(db: sqlite3.Connection, path: Path, fix: str) -> int:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"meta", "runs"} <= tables:
        raise BabelpruneError(f"{path} is an SQLite file but not a babelprune results store; {fix}.")
    meta = dict(db.execute("SELECT name, value FROM meta"))
    if meta.get("format") != STORE_FORMAT:
        raise BabelpruneError(f"{path} is not a babelprune results store (format {meta.get('format')!r}); {fix}.")
    version = int(meta.get("schema_version", "0"))
    if version > STORE_SCHEMA_VERSION:
        raise BabelpruneError(
            f"{path} was written by a newer babelprune (store schema {version}, this one reads "
            f"{STORE_SCHEMA_VERSION}); upgrade babelprune or {fix}."
        )
    return version


def _create(path: Path) -> None:
    """A new store at `path`, whole or not at all, and never over a file another process put there meanwhile.

    It is built under a temporary name and linked into place: nobody sees a half-made (or empty) store, and
    when two sweeps create the same store at once, one link wins and the other opens the winner's file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    try:
        try:
            db = sqlite3.connect(partial, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("BEGIN IMMEDIATE")
                for statement in _TABLES_1 + _TABLES_2:
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(STORE_SCHEMA_VERSION),))
                db.execute("COMMIT")
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            if _disk_full(exc):
                raise disk_full_error(path) from None
            raise BabelpruneError(f"The results store {path} cannot be created ({exc}); give another --store path.") from None
        try:
            os.link(partial, path)
        except FileExistsError:
            pass  # another sweep created it first: its store is used
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(partial, path)
    finally:
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)


# --------------------------------------------------------------------------- claims' helpers

class _Heartbeat:
    """A daemon thread that refreshes the heartbeat of this process's claims, on its own connection, until stopped."""

    def __init__(self, path: Path, token: str, seconds: float) -> None:
        self.path, self.token, self.seconds = path, token, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="babelprune-store-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            while not self._stop.wait(self.seconds):
                try:
                    db.execute("UPDATE claims SET heartbeat = ? WHERE token = ?", (time.time(), self.token))
                except sqlite3.Error:
                    pass  # a busy or full disk: the next beat tries again, and a claim is stale only after many
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie, killed but not yet reaped, does not)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would end the process on Windows: rely on the heartbeat there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


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
