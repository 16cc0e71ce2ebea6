"""The experiment file: what a sweep runs, validated whole before anything runs.

    name: mwanda-small
    models: [gemma3-270m]
    calibration: {corpus: bible, languages: [en, fr, sw], samples: 8}
    evaluation:
      - {name: bible, corpus: bible, max_tokens: 2048}
    runs:
      - kind: dense
      - kind: oneshot
        prune: {method: [wanda, mwanda], sparsity: [0.5, 0.6]}
    resources: {cpus: 1, memory_gb: 4}
    device: cpu          # where every run runs (default cpu); an entry may say its own
    dtype: auto          # the type its model runs in (default auto: float32 on the CPU)

Each entry of `runs` names its kind and holds that verb's config under the
verb's key: `prune` (a PruneConfig), `structured` (a StructuredConfig),
`trim` (a TrimConfig) or `finetune` (a task and a FinetuneConfig), or the
key and config of any kind registered in babelprune.sweep.kinds. A field
given as a list expands into a grid over its values (a field that itself
takes a list, such as `languages`, expands over a list of lists); the
experiment's `calibration` expands the same way, and an entry may replace
it with its own. `device` and `dtype`, at the top or in an entry, expand
the same way (`dtype: [float32, bfloat16]` is two runs of every config). The grid is expanded and every config validated in
`babelprune.sweep.runs`; this module holds the shapes.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from babelprune.choices import ModelDtype, Split
from babelprune.errors import BabelpruneError
from babelprune.prune.calibration import CalibrationSpec  # noqa: F401 - the experiment's `calibration` shape, defined with the windows it asks for
from babelprune.sweep.kinds import RUN_KINDS, TASK_KINDS, FinetuneRun, unknown_kind, verb_keys

# A run's kind: a name registered in babelprune.sweep.kinds.RUN_KINDS (not a fixed Literal, so that a
# kind registered later is one an experiment file may name). TASK_KINDS: those that load, train and score
# their own model on a task (no evaluation sets, no shared model session); FinetuneRun: the finetune
# kind's config. Both are re-exported from there.
RunKind = str
__all__ = ["TASK_KINDS", "CalibrationSpec", "Devices", "Dtypes", "EvaluationSet", "Experiment", "FinetuneRun", "Resources", "RunEntry", "RunKind",
           "default_store_name", "recipe_names", "recipe_path"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvaluationSet(_Strict):
    """One named evaluation (babelprune.api.evaluate); every run but fine-tuning is scored on each."""

    name: str
    corpus: str = "bible"
    split: Split = "eval"
    languages: list[str] | None = None  # None: every language of the corpus
    seq_len: int = Field(256, ge=2)
    max_tokens: int = Field(2048, ge=1)
    batch_size: int = Field(8, ge=1)


class Resources(_Strict):
    """What one Ray task asks for (the local backend runs one run at a time and ignores them).

    `gpus` is what an actor whose runs are on a CUDA device asks for (Ray's `num_gpus`); an actor
    whose runs are on the CPU or MPS asks for none, whatever it says, so that CPU runs never wait
    for a GPU. A fraction lets several actors share one card.
    """

    cpus: float = Field(1.0, gt=0)
    memory_gb: float | None = Field(None, gt=0)
    gpus: float = Field(1.0, gt=0)


# A device or dtype as written: one name, or a list of them (a grid, like any field given as a list).
Devices = str | list[str]
Dtypes = ModelDtype | list[ModelDtype]


def _device_forms(value: Devices | None) -> Devices | None:
    """Each device name checked for its form only: the machines of a Ray cluster may have devices this one lacks."""
    from babelprune.devices import device_form

    if value is None:
        return None
    names = value if isinstance(value, list) else [value]
    if not names:
        raise ValueError("an empty list gives no runs; give at least one device")
    try:
        checked = [device_form(name) for name in names]
    except BabelpruneError as exc:
        # The sentence without "this machine has: ...": the file is checked for forms, not against this machine.
        raise ValueError(str(exc).split(";")[0]) from None
    return checked if isinstance(value, list) else checked[0]


def _some_dtypes(value: Dtypes | None) -> Dtypes | None:
    if isinstance(value, list) and not value:
        raise ValueError("an empty list gives no runs; give at least one dtype")
    return value


_VERB_CONFIG = TypeAdapter(dict[str, Any] | None)  # a verb's config as written: a mapping whose list fields are grids


class RunEntry(BaseModel):
    """One entry of `runs`: a kind and, under its verb's key, a config whose list fields are grids.

    The verbs' keys (prune, structured, trim, finetune, task_structured,
    task_dynamic) are those of the registered kinds, so they are no fields
    here: `_registered_names` checks the kind and the keys against the
    registry when the entry is read, with the errors a field would give.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: RunKind
    calibration: dict[str, Any] | None = None  # replaces the experiment's calibration for this entry
    device: Devices | None = None  # replaces the experiment's device for this entry
    dtype: Dtypes | None = None  # replaces the experiment's dtype for this entry

    @field_validator("device")
    @classmethod
    def _device_forms(cls, value: Devices | None) -> Devices | None:
        return _device_forms(value)

    @field_validator("dtype")
    @classmethod
    def _some_dtypes(cls, value: Dtypes | None) -> Dtypes | None:
        return _some_dtypes(value)

    @model_validator(mode="wrap")
    @classmethod
    def _registered_names(cls, data: Any, handler):
        problems = _entry_problems(data) if isinstance(data, dict) else []
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return handler(data)

    @model_validator(mode="after")
    def _only_its_own_verb(self) -> RunEntry:
        own = RUN_KINDS[self.kind].key
        others = [key for key in verb_keys() if key != own and getattr(self, key, None) is not None]
        if others:
            where = f"its config goes under '{own}'" if own else "it takes no config"
            raise ValueError(f"a '{self.kind}' run has no '{others[0]}' ({where})")
        return self

    @property
    def verb(self) -> dict[str, Any]:
        """The verb's config as written ({} when left out: every default)."""
        own = RUN_KINDS[self.kind].key
        return dict(getattr(self, own, None) or {}) if own else {}


