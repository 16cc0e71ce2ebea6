"""From an experiment file to the list of runs, each with a stable key.

`plan_experiment(path)` reads the file, expands every grid (a list given
where the config takes one value), validates every resulting config with
the verb's own pydantic model, checks the models and corpora it names, and
returns the `RunSpec`s. Any problem is one sentence with its line
(babelprune.configfile), raised before anything runs.

A run's key is a short sha256 of the canonical JSON of everything that
decides its result: the model, the kind, the verb's whole config with its
defaults filled in, the calibration (when the run uses it), the evaluation
sets, the babelprune version and, unless it is the CPU in float32, the
device type and dtype the run computes in. The same file gives the same keys,
reordering entries or evaluation sets changes none, and changing any field
that matters changes the key of the runs it touches.

A field that cannot change a run's result (`mwanda: {alpha: ...}` on a wanda
run, `sparsity` or `allocation` on a 2:4 run: `PruneConfig.fields_without_effect`)
is left out of that run's config before it is keyed, so the grid points that
differ only there are one run; the plan says so once per field in its
`notes` ("mwanda.alpha has no effect on wanda runs ..."). A grid crossing
methods with one method's options is natural, so it is not refused.

A run's device and dtype are planned here (`babelprune.devices.planned_names`):
"auto" becomes what this machine has, so that the key says what the run
computes in. The key holds the device's type ("cuda", not "cuda:1"): the
same run on another card of the machine is the same run. The CPU in float32,
what every run computed in before runs could say where, is left out of the
key, so the stores of those runs keep their keys.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import types
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from babelprune.configfile import ConfigFile, Path_, read_config_file
from babelprune.errors import BabelpruneError, describe_validation_error
from babelprune.prune.config import KEEP_FIELDS_WITHOUT_EFFECT, same_value
from babelprune.sweep.experiment import CalibrationSpec, Devices, Dtypes, EvaluationSet, Experiment, RunEntry
from babelprune.sweep.kinds import Kind, local_path, path_exists, run_kind, with_local_corpus

KEY_LENGTH = 16  # hex digits of the sha256: collisions are out of reach for any sweep


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: what to do to which model, and how to measure it."""

    key: str
    sweep: str
    model: str
    kind: str
    label: str
    verb: BaseModel | None  # the config of its kind (PruneConfig, StructuredConfig...); None for dense
    calibration: CalibrationSpec | None  # None: the run uses no calibration text
    evaluation: tuple[EvaluationSet, ...]
    config: dict[str, Any]  # exactly what the key hashes; stored with the run
    entry: int = 0  # the index of the `runs` entry it comes from (for error lines; not in the key)
    device: str = "cpu"  # where it runs: "cpu", "cuda", "cuda:1", "mps" ("auto" already resolved; its type is keyed)
    dtype: str = "float32"  # the type its model runs in ("auto" already resolved; keyed)

    @property
    def session(self) -> tuple[str, str, str]:
        """What runs share a loaded model by: the model, where it runs and in which type."""
        return self.model, self.device, self.dtype


@dataclass(frozen=True)
class Plan:
    experiment: Experiment
    runs: list[RunSpec]
    duplicates: int  # runs of the grid that another entry already gives (same key), merged
    # One sentence per field left out of some runs' keys because it has no effect on them, with the
    # grid points it touched and the runs they are: "mwanda.alpha has no effect on wanda runs ...".
    notes: tuple[str, ...] = ()


