"""Shared pieces of the benchmarks.

* dense-weight snapshots and a peak-memory sampler;
* `write_result_table`: every benchmark writes its table into
  ``docs/results/<name>.md`` with a header saying how it was made (command,
  date, commit, machine), so that every figure in docs/ can be rerun;
* `timed_median`: warm-up, then the median of at least three runs, the rule
  for both sides of every time ratio;
* `cached_stage`: a stage result reused only when everything that decides it
  (its settings, the model, the code) is unchanged.

Every script that `make benchmarks` runs carries a module-level ``BENCHMARK``
dict (see run_all.py).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from babelprune.cache import atomic_write_text
from babelprune.prune.engine import restore_linears, snapshot_linears

REPO = Path(__file__).resolve().parent.parent
# A smoke run with a small budget sets BENCHMARK_RESULTS_DIR, so that its tables stay out of docs/.
RESULTS_DIR = Path(os.environ.get("BENCHMARK_RESULTS_DIR") or REPO / "docs" / "results")
MIN_REPEATS = 3  # a median needs at least three runs to shrug off one disturbed run

# The dense weights are saved and put back between methods by the engine's own helpers.
snapshot = snapshot_linears
restore = restore_linears


def rss() -> int:
    return psutil.Process().memory_info().rss


class PeakRSS:
    """Samples the process's resident memory every few milliseconds while active."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


# ----- sweeps -------------------------------------------------------------------------


def prune_each(loaded, dense_weights: dict, calibration, configs: list[tuple[str, object]], measure: Callable[[], object]) -> dict:
    """label -> (measure() of the model pruned from the dense weights with that config, pruning seconds)."""
    from babelprune.prune.engine import prune

    results = {}
    for label, config in configs:
        restore(loaded.model, dense_weights)
        started = time.perf_counter()
        prune(loaded, config, calibration, progress=False)
        seconds = time.perf_counter() - started  # the pruning alone, not the evaluation after it
        results[label] = (measure(), seconds)
        print(f"{label}: pruned in {seconds:.0f} s", flush=True)
    return results


# ----- timing -----------------------------------------------------------------------


def repeats_arg(text: str) -> int:
    """argparse type for --repeats: an integer of at least MIN_REPEATS."""
    value = int(text)
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(f"at least {MIN_REPEATS} repeats are needed for a median, got {value}")
    return value


