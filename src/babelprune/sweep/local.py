"""The local backend: the runs of a sweep one after the other in this process, each model loaded once."""

from __future__ import annotations

import gc
from pathlib import Path

from rich.console import Console

from babelprune.cache import is_disk_full
from babelprune.sweep.display import SweepDisplay, SweepSummary
from babelprune.sweep.execute import ModelSession, environment, execute, failed_record
from babelprune.sweep.experiment import TASK_KINDS
from babelprune.sweep.runs import Plan, RunSpec
from babelprune.sweep.store import ResultsStore


def pending_runs(plan: Plan, store: ResultsStore) -> list[RunSpec]:
    """The runs of the plan not done in the store yet (failed ones are run again)."""
    done = store.keys("done")
    return [run for run in plan.runs if run.key not in done]


def by_model(runs: list[RunSpec]) -> dict[str, list[RunSpec]]:
    """Runs grouped by model, in the plan's order, so that each model is loaded once."""
    groups: dict[str, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.model, []).append(run)
    return groups


def workdir_for(store: Path) -> Path:
    """Where runs keep files while they run (fine-tuning checkpoints): beside the store."""
    return Path(store).parent / f"{Path(store).stem}-work"


def run_local(plan: Plan, store: ResultsStore, progress: bool = True, console: Console | None = None) -> SweepSummary:
    """Run every pending run, writing each record to the store as it finishes."""
    environment()  # the commit now: this process runs the code it imported at its start, whatever changes later
    todo = pending_runs(plan, store)
    workdir = workdir_for(store.path)
    with SweepDisplay(len(plan.runs), len(todo), progress, console) as display:
        for model, runs in by_model(todo).items():
            session = None
            if any(run.kind not in TASK_KINDS for run in runs):  # task runs load their own model
                try:
                    session = ModelSession(model)
                except Exception as exc:  # noqa: BLE001 - the model's runs fail, the other models' go on
                    if is_disk_full(exc):
                        raise
                    for run in [run for run in runs if run.kind not in TASK_KINDS]:
                        record = failed_record(run, exc)
                        store.put(record)
                        display.finished(record)
                    runs = [run for run in runs if run.kind in TASK_KINDS]
            for run in runs:
                display.started(run)
                record = execute(session, run, workdir)
                store.put(record)
                display.finished(record)
            del session
            gc.collect()
    return display.summary
