"""What decides a fine-tuning result, recorded next to it so that a stale result is never reused.

A run folder holds ``settings.json``: the model spec, the task (name, kind,
labels, languages, its plain options and a SHA-256 digest of the examples
the run trains and is tested on) and the `FinetuneConfig`, less `save_model`,
which does not change the scores (`scores_config`). A result or
checkpoint in that folder is reused only when the recorded settings equal
the current ones; `RunSettings.changes_from` names what differs, for the
message that explains why a run is refused or redone.

The digest makes the key complete even for options a task does not keep as
attributes (a corpus version, a data folder's content): the same examples,
labels and configuration give the same result, and anything else is a
different run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import astuple
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from babelprune.cache import atomic_write_text
from babelprune.data.tasks import Task, TrainingRun
from babelprune.devices import CPU_FLOAT32, Placement
from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig, limit_examples, scores_config

SETTINGS_FILE = "settings.json"
RESULT_FILE = "result.json"
RUN_OUTPUTS = (RESULT_FILE, "runs")  # what a run folder holds besides its settings


class RunSettings(BaseModel):
    """Everything that decides a fine-tuning result."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    task: dict[str, Any]
    config: dict[str, Any]

    def key(self) -> str:
        """A SHA-256 hex digest of the settings (canonical JSON, so dict order does not matter)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def changes_from(self, saved: RunSettings) -> list[str]:
        """What differs from `saved`: "model", "task <field>", or a config field name; [] when equal."""
        changes = ["model"] if self.model != saved.model else []
        changes += [f"task {field}" for field in _differing(self.task, saved.task)]
        changes += _differing(self.config, saved.config)
        return changes


def _differing(current: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    return [field for field in dict.fromkeys([*current, *saved]) if current.get(field) != saved.get(field)]


def _plain_options(task: Task) -> dict[str, Any]:
    """The task's public attributes that are plain values (its size limits, seed, source...)."""
    plain = (str, int, float, bool, type(None))
    return {name: value for name, value in sorted(vars(task).items()) if not name.startswith("_") and isinstance(value, plain)}


def _examples_digest(task: Task, runs: list[TrainingRun], langs: list[str], config: FinetuneConfig) -> str:
    """SHA-256 of the training examples of every run and the test examples of every evaluation language."""
    digest = hashlib.sha256()
    for run in runs:
        digest.update(repr(("run", run.name, run.eval_languages)).encode("utf-8"))
        for example in run.train:
            digest.update(repr(astuple(example)).encode("utf-8"))
    for lang in langs:
        digest.update(repr(("test", lang)).encode("utf-8"))
        for example in limit_examples(task.examples(lang, "test"), config.max_eval_examples, "eval", by_key=True):
            digest.update(repr(astuple(example)).encode("utf-8"))
    return digest.hexdigest()


def run_settings(
    model_spec: str, task: Task, config: FinetuneConfig, runs: list[TrainingRun], langs: list[str],
    place: Placement = CPU_FLOAT32,
) -> RunSettings:
    """The settings of fine-tuning `model_spec` on `task` with `config` (`runs` and `langs` as planned) in `place`.

    Another device or dtype gives other numbers, so it is part of the config; CPU float32 is left out,
    so that the settings of runs made before there was a choice stay what they were.
    """
    described = {
        **_plain_options(task),
        "name": task.name, "kind": task.kind, "labels": list(task.labels), "metric": task.metric,
        "languages": task.languages(), "examples": _examples_digest(task, runs, langs, config),
    }
    where = {} if place.is_default() else place.record()
    return RunSettings(model=model_spec, task=described, config=scores_config(config) | where)


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds outputs of a fine-tuning run (a result or per-run folders)."""
    return any((Path(folder) / name).exists() for name in (SETTINGS_FILE, *RUN_OUTPUTS))


def is_finetune_folder(folder: Path) -> bool:
    """Whether `folder` is a fine-tuning run folder: babelprune recognises its own by the settings file."""
    return (Path(folder) / SETTINGS_FILE).is_file()


def _left_by_an_atomic_write(name: str) -> bool:
    return name.startswith(".") and ".partial-" in name  # `babelprune.cache` temporaries of a killed run


def check_run_folder(folder: Path) -> None:
    """Refuse `folder` as a run's output when it is a file, or a non-empty folder that is not a fine-tuning run.

    A run writes settings, results and models into its folder and may clear
    them when its settings change, so a folder of anything else is not taken
    over. A folder with run outputs but no settings file (an older babelprune)
    is left to `recorded_changes`, which names what is missing.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BabelpruneError(f"Output {folder} is a file, but a fine-tuning run writes a folder; choose another --out.")
    if not folder.is_dir() or is_finetune_folder(folder) or holds_run(folder):
        return
    if any(not _left_by_an_atomic_write(entry.name) for entry in folder.iterdir()):
        raise BabelpruneError(
            f"Output folder {folder} is not empty and is not a babelprune fine-tuning folder (it has no {SETTINGS_FILE}); "
            "choose a new --out or an empty folder."
        )


def recorded_changes(folder: Path, settings: RunSettings) -> list[str]:
    """What changed since the run in `folder` was made: [] when it matches `settings` or there is no run yet."""
    file = Path(folder) / SETTINGS_FILE
    if not file.is_file():
        return ["no record of its settings"] if holds_run(folder) else []
    try:
        saved = RunSettings.model_validate_json(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValidationError):
        return ["unreadable record of its settings"]
    return settings.changes_from(saved)


def record_settings(folder: Path, settings: RunSettings) -> None:
    """Write `settings` into `folder` (atomically)."""
    atomic_write_text(Path(folder) / SETTINGS_FILE, json.dumps(settings.model_dump(mode="json"), indent=2) + "\n")