def _entry_problems(data: dict[str, Any]) -> list[InitErrorDetails]:
    """What a `runs` entry gets wrong about the registry: its kind, then each key that no kind takes."""
    problems: list[InitErrorDetails] = []
    if "kind" in data and not (isinstance(data["kind"], str) and data["kind"] in RUN_KINDS):
        problems.append(InitErrorDetails(type=PydanticCustomError("literal_error", "{sentence}", {"sentence": unknown_kind()}),
                                         loc=("kind",), input=data["kind"]))
    keys = verb_keys()
    for key, value in data.items():
        if key in RunEntry.model_fields:
            continue
        if key not in keys:
            known = ", ".join(sorted({*RunEntry.model_fields, *keys}))
            unknown = PydanticCustomError("unknown_key", "unknown key '{key}'; the keys here are: {known}", {"key": key, "known": known})
            # The input as a mapping, as pydantic gives it for an unknown key: the sentence quotes the key, not its value.
            problems.append(InitErrorDetails(type=unknown, loc=(key,), input={key: value}))
            continue
        try:
            _VERB_CONFIG.validate_python(value)
        except ValidationError as exc:
            problems += [InitErrorDetails(type=e["type"], loc=(key, *e["loc"]), input=e["input"], ctx=e.get("ctx", {}))
                         for e in exc.errors()]
    return problems


class Experiment(_Strict):
    """A whole experiment file."""

    name: str
    description: str = ""  # one line, shown by `babelprune recipes`
    models: list[str] = Field(min_length=1)  # aliases, folders or hub ids; every run is run on each
    calibration: dict[str, Any] = Field(default_factory=dict)  # a CalibrationSpec whose list fields are grids
    evaluation: list[EvaluationSet] = Field(default_factory=list)
    runs: list[RunEntry] = Field(min_length=1)
    resources: Resources = Field(default_factory=Resources)
    # Where every run runs and in which type, unless its entry says otherwise. The CPU in float32 is
    # the default, as for every command: the runs of files written before these fields keep their keys.
    device: Devices = "cpu"
    dtype: Dtypes = "auto"

    @field_validator("device")
    @classmethod
    def _device_forms(cls, value: Devices | None) -> Devices | None:
        return _device_forms(value)

    @field_validator("dtype")
    @classmethod
    def _some_dtypes(cls, value: Dtypes | None) -> Dtypes | None:
        return _some_dtypes(value)

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if len(value) > 200 or not _NAME.fullmatch(value):  # fullmatch: '$' alone would let a final newline through
            raise ValueError("a name is letters, digits, '.', '_' or '-' (it names the default store file)")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("evaluation")
    @classmethod
    def _unique_names(cls, value: list[EvaluationSet]) -> list[EvaluationSet]:
        names = [item.name for item in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"the evaluation set name {twice[0]!r} is used twice; give each set its own name")
        return value

    @model_validator(mode="after")
    def _something_to_measure(self) -> Experiment:
        if not self.evaluation and any(not RUN_KINDS[entry.kind].task for entry in self.runs):
            raise ValueError(
                "the experiment has runs to evaluate but no evaluation sets; add `evaluation:` with at least one "
                "{name, corpus} entry"
            )
        return self


def default_store_name(experiment: Experiment) -> str:
    """The store a sweep writes when no --store is given: <name>.sqlite in the current folder."""
    return f"{experiment.name}.sqlite"


def recipe_names() -> list[str]:
    """The experiment files packaged with babelprune (src/babelprune/sweep/recipes/*.yaml)."""
    from importlib.resources import files

    return sorted(entry.name.removesuffix(".yaml") for entry in files("babelprune.sweep").joinpath("recipes").iterdir()
                  if entry.name.endswith(".yaml"))


def recipe_path(name: str):
    """The file of a packaged recipe; an unknown name is one sentence listing the known ones."""
    from importlib.resources import files

    if name not in recipe_names():
        raise BabelpruneError(f"Unknown recipe '{name}'; the recipes are: {', '.join(recipe_names())} (see `babelprune recipes`).")
    return files("babelprune.sweep").joinpath("recipes", f"{name}.yaml")
