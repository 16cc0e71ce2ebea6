"""The kinds of sweep run, one registration each.

A kind says everything the planner (babelprune.sweep.runs) and the runner
(babelprune.sweep.execute) need to know about it: the key of an entry that
holds its config and the pydantic model of that config, whether it reads
calibration text, how its runs are labelled, whether it is a task kind
(loads, trains and scores its own model), what the plan checks before
anything runs, and how it runs. Adding a kind is one `register(Kind(...))`;
the experiment file, the planner and the runner read `RUN_KINDS`.

This module sits below the experiment file's shapes (babelprune.sweep.
experiment), which validate `kind` against the registry, so the configs of
the built-in kinds are imported from where they live, or defined here
(`FinetuneRun`). Each kind's heavy work is imported inside the function that
runs it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from babelprune.configfile import ConfigFile, Path_
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.prune_config import TaskDynamicRun, TaskStructuredRun
from babelprune.prune.config import NoEffect, PruneConfig, StructuredConfig, TrimConfig

if TYPE_CHECKING:  # annotations only: the planner imports this module
    from babelprune.models.base import LoadedModel
    from babelprune.prune.calibration import Calibration
    from babelprune.sweep.runs import RunSpec, SourceChecks

# (config) -> (the words of the run's label, the config fields those words already show)
LabelFn = Callable[[Any], "tuple[list[Any], set[str]]"]
# A kind run on the model its sweep loaded once: (the model with dense weights, config, calibration) -> measurements
ApplyFn = Callable[["LoadedModel", Any, "Calibration | None"], "dict[str, Any]"]
# A task kind: (run, work folder) -> the parts of its record (finetune / task_pruning, pruning, measurements)
RunTaskFn = Callable[["RunSpec", Path], "dict[str, Any]"]
# (the plan's checks, run, where its config is written) -> None, or raises one sentence with the line
CheckSourcesFn = Callable[["SourceChecks", "RunSpec", Path_], None]
# (file, one validated config of the grid, where the config is written) -> None, or raises
CheckConfigFn = Callable[[ConfigFile, Any, Path_], None]


@dataclass(frozen=True)
class Kind:
    """One kind of sweep run. Give exactly one of `apply` (a kind scored on the evaluation sets) and `run_task`."""

    name: str
    label: LabelFn
    key: str | None = None  # the key of a `runs` entry that holds its config; None: it takes none
    config: type[BaseModel] | None = None  # the model of that config
    apply: ApplyFn | None = None
    run_task: RunTaskFn | None = None
    reshapes: bool = False  # changes the model's shape, so it works on a copy of the sweep's loaded model
    uses_calibration: Callable[[Any], bool] = lambda config: False  # (config) -> whether it reads calibration text
    localize: Callable[[Any], Any] | None = None  # the config with its local paths made absolute, before it is keyed
    check_config: CheckConfigFn | None = None  # what a sweep refuses of a config the config itself allows
    check_sources: CheckSourcesFn | None = None  # the corpora and tasks it names, before anything runs
    # Fields left out of the config before it is keyed when they cannot change the run: None keeps the
    # config as written; a tuple leaves out the config's own `fields_without_effect()` and these.
    without_effect: tuple[NoEffect, ...] | None = None

    @property
    def task(self) -> bool:
        """Loads, trains and scores its own model on a task: no evaluation sets, no shared model."""
        return self.run_task is not None


RUN_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if (kind.apply is None) == (kind.run_task is None):
        raise ValueError(f"run kind '{kind.name}' needs exactly one of apply and run_task")
    if (kind.key is None) != (kind.config is None):
        raise ValueError(f"run kind '{kind.name}' gives its config's key and model together, or neither")
    RUN_KINDS[kind.name] = kind
    return kind


def run_kind(name: str) -> Kind:
    """The registered kind `name` (the experiment file has checked it is one)."""
    return RUN_KINDS[name]


def verb_keys() -> list[str]:
    """The keys of a `runs` entry that hold some kind's config."""
    return [kind.key for kind in RUN_KINDS.values() if kind.key is not None]


class _TaskKinds(Set):
    """The names of the registered task kinds, read from the registry each time (later registrations count)."""

    def __contains__(self, name: object) -> bool:
        return name in RUN_KINDS and RUN_KINDS[name].task

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, kind in RUN_KINDS.items() if kind.task])

    def __len__(self) -> int:
        return sum(1 for _ in self)


TASK_KINDS: Set[str] = _TaskKinds()