def seconds_of(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def timed_median(call: Callable[[], object], repeats: int = MIN_REPEATS, warmup: int = 1) -> float:
    """Median wall time of `call` over `repeats` runs, after `warmup` untimed runs."""
    if repeats < MIN_REPEATS:
        raise ValueError(f"at least {MIN_REPEATS} repeats are needed for a median, got {repeats}")
    for _ in range(warmup):
        call()
    return statistics.median(seconds_of(call) for _ in range(repeats))


# ----- provenance of a result table ---------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def code_version(paths: tuple[str, ...] = ("src", "benchmarks")) -> str:
    """The commit (git rev-parse HEAD), with "+dirty" when `paths` hold uncommitted changes."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty else "")


def source_fingerprint(paths: tuple[str, ...] = ("src",)) -> str:
    """A hash of the code that computes the figures: the content of every file under `paths` as it is on disk.

    Content, not commits: the same code gives the same hash whether or not it
    is committed yet. A benchmark whose figures come from part of the
    package may name just that part, so that unrelated changes elsewhere do
    not discard its cache.
    """
    try:
        listed = _git("ls-files", "--cached", "--others", "--exclude-standard", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    digest = hashlib.sha256()
    for name in sorted(set(listed.splitlines())):
        path = REPO / name
        if path.is_file():  # a tracked file deleted on disk is simply gone from the code
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# The code a run uses is the code it imported at its start; others may commit while it runs.
_VERSION_AT_START = code_version()


def commit_field() -> str:
    """The commit at the start of this process, and the one at write time when they differ."""
    now = code_version()
    return _VERSION_AT_START if now == _VERSION_AT_START else f"{_VERSION_AT_START} at start, {now} when written"


def machine_fields(threads: int | None = None) -> dict[str, str]:
    """CPU count, load average, torch threads (the ones the measurement used, when given), torch version, platform."""
    import torch

    return {
        "CPUs": str(os.cpu_count()),
        # Other jobs on the machine move absolute timings; the load at write time says how busy it was.
        "load average": " / ".join(f"{load:.1f}" for load in os.getloadavg()),
        "torch threads": str(threads if threads is not None else torch.get_num_threads()),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def invoked_command() -> str:
    """The command line of this process, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return shlex.join(["python", shown, *sys.argv[1:]])


def result_header(title: str, command: str, threads: int | None = None, now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    machine = ", ".join(f"{key} {value}" for key, value in machine_fields(threads).items())
    return "\n".join([
        f"# {title}",
        "",
        "Written by a benchmark script; do not edit by hand, rerun the command.",
        "",
        f"- command: `{command}`",
        f"- date: {now.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {commit_field()}",
        f"- machine: {machine}",
        "",
    ])


def write_result_table(name: str, title: str, markdown_body: str, command: str | None = None,
                       threads: int | None = None, directory: Path | None = None) -> Path:
    """Write ``<directory>/<name>.md`` (docs/results/ by default) atomically: header, then `markdown_body`."""
    path = Path(directory or RESULTS_DIR) / f"{name}.md"
    header = result_header(title, command or invoked_command(), threads)
    atomic_write_text(path, header + "\n" + markdown_body.strip() + "\n")
    print(f"table written: {path}", flush=True)
    return path


def figure_path(name: str, directory: Path | None = None) -> Path:
    """Where a benchmark's PNG goes (next to its table), e.g. docs/results/prune_quality-50.png."""
    path = Path(directory or RESULTS_DIR) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ----- cached stages ------------------------------------------------------------------


def stage_key(fields: dict) -> str:
    """A short hash of everything that decides a stage (JSON-serialisable values)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _changed_fields(old: dict, new: dict) -> list[str]:
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def cached_key_matches(path: Path, fields: dict, label: str) -> bool:
    """True when `path` (a JSON file with "key" and "fields") was made with these `fields`; say why not."""
    if not path.is_file():
        return False
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        old_key, old_fields = stored["key"], stored.get("fields", {})
    except (ValueError, KeyError, TypeError):
        print(f"{label}: cached file {path} has no settings key; rerunning", flush=True)
        return False
    if old_key == stage_key(fields):
        print(f"{label}: reusing {path} (same settings, key {old_key})", flush=True)
        return True
    changed = ", ".join(_changed_fields(old_fields, json.loads(json.dumps(fields, default=str)))) or "unknown"
    print(f"{label}: cached result was made with other settings (changed: {changed}); rerunning", flush=True)
    return False


def cached_stage(path: Path, fields: dict, run: Callable[[], dict], label: str | None = None) -> dict:
    """The result of a stage: from `path` if it was made with the same `fields`, else `run()` (saved to `path`).

    `fields` holds everything that decides the result: the script arguments
    that reach the stage, the model spec and the code (`source_fingerprint()`).
    """
    label = label or path.stem
    if cached_key_matches(path, fields, label):
        return json.loads(path.read_text(encoding="utf-8"))["result"]
    started = time.perf_counter()
    result = run() | {"seconds": round(time.perf_counter() - started, 1)}
    record = {"key": stage_key(fields), "fields": fields, "result": result}
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return result


def keyed_folder(folder: Path, fields: dict, label: str, key_file: str = "benchmark_key.json") -> None:
    """Make `folder` belong to these `fields`: a folder made with other settings is removed (and said so).

    For stages that cache a whole folder (a fine-tuning run with its
    checkpoints): a matching folder is kept, so an interrupted run resumes.
    """
    folder = Path(folder)
    key_path = folder / key_file
    if folder.exists() and not cached_key_matches(key_path, fields, label):
        why = "other settings" if key_path.is_file() else "no settings key"
        print(f"{label}: {folder} was made with {why}; removing it to run again", flush=True)
        shutil.rmtree(folder)
    if not key_path.is_file():
        record = {"key": stage_key(fields), "fields": fields}
        atomic_write_text(key_path, json.dumps(record, indent=2, default=str) + "\n")


def require_llama_cpp(purpose: str) -> None:
    """Stop the benchmark in one sentence naming babelprune's llama extra when llama-cpp-python cannot run here."""
    from babelprune.errors import BabelpruneError
    from babelprune.formats.gguf_quant import llama_cpp_bindings

    try:
        llama_cpp_bindings(purpose)
    except BabelpruneError as error:
        sys.exit(str(error))