def plan_experiment(path: Path | str, check_data: bool = True, *, device: Devices | None = None,
                    dtype: Dtypes | None = None) -> Plan:
    """The runs of an experiment file, every config validated (and models and corpora checked when `check_data`).

    `device` and `dtype`, when given, replace the experiment's own (`babelprune sweep --device`);
    an entry that names its own keeps it.
    """
    file = read_config_file(path)
    if not isinstance(file.data, dict):
        raise BabelpruneError(f"{file.name} line 1: an experiment file is a mapping (name:, models:, runs:...); fix it and run again.")
    experiment = file.validate(Experiment)
    if device is not None or dtype is not None:
        given = {"device": device, "dtype": dtype}
        try:
            experiment = Experiment.model_validate(experiment.model_dump() | {k: v for k, v in given.items() if v is not None})
        except ValidationError as exc:
            raise BabelpruneError(describe_validation_error(exc)) from None
    calibrations = _expand(file, CalibrationSpec, experiment.calibration, ("calibration",))
    evaluation = tuple(sorted((with_local_corpus(item) for item in experiment.evaluation), key=lambda item: item.name))
    several_models = len(experiment.models) > 1
    runs: dict[str, RunSpec] = {}
    total = 0
    # (field, runs) -> (grid points that wrote it, their keys, whether any wrote other than the default)
    without_effect: dict[tuple[str, str], tuple[int, set[str], bool]] = {}
    for index, entry in enumerate(experiment.runs):
        where = ("runs", index)
        entry_calibrations = calibrations
        if entry.calibration is not None:
            entry_calibrations = _expand(file, CalibrationSpec, entry.calibration, where + ("calibration",))
        verbs = _verbs(file, entry, where)
        places = _placements(experiment, entry)
        for model in experiment.models:
            for (verb, verb_choices, dropped), (calibration, calibration_choices), place in itertools.product(
                    verbs, entry_calibrations, places):
                spec = _spec(experiment, model, entry.kind, verb, calibration, evaluation,
                             {**verb_choices, **_prefixed("calibration", calibration_choices)}, several_models, index, place)
                total += 1
                runs.setdefault(spec.key, spec)
                for field, what, differed in dropped:
                    points, keys, changed = without_effect.get((field, what), (0, set(), False))
                    without_effect[(field, what)] = (points + 1, keys | {spec.key}, changed or differed)
    # A field written at its default changes no key: only those that merged or renamed runs are said.
    notes = tuple(_note(field, what, points, len(keys)) for (field, what), (points, keys, changed) in without_effect.items() if changed)
    plan = Plan(experiment, distinct_labels(list(runs.values())), total - len(runs), notes)
    if check_data:
        check_sources(file, plan)
    return plan


def _placements(experiment: Experiment, entry: RunEntry) -> list[tuple[str, str]]:
    """The (device, dtype) names of an entry's runs, planned on this machine: the entry's own, else the experiment's."""
    from babelprune.devices import planned_names

    device = entry.device if entry.device is not None else experiment.device
    dtype = entry.dtype if entry.dtype is not None else experiment.dtype
    devices = device if isinstance(device, list) else [device]
    dtypes = dtype if isinstance(dtype, list) else [dtype]
    found: list[tuple[str, str]] = []
    for device_name, dtype_name in itertools.product(devices, dtypes):  # both checked by the file's shapes
        place = planned_names(device_name, dtype_name)
        if place not in found:  # [auto, cuda] on a CUDA machine is one placement
            found.append(place)
    return found


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix: config}
    return {key: value for name, part in config.items() for key, value in _flat(part, f"{prefix}.{name}" if prefix else name).items()}


