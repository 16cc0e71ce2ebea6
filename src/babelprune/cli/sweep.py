"""Sweeps and their reports: `sweep`, `recipes`, `runs`, `report`, `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from babelprune.choices import SweepBackend
from babelprune.cli.common import MAX_INT, DeviceOption, DtypeOption, SweepDeviceOption, SweepDtypeOption, console, err_console, note
from babelprune.errors import BabelpruneError
from babelprune.outputs import STORE_SUFFIXES, check_output_file, check_output_folder



def sweep_command(
    experiment: Annotated[Optional[Path], typer.Argument(help="The experiment file (YAML): models, calibration, evaluation sets, runs (docs/sweeps.md).")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="Run a packaged experiment file instead (see `babelprune recipes`).")] = None,
    store: Annotated[Optional[Path], typer.Option(help="The results store, an SQLite file (default: ./<experiment name>.sqlite).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate the file and list the runs with their keys and state; run nothing.")] = False,
    backend: Annotated[SweepBackend, typer.Option(help="local: one run after the other in this process; ray: Ray tasks.")] = "local",
    address: Annotated[Optional[str], typer.Option(help="--backend ray: an existing cluster (auto, or ray://host:port); default: start a local Ray.")] = None,
    cpus: Annotated[Optional[int], typer.Option(min=1, max=4096, help="CPUs to use: the local Ray's size (--backend ray), or torch's threads (local).")] = None,
    device: SweepDeviceOption = None,
    dtype: SweepDtypeOption = None,
) -> None:
    """Run every run of an experiment file, skipping those the store has done; each finished run is one transaction."""
    from babelprune.sweep.experiment import recipe_path
    from babelprune.sweep.runs import plan_experiment

    if (experiment is None) == (recipe is None):
        raise BabelpruneError("Give an experiment file or --recipe NAME (one of them); `babelprune recipes` lists the recipes.")
    if recipe is not None:
        experiment = recipe_path(recipe)
    if address is not None and backend != "ray":
        raise BabelpruneError("--address names a Ray cluster; add --backend ray, or drop --address to run here.")
    plan = plan_experiment(experiment, device=device, dtype=dtype)
    for line in plan.notes:  # e.g. a grid field without effect on some runs, left out of their keys
        note(line)
    path = store or Path(f"{plan.experiment.name}.sqlite")
    check_output_file(path, "--store", STORE_SUFFIXES, reuse=True)  # a store is resumed, so an existing one is welcome
    if dry_run:
        _print_plan(plan, path)
        return
    from babelprune.sweep.store import ResultsStore, check_store

    if path.exists():  # a file that is not a store, or one from a newer babelprune: refused before any work, read-only
        check_store(path)

    if backend == "ray":
        from babelprune.sweep.ray_backend import ray_cluster, run_ray

        # Ray first: a missing install or an unreachable cluster is one sentence, with no store created.
        with ray_cluster(address, cpus) as ray, ResultsStore(path) as results:
            summary = run_ray(ray, plan, results, console=console)
    else:
        from babelprune.sweep.local import check_plan_placements, run_local

        check_plan_placements(plan, path)  # a device this machine lacks: one sentence, and no store created
        if cpus is not None:
            import torch

            torch.set_num_threads(cpus)
        with ResultsStore(path) as results:
            summary = run_local(plan, results, console=console)
    # Runs another sweep on the same store finished while this one waited for them are neither done here nor before.
    elsewhere = summary.planned - summary.skipped - len(summary.done) - len(summary.failed)
    console.print(
        f"{summary.planned} runs: {len(summary.done)} done now, {summary.skipped} done before, "
        + (f"{elsewhere} done by another sweep, " if elsewhere else "")
        + f"{len(summary.failed)} failed; results in {path}", highlight=False,
    )
    if not summary.ok:
        err_console.print(Text.assemble((f"{len(summary.failed)} run(s) failed", "bold red"), f"; `babelprune runs {path}` shows their errors, "
                          "and running the sweep again retries them."), highlight=False)
        raise typer.Exit(1)


def _print_plan(plan, path: Path) -> None:
    """The runs of a plan, with their state in the store when it exists (the store is not created)."""
    from rich.table import Table

    from babelprune.sweep.store import ResultsStore

    states: dict[str, str] = {}
    if path.exists():
        with ResultsStore(path, create=False) as results:
            states = {key: state for state in ("done", "failed") for key in results.keys(state)}
    table = Table(title=f"{plan.experiment.name}: {len(plan.runs)} runs" + (f" ({plan.duplicates} duplicates merged)" if plan.duplicates else ""))
    for column in ("key", "model", "kind", "run", "state"):
        table.add_column(column)
    for run in plan.runs:
        table.add_row(run.key, run.model, run.kind, run.label, states.get(run.key, "to run"))
    console.print(table)
    pending = sum(1 for run in plan.runs if states.get(run.key) != "done")
    console.print(f"{pending} of {len(plan.runs)} to run; store {path}", highlight=False)


def recipes_command() -> None:
    """List the experiment files packaged with babelprune (`babelprune sweep --recipe NAME` runs one)."""
    from babelprune.sweep.experiment import recipe_names, recipe_path
    from babelprune.sweep.runs import plan_experiment

    for name in recipe_names():
        plan = plan_experiment(recipe_path(name), check_data=False)
        console.print(Text.assemble((name, "bold"), f"  {len(plan.runs)} runs: {plan.experiment.description}"), highlight=False)


def runs_command(
    store: Annotated[Path, typer.Argument(help="A results store written by `babelprune sweep`.")],
    sweep: Annotated[Optional[str], typer.Option(help="Only the runs of this experiment (its name).")] = None,
) -> None:
    """List the runs of a results store: key, label, kind, state, seconds, when it finished, the error of a failed run."""
    from rich.table import Table

    from babelprune.sweep.store import ResultsStore

    with ResultsStore(store, create=False) as results:
        records = results.records(sweep=sweep)
    table = Table(title=f"{store}: {len(records)} runs")
    for column in ("key", "run", "kind", "state", "seconds", "finished", "error"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for record in records:
        state = Text(record.state, style="green" if record.state == "done" else "red")
        table.add_row(record.key, record.label, record.kind, state, f"{record.seconds:.1f}", record.finished[:19],
                      record.error or "")
    console.print(table)


def report_command(
    store: Annotated[Path, typer.Argument(help="Results store (.sqlite) that `babelprune sweep` fills.")],
    out: Annotated[Path, typer.Option(help="Folder for index.html and figures/ (must not exist, unless --overwrite).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing report folder written by this command.")] = False,
) -> None:
    """A self-contained HTML page with figures from a results store: per-language change per method, curves, failures."""
    from babelprune.report.html import is_report_folder, write_report

    check_output_folder(out, "--out", overwrite=overwrite, recognise=is_report_folder, writer="`babelprune report`")
    page = write_report(store, out, overwrite=overwrite)
    console.print(Text.assemble("Report written to ", (str(page), "bold")))


def demo_command(
    out: Annotated[Path, typer.Option(help="Report folder (a report written earlier is replaced).")] = Path("babelprune-report"),
    store: Annotated[Optional[Path], typer.Option(help="The results store (default: <out>.sqlite); an interrupted demo resumes from it.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model alias, folder or hub id (default: the recipe's gemma3-270m).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(max=MAX_INT, min=1, help="Predicted tokens per language and evaluation set (default: the recipe's 195).")] = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
    shrink: Annotated[bool, typer.Option(help="End with `shrink`: the smallest model within 5% for the calibration languages, written to <out>-shrink.")] = True,
) -> None:
    """The main job: the built-in `demo` sweep (dense, four methods and the recommended mwanda + CWL + refit at 50%, mwanda + refit at 2:4, per language), then `shrink` for the calibration languages, then the HTML report."""
    from babelprune.api import check_sources
    from babelprune.demo import DemoShrink, check_shrink_outputs, default_store, run_demo
    from babelprune.report.html import is_report_folder

    check_sources(model=model, device=device, dtype=dtype)  # a device this machine lacks: refused before any work
    check_output_folder(out, "--out", overwrite=True, recognise=is_report_folder, writer="`babelprune report`")
    store = store if store is not None else default_store(out)
    check_output_file(store, "--store", STORE_SUFFIXES, reuse=True)
    if shrink:
        check_shrink_outputs(out)
    outcome = run_demo(out, store, model, max_tokens, console, device=device, dtype=dtype,
                       shrink=DemoShrink() if shrink else None)
    if not outcome.ok:
        raise typer.Exit(1)
