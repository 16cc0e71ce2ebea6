"""One run of a sweep, on a model loaded once for all the runs of that model.

`ModelSession` holds the loaded model, a copy of its dense block weights and
the calibration windows already built; `execute(session, spec)` puts the
dense weights back, runs the spec's kind (its `apply`, registered in
babelprune.sweep.kinds), evaluates the result on every evaluation set and
returns a `RunRecord`. Kinds that change the model's shape (structured
pruning, vocabulary trimming) work on a deep copy, so the session's model
stays the dense one; task kinds run on their own (`run_task`).

A run that raises is returned as a "failed" record with its error on one
line, and the sweep goes on. A full disk is not a run's failure: it stops
the sweep (one sentence), since every later run would fail the same way.
"""

from __future__ import annotations

import copy
import functools
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from babelprune.cache import disk_full_error, is_disk_full
from babelprune.errors import BabelpruneError, one_line
from babelprune.records.eval import EvalResult, now
from babelprune.records.run import RunRecord
from babelprune.sweep.experiment import CalibrationSpec
from babelprune.sweep.kinds import run_kind
from babelprune.sweep.runs import RunSpec


class ModelSession:
    """A model loaded once in one placement, and what its runs share: its dense weights, corpora and calibration windows."""

    def __init__(self, spec: str, device: str = "cpu", dtype: str = "float32") -> None:
        from babelprune.api import load_model
        from babelprune.prune.engine import snapshot_linears

        self.spec = spec
        self.loaded = load_model(spec, dtype, device)  # a device this machine lacks: one sentence, every run of it fails
        self.dense = snapshot_linears(self.loaded.model)
        self._original = (self.loaded.tokenizer, self.loaded.pruning, self.loaded.mask_bank)
        self._calibrations: dict[str, Any] = {}
        self._corpora: dict[str, Any] = {}
        self.windows: dict = {}  # evaluation windows of the session's own tokenizer (babelprune.api.evaluate)

    @property
    def tokenizer(self):
        return self._original[0]

    def fresh(self, private: bool = False):
        """The loaded model with its dense weights back; a deep copy when the run will change its shape."""
        from babelprune.models.base import LoadedModel
        from babelprune.prune.engine import restore_linears

        restore_linears(self.loaded.model, self.dense)
        tokenizer, pruning, mask_bank = self._original
        self.loaded.tokenizer, self.loaded.pruning, self.loaded.mask_bank = tokenizer, copy.deepcopy(pruning), mask_bank
        if not private:
            return self.loaded
        return LoadedModel(
            model=copy.deepcopy(self.loaded.model), tokenizer=tokenizer, spec=self.loaded.spec, path=self.loaded.path,
            kind=self.loaded.kind, pruning=copy.deepcopy(pruning), mask_bank=mask_bank,
        )

    def corpus(self, name: str):
        from babelprune.data.registry import get_corpus

        if name not in self._corpora:
            self._corpora[name] = get_corpus(name)
        return self._corpora[name]

    def calibration(self, spec: CalibrationSpec):
        """The calibration windows of `spec`, built once per session (they depend only on the tokenizer)."""
        from babelprune.api import calibrate

        key = spec.model_dump_json()
        if key not in self._calibrations:
            self._calibrations[key] = calibrate(self.loaded, self.corpus(spec.corpus), spec.languages, spec.samples,
                                                spec.seq_len, spec.seed)
        return self._calibrations[key]


@functools.cache
def environment() -> dict[str, Any]:
    """Where the runs of this process ran: babelprune's commit, versions, threads, host."""
    import torch
    import transformers

    from babelprune.version import __version__

    return {
        "commit": _git_commit(), "babelprune": __version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "host": socket.gethostname(), "platform": platform.platform(),
    }


def _git_commit() -> str | None:
    """The commit of the babelprune source tree (with "+dirty" for uncommitted changes), None outside a git checkout."""
    source = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def execute(session: ModelSession | None, spec: RunSpec, workdir: Path) -> RunRecord:
    """Run one spec and return its record, done or failed (a full disk raises instead)."""
    started, clock = now(), time.perf_counter()
    where = {"device": spec.device, "dtype": spec.dtype}  # what it asked for, until it is resolved here
    try:
        where = placement(spec.device, spec.dtype).record()  # a device this machine lacks fails the run in one sentence
        outcome = _run(session, spec, workdir)
        state, error = "done", None
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the sweep goes on
        if is_disk_full(exc):
            raise disk_full_error(workdir) from None
        outcome, state, error = {}, "failed", describe_error(exc)
    return RunRecord(
        key=spec.key, sweep=spec.sweep, kind=spec.kind, label=spec.label, config=spec.config, state=state,
        evaluations=outcome.get("evaluations", {}), finetune=outcome.get("finetune"), pruning=outcome.get("pruning"),
        task_pruning=outcome.get("task_pruning"),
        measurements=outcome.get("measurements", {}), error=error, environment=environment(), started=started,
        seconds=round(time.perf_counter() - clock, 3), **where,
    )


def failed_record(spec: RunSpec, error: BaseException | str) -> RunRecord:
    """The record of a run that never got to run (its model did not load, its worker died), with the placement it asked for."""
    text = error if isinstance(error, str) else describe_error(error)
    return RunRecord(key=spec.key, sweep=spec.sweep, kind=spec.kind, label=spec.label, config=spec.config,
                     state="failed", error=text, environment=environment(), started=now(), device=spec.device,
                     dtype=spec.dtype)


def placement(device: str, dtype: str):
    """The run's device and dtype resolved on the machine that runs it (torch is imported only here, on use)."""
    from babelprune.devices import placement as resolve

    return resolve(device, dtype)


def describe_error(exc: BaseException) -> str:
    """One line: the sentence of a BabelpruneError, else the exception's type and message."""
    if isinstance(exc, BabelpruneError):
        return one_line(str(exc))
    return one_line(f"{type(exc).__name__}: {exc}")


def _run(session: ModelSession | None, spec: RunSpec, workdir: Path) -> dict[str, Any]:
    kind = run_kind(spec.kind)
    if kind.task:
        return kind.run_task(spec, workdir)
    from babelprune.api import model_info

    loaded = session.fresh(private=kind.reshapes)
    calibration = session.calibration(spec.calibration) if spec.calibration is not None else None
    clock = time.perf_counter()
    measured: dict[str, Any] = dict(kind.apply(loaded, spec.verb, calibration))
    measured["prune_seconds"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    evaluations = {item.name: _evaluate(session, loaded, item) for item in spec.evaluation}
    info = model_info(loaded)
    measured.update(eval_seconds=round(time.perf_counter() - clock, 3), parameters=info.n_parameters,
                    block_sparsity=info.block_sparsity)
    return {"evaluations": evaluations, "pruning": _pruning_record(loaded.pruning), "measurements": measured}


def _evaluate(session: ModelSession, loaded, item) -> EvalResult:
    from babelprune.api import evaluate

    # Every run of a model scores the same windows: tokenize them once, unless the run changed the tokenizer (a trim).
    cache = session.windows if loaded.tokenizer is session.tokenizer else None
    return evaluate(loaded, session.corpus(item.corpus), item.languages, item.split, item.seq_len, item.max_tokens,
                    item.batch_size, progress=False, window_cache=cache)


def _pruning_record(pruning: dict | None) -> dict | None:
    """The model's pruning record, without the trimmed vocabulary's id list (its count stays)."""
    if not pruning:
        return None
    record = copy.deepcopy(pruning)
    if isinstance(record.get("vocabulary"), dict):
        record["vocabulary"].pop("kept_ids", None)
    return record