def _choice_text(value: Any) -> str:
    """A config value as run labels write grid choices: True, 0.5, cwl; lists and mappings as JSON."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


def distinct_labels(runs: list[RunSpec]) -> list[RunSpec]:
    """Runs whose labels collide (settings from different entries) get the config fields that tell them apart appended."""
    by_label: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        by_label.setdefault(run.label, []).append(index)
    runs = list(runs)
    for indices in (group for group in by_label.values() if len(group) > 1):
        flat = [_flat(runs[i].config) for i in indices]
        fields = sorted({key for one in flat for key in one})
        differing = [key for key in fields if len({json.dumps(one.get(key), sort_keys=True) for one in flat}) > 1]
        for i, one in zip(indices, flat):
            extra = " ".join(f"{key.split('.')[-1]}={_choice_text(one.get(key))}" for key in differing)
            runs[i] = replace(runs[i], label=f"{runs[i].label} {extra}".rstrip())
    return runs


# ----- grids ---------------------------------------------------------------------------


def _verbs(file: ConfigFile, entry: RunEntry, where: Path_) -> list[tuple[BaseModel | None, dict[str, Any], tuple]]:
    """(config, its grid choices, the fields left out of it for having no effect) of every grid point."""
    kind = run_kind(entry.kind)
    if kind.config is None:
        return [(None, {}, ())]
    written = where + (kind.key,)
    if kind.without_effect is not None:
        verbs = _expand_leaving_out(file, kind, entry.verb, written)
    else:
        verbs = [(verb, choices, ()) for verb, choices in _expand(file, kind.config, entry.verb, written)]
    if kind.check_config is not None:
        for verb, _, _ in verbs:
            kind.check_config(file, verb, written)
    return verbs


def _expand(file: ConfigFile, model: type[BaseModel], data: dict[str, Any], where: Path_) -> list[tuple[Any, dict[str, Any]]]:
    """Every config of a grid, validated as `model`, with the values it took on its varying fields."""
    configs = []
    for concrete, choices in _grid(model, data, where, file):
        try:
            configs.append((model.model_validate(concrete), choices))
        except Exception as exc:  # noqa: BLE001 - ValidationError or BabelpruneError, turned into one sentence
            if not isinstance(exc, BabelpruneError) and type(exc).__name__ != "ValidationError":
                raise
            # at the line of the value that caused it (in a grid list, the item)
            raise file.validation_error(exc, model, where) from None
    return configs


def _expand_leaving_out(file: ConfigFile, kind: Kind, data: dict[str, Any], where: Path_) -> list[tuple[BaseModel, dict[str, Any], tuple]]:
    """Every config of a grid (a PruneConfig, for oneshot), each without the written fields that have no effect on it.

    Such a field (alpha on a wanda run, sparsity on a 2:4 run...: the config's own
    `fields_without_effect()`, and the kind's `without_effect`) goes back to its default
    before the config is validated and keyed, so grid points that differ only there are one
    run. Each config comes with (field, runs, whether the written value differed from the
    default) for every field left out, for the plan's notes.
    """
    model = kind.config
    found = []
    for concrete, choices in _grid(model, data, where, file):
        try:
            lenient = model.model_validate(concrete, context=KEEP_FIELDS_WITHOUT_EFFECT)
            dropped: list[tuple[str, str, bool]] = []
            seen: set[str] = set()
            for item in [*lenient.fields_without_effect(), *kind.without_effect]:
                if item.field in seen or not _written(concrete, item.field):
                    continue
                seen.add(item.field)
                value = lenient.value_at(item.field)
                concrete = _without(concrete, item.field)
                choices = {key: choice for key, choice in choices.items()
                           if key != item.field and not key.startswith(item.field + ".")}
                dropped.append((item.field, item.runs, not same_value(value, item.default)))
            found.append((model.model_validate(concrete), choices, tuple(dropped)))
        except Exception as exc:  # noqa: BLE001 - ValidationError or BabelpruneError, turned into one sentence
            if not isinstance(exc, BabelpruneError) and type(exc).__name__ != "ValidationError":
                raise
            raise file.validation_error(exc, model, where) from None
    return found


def _written(data: dict[str, Any], path: str) -> bool:
    """Whether a config mapping spells the dotted field itself (not just its default)."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _without(data: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy of the config mapping without the dotted field (its section kept, even when left empty)."""
    head, _, rest = path.partition(".")
    if not rest:
        return {key: value for key, value in data.items() if key != head}
    return {**data, head: _without(data[head], rest)}


def _note(field: str, runs: str, points: int, distinct: int) -> str:
    """The plan's sentence for a field left out of some runs' keys."""
    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    verb = "is" if points == 1 else "are"
    return f"{field} has no effect on {runs}, so their keys leave it out: {count(points, 'grid point')} {verb} {count(distinct, 'run')}."


def _grid(model: type[BaseModel] | None, data: dict[str, Any], where: Path_, file: ConfigFile):
    """(concrete dict, {dotted field: value}) for every point of the grid a config mapping spells."""
    axes = []
    for key, value in data.items():
        annotation = model.model_fields[key].annotation if model is not None and key in model.model_fields else None
        axes.append([(key, concrete, choices) for concrete, choices in _alternatives(annotation, value, where + (key,), file)])
    for combination in itertools.product(*axes):
        yield {key: concrete for key, concrete, _ in combination}, {k: v for _, _, choices in combination for k, v in choices.items()}


def _alternatives(annotation, value: Any, where: Path_, file: ConfigFile) -> list[tuple[Any, dict[str, Any]]]:
    name = str(where[-1])
    takes_list = _takes_list(annotation)
    is_grid = isinstance(value, list) and (not takes_list or (value and all(isinstance(item, list) for item in value)))
    if not is_grid:
        return _single(annotation, value, where, file)
    if not value:
        raise file.error(where, "an empty list gives no runs; give at least one value")
    found = []
    for index, item in enumerate(value):
        for concrete, choices in _single(annotation, item, where + (index,), file, name):
            found.append((concrete, {name: item, **choices} if len(value) > 1 else choices))
    return found


def _single(annotation, value: Any, where: Path_, file: ConfigFile, name: str | None = None) -> list[tuple[Any, dict[str, Any]]]:
    """One written value: a nested config mapping expands its own grid (its choices named `name.field`)."""
    models = [inner for inner in _union_members(annotation) if isinstance(inner, type) and issubclass(inner, BaseModel)]
    if isinstance(value, dict) and models:
        fitting = next((m for m in models if set(value) <= set(m.model_fields)), models[0])
        return [(concrete, _prefixed(name or str(where[-1]), choices)) for concrete, choices in _grid(fitting, value, where, file)]
    return [(value, {})]


def _union_members(annotation) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [member for arg in typing.get_args(annotation) for member in _union_members(arg)]
    return [annotation]


def _takes_list(annotation) -> bool:
    return any(typing.get_origin(member) in (list, tuple, set) or member in (list, tuple, set)
               for member in _union_members(annotation))


def _prefixed(prefix: str, choices: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{key}": value for key, value in choices.items()}


# ----- keys and labels -------------------------------------------------------------------


def uses_calibration(kind: str, verb: BaseModel | None) -> bool:
    """Whether a run reads calibration text (so that its calibration belongs to its key)."""
    return run_kind(kind).uses_calibration(verb)


def model_key(model: str) -> str:
    """The model as the key sees it: an existing folder by its absolute path, an alias or hub id as written."""
    return local_path(model)


def run_key(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:KEY_LENGTH]


DEFAULT_PLACEMENT = ("cpu", "float32")  # what every run computed in before runs could say where: never keyed


def keyed_placement(device: str, dtype: str) -> dict[str, str] | None:
    """The placement as a run's key holds it: the device's type and the dtype; None for the CPU in float32."""
    import torch

    kind = torch.device(device).type
    return None if (kind, dtype) == DEFAULT_PLACEMENT else {"device": kind, "dtype": dtype}


def run_config(model: str, kind: str, verb: BaseModel | None, calibration: CalibrationSpec | None,
               evaluation: tuple[EvaluationSet, ...], place: tuple[str, str] = DEFAULT_PLACEMENT) -> dict[str, Any]:
    """Everything that decides a run's result, as plain JSON (what its key hashes)."""
    from babelprune.version import __version__

    config = {
        "model": model_key(model),
        "kind": kind,
        "verb": verb.model_dump(mode="json") if verb is not None else None,
        "calibration": calibration.model_dump(mode="json") if calibration is not None else None,
        "evaluation": [item.model_dump(mode="json") for item in evaluation] if not run_kind(kind).task else None,
        "babelprune": __version__,
    }
    placement = keyed_placement(*place)
    if placement is not None:  # absent, not null, for the CPU in float32: older runs' configs and keys stay as they were
        config["placement"] = placement
    return config


def _spec(experiment: Experiment, model: str, kind: str, verb, calibration: CalibrationSpec, evaluation, choices,
          several_models: bool, entry: int, place: tuple[str, str] = DEFAULT_PLACEMENT) -> RunSpec:
    calibration = with_local_corpus(calibration) if uses_calibration(kind, verb) else None
    localize = run_kind(kind).localize
    verb = localize(verb) if localize is not None else verb
    config = run_config(model, kind, verb, calibration, evaluation, place)
    label = " ".join([run_label(kind, verb, choices), *placement_words(*place)])
    written = model
    model = local_path(model)
    return RunSpec(
        key=run_key(config), sweep=experiment.name, model=model, kind=kind,
        label=f"{label} ({written})" if several_models else label, verb=verb, calibration=calibration,
        evaluation=evaluation if not run_kind(kind).task else (), config=config, entry=entry,
        device=place[0], dtype=place[1],
    )


def placement_words(device: str, dtype: str) -> list[str]:
    """What a run's label adds for where it runs: nothing on the CPU in float32, else "cuda bfloat16", "mps", "float16"."""
    placement = keyed_placement(device, dtype)
    if placement is None:
        return []
    return [word for word, usual in ((placement["device"], "cpu"), (dtype, "float32")) if word != usual]


def run_label(kind: str, verb, choices: dict[str, Any]) -> str:
    """A short human name: "wanda 50%", "mwanda 2:4 alpha=0.3", "structured ffn gradient 30%", "dense"."""
    words, shown = run_kind(kind).label(verb)
    words = list(words)
    for field, value in choices.items():
        if field in shown or isinstance(value, dict):
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else value
        words.append(f"{field.split('.')[-1]}={text}")
    return " ".join(str(word) for word in words)


# ----- models and corpora -------------------------------------------------------------


def check_sources(file: ConfigFile, plan: Plan) -> None:
    """Every model and corpus the runs name exists and has the languages asked for, before anything runs."""
    from babelprune.formats.loading import ALIASES, resolve_spec

    for index, model in enumerate(plan.experiment.models):
        if model not in ALIASES and not path_exists(Path(model).expanduser()):
            try:
                resolve_spec(model)
            except BabelpruneError as exc:
                raise file.error(("models", index), str(exc), model) from None
    checks = SourceChecks(file)
    for index, item in enumerate(plan.experiment.evaluation):
        checks.corpus(("evaluation", index), item.corpus, item.languages)
    for run in plan.runs:
        entry = ("runs", run.entry)
        if run.calibration is not None:
            own = plan.experiment.runs[run.entry].calibration is not None
            checks.corpus(entry + ("calibration",) if own else ("calibration",), run.calibration.corpus, run.calibration.languages)
        kind = run_kind(run.kind)
        if kind.check_sources is not None:
            kind.check_sources(checks, run, entry + (kind.key,))


class SourceChecks:
    """The checks a kind's `check_sources` asks for; each corpus and task is built once per plan."""

    def __init__(self, file: ConfigFile) -> None:
        self.file = file
        self._corpora: dict[str, Any] = {}
        self._tasks: dict[str, Any] = {}  # one task per name and options: building one reads its whole corpus

    def corpus(self, where: Path_, corpus: str, languages: list[str] | None) -> None:
        """The corpus exists and has the languages (`where`: the mapping that names them)."""
        from babelprune.data.registry import get_corpus

        try:
            if corpus not in self._corpora:
                self._corpora[corpus] = get_corpus(corpus)
        except BabelpruneError as exc:
            raise self.file.error(where + ("corpus",), str(exc), corpus) from None
        try:
            if languages:
                self._corpora[corpus].check_languages(list(languages))
        except BabelpruneError as exc:
            unknown = next((lang for lang in languages if lang not in self._corpora[corpus].languages()), None)
            raise self.file.error(where + ("languages",), str(exc), unknown) from None

    def task(self, run: RunSpec, where: Path_, finetune, classification_only: bool) -> None:
        """The run's task exists (scored item by item when `classification_only`) and `finetune` can train on it."""
        from babelprune.data.tasks import get_task
        from babelprune.finetune.trainer import plan_runs

        try:
            name = json.dumps([run.verb.task, run.verb.task_options], sort_keys=True)
            if name not in self._tasks:
                self._tasks[name] = get_task(run.verb.task, **run.verb.task_options)
            task = self._tasks[name]
            if classification_only and task.kind not in ("classification", "pair-classification"):
                raise BabelpruneError(f"task '{task.name}' is a {task.kind} task; {run.kind} runs score classification tasks item by item")
            plan_runs(task, finetune)
        except BabelpruneError as exc:
            raise self.file.error(where, f"{run.label}: {exc}") from None


def describe_run(run: RunSpec) -> str:
    return f"{run.key}  {run.kind:10s} {run.label}"

