"""`run_finetune_sweep`: one fine-tuning at several final sparsities and seeds, as a sweep of the results store.

The library side of `babelprune finetune-sweep`. It writes the experiment
file it runs to ``<out>/experiment.yaml``: one `finetune` entry whose config
is a grid over the seeds and the pruning schedules, so that

    babelprune sweep <out>/experiment.yaml --store <out>/results.sqlite

runs exactly the same runs. It plans that file with the sweep's own planner
and runs it with the local backend into ``<out>/results.sqlite``; runs done
in the store are skipped, so a sweep started again goes on where it stopped,
and a run cut short resumes from its checkpoints (in ``<out>/results-work``).
Runs go seed by seed (all sparsities of the first seed first), so a partial
sweep already compares every sparsity.

Sparsity 0 is the dense baseline (no pruning). Every other sparsity uses the
base configuration's GMP schedule with its final sparsity replaced, or, when
the base has none, the default `RelativeGMPConfig` (pruning from 10% to 70%
of each run's steps in about ten updates): `config_for`.

The runs keep their scores only: a store sweep drops each run's folder once
its record is written, whatever the base's `save_model` says. To keep the
model of one sparsity and seed, fine-tune it with `babelprune finetune`
(runs are seeded, so its scores come out the same).

A store holds the runs of one sweep's settings: the report averages every
fine-tuning run of a model, task and mode, so a sweep whose settings (other
than its seeds and sparsities) differ from the runs already in the store is
refused rather than mixed in. More seeds or sparsities of the same settings
are welcome.

A folder written by the earlier folder-per-run `finetune-sweep`
(``<out>/sparsity0.70-seed1/result.json``) is read on the way: each of its
finished runs made with the same settings (`babelprune.finetune.settings`)
is put into the store as a done run, so nothing is trained twice; a run made
with other settings is trained again, and `on_notice` says why.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from babelprune.cache import atomic_write_text
from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig
from babelprune.prune.gradual import RelativeGMPConfig
from babelprune.prune.kernels import check_sparsity
from babelprune.records.run import RunRecord
from babelprune.sweep.display import SweepSummary
from babelprune.sweep.runs import Plan, RunSpec, local_path, plan_experiment
from babelprune.sweep.store import ResultsStore

DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9, 0.98)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
EXPERIMENT_FILE = "experiment.yaml"
STORE_FILE = "results.sqlite"
REPORT_FOLDER = "report"
SWEEP_NAME = "finetune-sweep"

# The earlier folder-per-run sweep: one "sparsity0.70-seed1" folder per run, a Markdown report of these files.
_OLD_RUN_FOLDER = re.compile(r"^sparsity\d\.\d\d-seed\d+$")
_OLD_REPORT_FILES = {"finetune_report.md", "change_vs_resource.png", "change_vs_pretraining.png", "sparsity_curves.png"}

Notice = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneSweep:
    """What `run_finetune_sweep` did: where its experiment file and store are, and how its runs went."""

    experiment: Path
    store: Path
    summary: SweepSummary
    imported: int  # runs read from an earlier folder-per-run sweep in the same folder


# ----- the runs ---------------------------------------------------------------------------


def config_for(base: FinetuneConfig, sparsity: float, seed: int) -> FinetuneConfig:
    """`base` with the seed set, and no pruning (sparsity 0) or its GMP schedule ending at `sparsity`.

    Without a schedule in `base`, the default one: shares of each run's steps.
    """
    if sparsity == 0:
        gmp = None
    elif base.gmp is not None:
        gmp = type(base.gmp)(**{**base.gmp.model_dump(), "final_sparsity": sparsity})  # validated again
    else:
        gmp = RelativeGMPConfig(final_sparsity=sparsity)
    return FinetuneConfig(**{**base.model_dump(), "seed": seed, "gmp": gmp})


def sweep_configs(base: FinetuneConfig, sparsities: Sequence[float], seeds: Sequence[int]) -> list[FinetuneConfig]:
    """Every configuration of a sweep, seed by seed, each sparsity and seed once, checked before anything runs."""
    if not sparsities or not seeds:
        raise BabelpruneError("A sweep needs at least one sparsity and one seed.")
    for sparsity in sparsities:
        check_sparsity(sparsity)
    return [config_for(base, float(sparsity), int(seed)) for seed in dict.fromkeys(seeds) for sparsity in dict.fromkeys(sparsities)]


def experiment_data(model: str, task: str, task_options: Mapping[str, str | int], base: FinetuneConfig,
                    sparsities: Sequence[float], seeds: Sequence[int], device: str = "cpu",
                    dtype: str = "auto") -> dict[str, Any]:
    """The experiment file of a sweep, as data: one fine-tuning entry whose config is a grid over seeds and schedules.

    The grid crosses the seeds with the schedules, the schedule varying fastest, so the planner
    gives the runs seed by seed. Each schedule is written whole, so it reads back as its own type.
    The device and dtype are written only when they are not the defaults (cpu, auto), so the file
    of a sweep on the CPU reads as it always has.
    """
    configs = sweep_configs(base, sparsities, seeds)
    schedules: list[dict | None] = []
    for config in configs:
        schedule = config.gmp.model_dump(mode="json") if config.gmp is not None else None
        if schedule not in schedules:
            schedules.append(schedule)
    fixed = {key: value for key, value in base.model_dump(mode="json").items() if key not in ("seed", "gmp", "save_model")}
    grid = {**fixed, "seed": list(dict.fromkeys(config.seed for config in configs)), "gmp": schedules}
    described = ", ".join("dense" if s == 0 else f"{s:.0%}" for s in dict.fromkeys(float(s) for s in sparsities))
    data = {
        "name": SWEEP_NAME,
        "description": f"{task} fine-tuned at {described}, seeds {', '.join(map(str, grid['seed']))}",
        "models": [local_path(model)],  # a folder by its absolute path: the file runs from anywhere
        "runs": [{"kind": "finetune", "finetune": {"task": task, "task_options": dict(task_options), "config": grid}}],
    }
    placement = {key: value for key, value, default in (("device", device, "cpu"), ("dtype", dtype, "auto")) if value != default}
    return data | placement


def plan_data(data: dict[str, Any]) -> tuple[Plan, str]:
    """The plan of an experiment given as data, and the file's text; every check runs, nothing is written to the sweep."""
    import yaml

    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / EXPERIMENT_FILE  # errors name the file as the sweep will: "experiment.yaml line 9: ..."
        path.write_text(text, encoding="utf-8")
        return plan_experiment(path), text