def local_path(spec: str) -> str:
    """An existing file or folder by its absolute path (Ray workers may start elsewhere), anything else as written."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path_exists(path) else spec


def path_exists(path: Path) -> bool:
    """Whether `path` exists; a name the file system cannot hold (too long) names nothing."""
    try:
        return path.exists()
    except OSError:
        return False


def with_local_corpus(config):
    """A config whose `corpus` names a local file or folder, with that path made absolute."""
    return config.model_copy(update={"corpus": local_path(config.corpus)}) if config is not None else None


class FinetuneRun(BaseModel):
    """A fine-tuning run (babelprune.finetune): the task and the FinetuneConfig (gmp: the pruning schedule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str = "bible-genre"
    task_options: dict[str, str | int] = Field(default_factory=dict)
    config: FinetuneConfig = Field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


# ----- dense ----------------------------------------------------------------------------


def _score_as_loaded(loaded, verb, calibration) -> dict[str, Any]:
    return {}


register(Kind("dense", label=lambda verb: (["dense"], set()), apply=_score_as_loaded))


# ----- oneshot -------------------------------------------------------------------------


def _prune_oneshot(loaded, verb: PruneConfig, calibration) -> dict[str, Any]:
    from babelprune.api import prune

    return {"achieved_sparsity": prune(loaded, verb, calibration, progress=False).achieved_sparsity}


def _oneshot_label(verb: PruneConfig) -> tuple[list[Any], set[str]]:
    words = [verb.method, verb.pattern if verb.nm else f"{verb.sparsity:.0%}"]
    words += [verb.allocation] if verb.allocation != "uniform" else []
    words += ["per-language"] if verb.setting == "per-language" else []
    words += ["+ refit"] if verb.reconstruct is not None else []
    return words, {"method", "sparsity", "pattern", "allocation", "setting", "reconstruct"}


# A sweep's one-shot runs take their calibration windows from the experiment's `calibration` (its seed
# included), so PruneConfig.seed, which `babelprune prune` passes to the calibration, decides nothing here.
SWEEP_SEED = NoEffect("seed", 0, "chooses calibration windows only in `babelprune prune`; a sweep's runs take theirs "
                      "from calibration.seed", "set calibration.seed instead", "oneshot runs of a sweep")

register(Kind("oneshot", key="prune", config=PruneConfig, label=_oneshot_label, apply=_prune_oneshot,
              uses_calibration=lambda verb: verb.needs_calibration, without_effect=(SWEEP_SEED,)))


# ----- structured ----------------------------------------------------------------------


def _prune_structured(loaded, verb: StructuredConfig, calibration) -> dict[str, Any]:
    from babelprune.api import prune_structured

    return {"achieved_sparsity": prune_structured(loaded, verb, calibration, progress=False).achieved_sparsity}


def _structured_label(verb: StructuredConfig) -> tuple[list[Any], set[str]]:
    words = ["structured", ",".join(verb.units), verb.importance, f"{verb.sparsity:.0%}"]
    words += ["+ refit"] if verb.refit else []
    return words, {"units", "importance", "sparsity", "refit"}


def _shared_setting_only(file: ConfigFile, verb: StructuredConfig, where: Path_) -> None:
    if verb.setting == "per-language":
        raise file.error(where + ("setting",), "a sweep runs structured pruning in the shared setting only "
                         "(per-language gives one model per language); use `babelprune prune --structured "
                         "--setting per-language` for it", "per-language")


register(Kind("structured", key="structured", config=StructuredConfig, label=_structured_label, apply=_prune_structured,
              reshapes=True, uses_calibration=lambda verb: verb.needs_calibration, check_config=_shared_setting_only))


# ----- trim ----------------------------------------------------------------------------


def _trim(loaded, verb: TrimConfig, calibration) -> dict[str, Any]:
    from babelprune.api import trim_vocabulary

    return {"kept_tokens": len(trim_vocabulary(loaded, verb).kept_ids)}


def _trim_label(verb: TrimConfig) -> tuple[list[Any], set[str]]:
    return ["trim", ",".join(verb.languages) if verb.languages else "8 languages"], {"languages"}


def _trim_corpus_exists(checks: SourceChecks, run: RunSpec, where: Path_) -> None:
    checks.corpus(where, run.verb.corpus, run.verb.languages)


register(Kind("trim", key="trim", config=TrimConfig, label=_trim_label, apply=_trim, reshapes=True,
              localize=with_local_corpus, check_sources=_trim_corpus_exists))


# ----- finetune ------------------------------------------------------------------------


def _finetune(spec: RunSpec, workdir: Path) -> dict[str, Any]:
    """Fine-tune in <workdir>/<key> (its checkpoints let a killed run resume), then drop that folder."""
    from babelprune.data.tasks import get_task
    from babelprune.finetune.trainer import finetune

    folder = Path(workdir) / spec.key
    clock = time.perf_counter()
    config = spec.verb.config.model_copy(update={"save_model": False})  # the folder is dropped below: keep no model in it
    result = finetune(spec.model, get_task(spec.verb.task, **spec.verb.task_options), config, folder,
                      progress=False, rerun_changed=True, on_notice=lambda line: None, device=spec.device, dtype=spec.dtype)
    shutil.rmtree(folder, ignore_errors=True)
    return finetune_outcome(result, time.perf_counter() - clock)


def finetune_outcome(result, seconds: float) -> dict[str, Any]:
    """The parts of a fine-tuning run's record: its result, measurements and pruning (also for runs read from elsewhere)."""
    measured = {"finetune_seconds": round(seconds, 3), "achieved_sparsity": result.achieved_sparsity, "steps": result.steps}
    return {"finetune": result, "measurements": measured, "pruning": {"method": result.method, "sparsity": result.sparsity}}


def _finetune_label(verb: FinetuneRun) -> tuple[list[Any], set[str]]:
    gmp = verb.config.gmp
    words = ["finetune", verb.task, f"gmp {gmp.final_sparsity:.0%}" if gmp is not None else "dense", f"seed {verb.config.seed}"]
    return words, {"task", "config.gmp", "config.gmp.final_sparsity", "config.seed"}


def _finetune_task_exists(checks: SourceChecks, run: RunSpec, where: Path_) -> None:
    checks.task(run, where, run.verb.config, classification_only=False)


register(Kind("finetune", key="finetune", config=FinetuneRun, label=_finetune_label, run_task=_finetune,
              check_sources=_finetune_task_exists))


# ----- task-structured and task-dynamic --------------------------------------------------


def _task_outcome(spec: RunSpec, result, started: tuple[float, float], measured: dict[str, Any]) -> dict[str, Any]:
    """The record parts of a task-pruning run: its timings and dense baseline, then the kind's own measurements."""
    clock, cpu = started
    # CPU seconds of every thread: on a shared machine, wall seconds overstate what the run costs alone
    measurements = {"task_seconds": round(time.perf_counter() - clock, 3), "cpu_seconds": round(time.process_time() - cpu, 3),
                    "dense_parameters": result.dense.parameters,
                    "dense_items_per_second": result.dense.items_per_second, **measured}
    pruning = {"method": f"{spec.kind}-{result.importance}", "sparsity": result.target_sparsity, "setting": result.setting}
    return {"task_pruning": result, "measurements": measurements, "pruning": pruning}


def _dense_cache(workdir: Path) -> Path:
    """Where the dense fine-tuned model is kept for the next task-pruning runs."""
    return Path(workdir) / "task-dense"


def _task_structured(spec: RunSpec, workdir: Path) -> dict[str, Any]:
    from babelprune.finetune.task_structured import run_task_structured

    started = time.perf_counter(), time.process_time()
    result = run_task_structured(spec.model, spec.verb, _dense_cache(workdir), place=_placement(spec))
    models = result.models
    # per-language: the mean over the languages' models (each scored on its own language)
    measured = {"parameters": round(sum(m.parameters for m in models) / len(models)),
                "achieved_sparsity": round(sum(m.sparsity for m in models) / len(models), 6),
                "items_per_second": round(sum(m.items_per_second for m in models) / len(models), 3)}
    return _task_outcome(spec, result, started, measured)


def _task_dynamic(spec: RunSpec, workdir: Path) -> dict[str, Any]:
    from babelprune.finetune.task_structured import run_task_dynamic

    started = time.perf_counter(), time.process_time()
    return _task_outcome(spec, run_task_dynamic(spec.model, spec.verb, _dense_cache(workdir), place=_placement(spec)), started, {})


def _placement(spec: RunSpec):
    """The run's device and dtype, resolved on the machine that runs it."""
    from babelprune.devices import placement

    return placement(spec.device, spec.dtype)


def _task_structured_label(verb: TaskStructuredRun) -> tuple[list[Any], set[str]]:
    prune = verb.prune
    words = ["task-structured", ",".join(prune.units), prune.importance, prune.setting, f"{prune.sparsity:.0%}"]
    return words, {"prune.units", "prune.importance", "prune.setting", "prune.sparsity"}


def _task_dynamic_label(verb: TaskDynamicRun) -> tuple[list[Any], set[str]]:
    dynamic = verb.dynamic
    words = ["task-dynamic", ",".join(dynamic.units), dynamic.importance, "levels " + ",".join(f"{s:g}" for s in dynamic.levels)]
    return words, {"dynamic.units", "dynamic.importance", "dynamic.levels"}


def _classification_task_exists(checks: SourceChecks, run: RunSpec, where: Path_) -> None:
    checks.task(run, where, run.verb.finetune, classification_only=True)


register(Kind("task-structured", key="task_structured", config=TaskStructuredRun, label=_task_structured_label,
              run_task=_task_structured, check_sources=_classification_task_exists))
register(Kind("task-dynamic", key="task_dynamic", config=TaskDynamicRun, label=_task_dynamic_label,
              run_task=_task_dynamic, check_sources=_classification_task_exists))


def unknown_kind() -> str:
    """What an unknown kind is told: the registered ones, listed as a Literal's error lists its values."""
    names = [repr(known) for known in RUN_KINDS]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"Input should be {listed}"


__all__ = ["FinetuneRun", "Kind", "RUN_KINDS", "SWEEP_SEED", "TASK_KINDS", "local_path", "register", "run_kind",
           "unknown_kind", "verb_keys", "with_local_corpus"]
