"""The local backend: the runs of a sweep one after the other in this process, each model loaded once.

Each run is claimed in the store before it starts (babelprune.sweep.store), so
several sweeps on one store share the work: a run another live sweep holds
is skipped, then waited for at the end, and taken over if that sweep dies
before it writes the run's record. A sweep ends only when every run of its
plan has a record, whoever wrote it.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from babelprune.cache import is_disk_full
from babelprune.sweep.display import SweepDisplay, SweepSummary
from babelprune.sweep.execute import ModelSession, environment, execute, failed_record
from babelprune.sweep.experiment import TASK_KINDS
from babelprune.sweep.runs import Plan, RunSpec
from babelprune.sweep.store import ResultsStore

# How often a sweep looks again at the runs another sweep holds, once it has nothing else to do.
WAIT_SECONDS = 2.0


def pending_runs(plan: Plan, store: ResultsStore) -> list[RunSpec]:
    """The runs of the plan not done in the store yet (failed ones are run again)."""
    done = store.keys("done")
    return [run for run in plan.runs if run.key not in done]


def by_model(runs: list[RunSpec]) -> dict[tuple[str, str, str], list[RunSpec]]:
    """Runs grouped by model and placement ((model, device, dtype)), in the plan's order, so that each is loaded once."""
    groups: dict[tuple[str, str, str], list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.session, []).append(run)
    return groups


def check_placements(runs: list[RunSpec]) -> None:
    """Every device and dtype `runs` ask for runs on this machine: else one sentence, before any of them starts.

    For the backends that run here (the local one, and the commands built on it); a Ray cluster's
    machines are not this one, so there a run on a device its worker lacks fails alone.
    """
    from babelprune.devices import resolve

    for device, dtype in dict.fromkeys((run.device, run.dtype) for run in runs):
        resolve(device, dtype)


def check_plan_placements(plan: Plan, store: Path) -> None:
    """`check_placements` of the plan's runs the store at `store` has not done, read before the store is created.

    So that a sweep asking for a device this machine lacks leaves no store behind; runs already done
    elsewhere (on another machine's GPU) do not count.
    """
    done: set[str] = set()
    if Path(store).exists():
        with ResultsStore(Path(store), create=False) as results:
            done = set(results.keys("done"))
    check_placements([run for run in plan.runs if run.key not in done])


def workdir_for(store: Path) -> Path:
    """Where runs keep files while they run (fine-tuning checkpoints): beside the store."""
    return Path(store).parent / f"{Path(store).stem}-work"


class SweepClaims:
    """The claims of one sweep: whether it may start a run now, and the runs other live sweeps hold.

    A run another sweep finishes meanwhile is shown as such: its done record moves the bar on, its failed
    record counts as a failure of this sweep's plan too (it is not retried here: it was just tried).
    """

    def __init__(self, store: ResultsStore, display: SweepDisplay) -> None:
        self.store, self.display = store, display
        # The failed records this sweep came to retry; any other failed record was written by another sweep since.
        self.failed_seen = store.finished_times("failed")
        self.waiting: dict[str, RunSpec] = {}  # key -> run, held by another live sweep
        self.holders: dict[str, str] = {}  # key -> "host pid N"
        self._announced = False

    def take(self, run: RunSpec) -> bool:
        """Claim `run`; True when this sweep should run it now."""
        claim = self.store.claim(run.key, self.failed_seen.get(run.key))
        if claim.outcome == "busy":
            self.waiting[run.key], self.holders[run.key] = run, claim.holder
            return False
        self.waiting.pop(run.key, None)
        self.holders.pop(run.key, None)
        if claim.outcome == "claimed":
            if claim.taken_from:
                self.display.progress.console.print(
                    Text.assemble(("taking over", "yellow"), f" {run.key}  {run.label}: its sweep ({claim.taken_from}) stopped"), highlight=False)
            return True
        if claim.outcome == "done":
            self.display.progress.update(self.display.task, advance=1)
        else:
            self.display.finished(self.store.get(run.key))
        return False

    def announce(self) -> None:
        """One line, once: how many runs are left to other sweeps, and that this one waits for them."""
        if self.waiting and not self._announced:
            self._announced = True
            holders = ", ".join(sorted(set(self.holders.values())))
            self.display.progress.console.print(
                f"{len(self.waiting)} run(s) are being run by another sweep on this store ({holders}); waiting for them "
                "to finish, or to take them over if that sweep stops.", highlight=False)


def run_local(plan: Plan, store: ResultsStore, progress: bool = True, console: Console | None = None,
              wait_seconds: float = WAIT_SECONDS) -> SweepSummary:
    """Run every pending run, writing each record to the store as it finishes; return when every run has a record."""
    environment()  # the commit now: this process runs the code it imported at its start, whatever changes later
    todo = pending_runs(plan, store)
    check_placements(todo)
    workdir = workdir_for(store.path)
    with SweepDisplay(len(plan.runs), len(todo), progress, console) as display:
        claims = SweepClaims(store, display)
        _run_claimed(todo, store, claims, workdir, display)
        while claims.waiting:
            # Look again first (the other sweep may have finished them meanwhile), then wait for those it still runs.
            _run_claimed(list(claims.waiting.values()), store, claims, workdir, display)
            if claims.waiting:
                claims.announce()
                time.sleep(wait_seconds)
    return display.summary


def _run_claimed(runs: list[RunSpec], store: ResultsStore, claims: SweepClaims, workdir: Path, display: SweepDisplay) -> None:
    """Run those of `runs` this sweep can claim, model by model; a model is loaded for its first claimed run only."""
    for where, group in by_model(runs).items():
        session, load_error = None, None
        for run in group:
            if not claims.take(run):
                continue
            try:
                needs_model = run.kind not in TASK_KINDS  # task runs load their own model
                if needs_model and session is None and load_error is None:
                    try:
                        session = ModelSession(*where)
                    except Exception as exc:  # noqa: BLE001 - the model's runs fail, the other models' go on
                        if is_disk_full(exc):
                            raise
                        load_error = exc
                display.started(run)
                record = failed_record(run, load_error) if needs_model and load_error is not None else execute(session, run, workdir)
                store.put(record)  # drops the claim in the same transaction
            except BaseException:
                store.release(run.key)  # a full disk, Ctrl-C: the run is free for another sweep at once
                raise
            display.finished(record)
        del session
        gc.collect()