# ----- one sweep's settings per store -------------------------------------------------


def shared_settings(config: dict[str, Any]) -> dict[str, Any]:
    """What every run of one sweep shares, from a run's keyed config: all but its seed and final sparsity."""
    verb = config["verb"]
    fields = dict(verb["config"])
    fields.pop("seed", None)
    schedule = fields.pop("gmp", None) or {}
    settings = {"model": config["model"], "task": verb["task"], "babelprune": config.get("babelprune")}
    settings |= {f"task option {name}": value for name, value in verb["task_options"].items()}
    settings |= fields
    # Runs of another device or dtype are other settings too (absent from the config: the CPU in float32).
    settings |= {name: value for name, value in (config.get("placement") or {"device": "cpu", "dtype": "float32"}).items()}
    return settings | {f"gmp.{name}": value for name, value in schedule.items() if name != "final_sparsity"}


def settings_changes(current: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """The settings that differ; a schedule's fields only count when both runs have one (a dense run has none)."""
    both_pruned = any(name.startswith("gmp.") for name in current) and any(name.startswith("gmp.") for name in stored)
    return [name for name in dict.fromkeys([*current, *stored])
            if current.get(name) != stored.get(name) and (both_pruned or not name.startswith("gmp."))]


def check_one_sweep(plan: Plan, records: list[RunRecord], store: Path) -> None:
    """Refuse a sweep whose settings differ from those of the fine-tuning runs already in the store."""
    planned = {run.key for run in plan.runs}
    pruned = [run for run in plan.runs if run.verb.config.gmp is not None]
    reference = shared_settings((pruned or plan.runs)[0].config)
    for record in records:
        if record.kind != "finetune" or record.key in planned or "verb" not in record.config:
            continue
        changed = settings_changes(reference, shared_settings(record.config))
        if changed:
            raise BabelpruneError(
                f"{store} holds fine-tuning runs made with other settings ({', '.join(changed)}), which the report would "
                "average with these; give another output folder, or remove the store to start the sweep anew."
            )


# ----- runs of the earlier folder-per-run sweep ----------------------------------------------


def old_run_folder(sparsity: float, seed: int) -> str:
    """The folder the earlier folder-per-run sweep gave one run, e.g. "sparsity0.70-seed1"."""
    return f"sparsity{sparsity:.2f}-seed{seed}"


def holds_old_runs(out: Path) -> bool:
    """Whether `out` holds run folders of the earlier folder-per-run sweep."""
    return Path(out).is_dir() and any(entry.is_dir() and _OLD_RUN_FOLDER.match(entry.name) for entry in Path(out).iterdir())


def import_old_runs(out: Path, plan: Plan, store: ResultsStore, model: str, on_notice: Notice) -> int:
    """Put the finished runs of an earlier folder-per-run sweep in `out` into the store as done runs; return how many.

    A run is taken only when its settings are this plan's (model as given, task and its examples,
    configuration, device and dtype: the earlier sweep ran on the CPU in float32); its folder is left as it was.
    """
    from babelprune.data.tasks import get_task
    from babelprune.devices import placement
    from babelprune.finetune.settings import RESULT_FILE, recorded_changes
    from babelprune.finetune.trainer import current_settings, plan_runs
    from babelprune.names import child_path

    done, tasks, imported = store.keys("done"), {}, 0
    for run in plan.runs:
        config = run.verb.config
        sparsity = config.gmp.final_sparsity if config.gmp is not None else 0.0
        name = old_run_folder(sparsity, config.seed)
        folder = child_path(out, name, "sweep run folder")
        if run.key in done or not (folder / RESULT_FILE).is_file():
            continue
        task_key = repr((run.verb.task, sorted(run.verb.task_options.items())))
        if task_key not in tasks:  # building a task reads its corpus: once
            tasks[task_key] = get_task(run.verb.task, **run.verb.task_options)
        task = tasks[task_key]
        place = placement(run.device, run.dtype)
        changes = recorded_changes(folder, current_settings(model, task, config, plan_runs(task, config), place))
        if changes:
            on_notice(f"run {name}: settings changed ({', '.join(changes)}), rerunning")
            continue
        store.put(imported_record(run, folder))
        imported += 1
    return imported


def imported_record(run: RunSpec, folder: Path) -> RunRecord:
    """The done record of a planned run whose result an earlier sweep left in `folder`."""
    from babelprune.finetune.settings import RESULT_FILE
    from babelprune.records.finetune import FinetuneResult
    from babelprune.sweep.kinds import finetune_outcome

    result = FinetuneResult.load(folder / RESULT_FILE)
    outcome = finetune_outcome(result, result.seconds)
    return RunRecord(key=run.key, sweep=run.sweep, kind=run.kind, label=run.label, config=run.config, state="done",
                     finetune=result, pruning=outcome["pruning"],
                     measurements={**outcome["measurements"], "imported_from": str(folder)}, seconds=result.seconds)


def drop_old_report(out: Path) -> None:
    """Remove the earlier sweep's Markdown report from <out>/report, so the HTML report can take its place.

    Only a folder holding nothing but the files that report wrote is removed: they are drawn from the
    results, which the store now holds.
    """
    folder = Path(out) / REPORT_FOLDER
    if folder.is_dir() and (folder / "finetune_report.md").is_file() and {p.name for p in folder.iterdir()} <= _OLD_REPORT_FILES:
        shutil.rmtree(folder)


def is_finetune_sweep_folder(folder: Path) -> bool:
    """Whether `folder` is one `run_finetune_sweep` goes on writing into: its own files, old run folders, or nothing."""
    from babelprune.finetune.settings import holds_run, is_finetune_folder

    own = {EXPERIMENT_FILE, REPORT_FOLDER, f"{Path(STORE_FILE).stem}-work",
           *(STORE_FILE + suffix for suffix in ("", "-wal", "-shm", "-journal"))}
    return all(entry.name in own or entry.name.startswith(".") or is_finetune_folder(entry) or holds_run(entry)
               for entry in Path(folder).iterdir())


# ----- the sweep ----------------------------------------------------------------------


def run_finetune_sweep(
    model: str,
    task: str,
    out: Path,
    *,
    task_options: Mapping[str, str | int] | None = None,
    base: FinetuneConfig | None = None,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    progress: bool = True,
    console: Console | None = None,
    on_notice: Notice | None = None,
    device: str = "cpu",
    dtype: str = "auto",
) -> FinetuneSweep:
    """Fine-tune `model` on `task` at every sparsity and seed into the store <out>/results.sqlite; return what ran.

    Every run trains in `dtype` on `device`, which the experiment file says too. Every check
    (device, schedules, task, languages, model, a store of other settings) happens before anything
    is written. `on_notice(line)` hears of old run folders that are trained again.
    """
    from babelprune.api import check_sources
    from babelprune.devices import resolve
    from babelprune.sweep.local import run_local
    from babelprune.sweep.store import check_store

    resolve(device, dtype)  # a device this machine lacks: one sentence, before anything is read or written
    check_sources(model=model)  # the name's form, as every command checks it, before the plan reads anything
    out = Path(out)
    plan, text = plan_data(experiment_data(model, task, task_options or {}, base or FinetuneConfig(), sparsities, seeds,
                                           device, dtype))
    store_path = out / STORE_FILE
    if store_path.exists():
        check_store(store_path)  # a file that is not a store is refused, read-only
        with ResultsStore(store_path, create=False) as stored:
            check_one_sweep(plan, stored.records(), store_path)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / EXPERIMENT_FILE, text)
    with ResultsStore(store_path) as store:
        imported = import_old_runs(out, plan, store, model, on_notice or (lambda line: None)) if holds_old_runs(out) else 0
        drop_old_report(out)
        summary = run_local(plan, store, progress=progress, console=console)
    return FinetuneSweep(out / EXPERIMENT_FILE, store_path, summary, imported)
