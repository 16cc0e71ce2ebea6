"""Labelled multilingual tasks for fine-tuning experiments.

A task gives, per language and split ('train', 'dev', 'test'), a list of
`Example`s. Four kinds exist:

- ``classification``: one text, one label (``bible-genre``);
- ``pair-classification``: a text pair, one label (``xnli``);
- ``token-classification``: tokens with one tag each (``wikiann``);
- ``retrieval``: aligned texts without labels, scored by English-to-X
  top-1 retrieval (``bible-retrieval``).

Every task is deterministic: the same options give the same examples, in the
same order, on every machine. Examples carry an alignment ``key``; aligned
tasks (the Bible tasks, XNLI dev/test) use the same key for the same item
in every language.

`training_examples` returns the training sets of the three cross-lingual
training modes of Ogueji et al. (2022): ``zero-shot`` (train on the source
language only, evaluate on all), ``multilingual`` (train on all listed
languages together) and ``monolingual`` (one model per language).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from babelprune.data.languages import Language, language_info
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code

TaskKind = Literal["classification", "pair-classification", "token-classification", "retrieval"]
TaskSplit = Literal["train", "dev", "test"]
TASK_SPLITS: tuple[str, ...] = ("train", "dev", "test")
TrainingMode = Literal["zero-shot", "multilingual", "monolingual"]
TRAINING_MODES: tuple[str, ...] = ("zero-shot", "multilingual", "monolingual")


@dataclass(frozen=True)
class Example:
    """One labelled item of a task in one language.

    Which fields are set depends on the task kind: ``text`` (+ ``text_pair``
    for pairs) and ``label`` for classification, ``tokens`` and ``tags`` (ids
    into ``task.labels``, one per token) for token classification, ``text``
    alone for retrieval.
    """

    key: str
    lang: str
    text: str | None = None
    text_pair: str | None = None
    tokens: tuple[str, ...] | None = None
    label: int | None = None
    tags: tuple[int, ...] | None = None


class Task(ABC):
    """Examples per language and split. Subclasses set the class fields and implement two methods."""

    name: str = "task"
    kind: TaskKind = "classification"
    labels: tuple[str, ...] = ()
    metric: str = "accuracy"  # "accuracy" | "entity_f1" | "top1"

    @abstractmethod
    def languages(self) -> list[str]:
        """Language keys this task has data for."""

    @abstractmethod
    def _examples(self, lang: str, split: str) -> list[Example]:
        """Examples of a checked language and split, in a stable order."""

    def examples(self, lang: str, split: TaskSplit) -> list[Example]:
        """Examples of `lang` in `split` ('train', 'dev' or 'test'); deterministic."""
        check_split(split)
        self.check_language(lang)
        examples = self._examples(lang, split)
        if not examples:
            raise BabelpruneError(
                f"Task '{self.name}' has no '{split}' examples for language '{lang}'; "
                "choose another language or add data for it."
            )
        return examples

    def language(self, lang: str) -> Language:
        """Metadata (name, script, resource level) of one of this task's languages."""
        return language_info(lang)

    def check_language(self, lang: str) -> str:
        """Return `lang` if the task has data for it, else raise naming the languages it has."""
        check_language_code(lang, f"for task '{self.name}'")
        available = self.languages()
        if lang not in available:
            raise BabelpruneError(
                f"Task '{self.name}' has no data for language '{lang}'; "
                f"it has: {', '.join(available)}."
            )
        return lang

    def label_id(self, value: int | str, where: str = "") -> int:
        """Index into `labels` of a label given by name or index; a clear error otherwise."""
        return label_id(value, self.labels, where or f"task '{self.name}'")


def check_split(split: str) -> str:
    if split not in TASK_SPLITS:
        raise BabelpruneError(f"Unknown task split '{split}'; use one of {', '.join(TASK_SPLITS)}.")
    return split


def label_id(value: int | str, labels: Sequence[str], where: str) -> int:
    """Index of `value` (a label name or an index) in `labels`; raise naming the known labels."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BabelpruneError(
            f"Label {value!r} in {where} is neither a label name nor an index; "
            f"use one of: {', '.join(labels)}."
        )
    if isinstance(value, int):
        if 0 <= value < len(labels):
            return value
        raise BabelpruneError(
            f"Label index {value} in {where} is out of range; the labels are "
            f"{', '.join(f'{i}={name}' for i, name in enumerate(labels))}."
        )
    if value in labels:
        return labels.index(value)
    raise BabelpruneError(
        f"Unknown label '{value}' in {where}; the known labels are: {', '.join(labels)}."
    )


def stable_rank(key: str, seed: int | str = 0) -> int:
    """A machine-independent pseudo-random rank of `key` for a seed (for deterministic sampling)."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def sample_keys(keys: Iterable[str], limit: int | None, seed: int | str) -> set[str]:
    """The `limit` keys with the lowest `stable_rank` (all keys when `limit` is None)."""
    keys = list(keys)
    if limit is None or limit >= len(keys):
        return set(keys)
    return set(sorted(keys, key=lambda k: stable_rank(k, seed))[:limit])


def check_limit(name: str, value: int | None) -> int | None:
    """A size limit option: None (no limit) or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise BabelpruneError(f"Option {name} must be a positive whole number or None, not {value!r}.")
    return value


def language_list(languages: Sequence[str] | str | None, where: str = "") -> list[str] | None:
    """A languages option as a list without repeats; a string is split on commas ("en,sw").

    Every code must have the language-code form (`babelprune.names`): typed codes end up in
    folder names (one model or one run per language), so "../x" is refused here, before any work.
    `where` places a bad code in the error ("in --calib-langs").
    """
    if languages is None:
        return None
    if isinstance(languages, str):
        text, languages = languages, [part.strip() for part in languages.split(",") if part.strip()]
        if not languages:  # typed, but only separators or spaces: a slip, not "every language"
            place = f" {where}" if where else ""
            raise BabelpruneError(f"The language list {text!r}{place} names no language; give codes separated by commas, such as en,fr,sw.")
    return [check_language_code(lang, where) for lang in dict.fromkeys(languages)]


# --------------------------------------------------------------------------- registry

# Task name -> "module:class". Imported on demand so that this module does not
# depend on the task implementations (which import it).
TASKS: dict[str, str] = {
    "bible-genre": "babelprune.data.bible_tasks:BibleGenreTask",
    "bible-retrieval": "babelprune.data.bible_tasks:BibleRetrievalTask",
    "wikiann": "babelprune.data.ner_nli:WikiannTask",
    "xnli": "babelprune.data.ner_nli:XnliTask",
}


def task_names() -> list[str]:
    """Names of the built-in tasks."""
    return sorted(TASKS)


def task_class(name: str) -> type[Task]:
    """The class of a built-in task; unknown names raise listing the known ones."""
    if name not in TASKS:
        raise BabelpruneError(f"Unknown task '{name}'; choose one of: {', '.join(task_names())}.")
    module_name, class_name = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def task_options(name: str) -> list[str]:
    """The option names `get_task(name, ...)` accepts."""
    parameters = inspect.signature(task_class(name).__init__).parameters
    return [p for p in parameters if p != "self"]


def get_task(name: str, **options: object) -> Task:
    """The task `name` built with `options` (see each task class for its options)."""
    cls = task_class(name)
    accepted = task_options(name)
    unknown = [option for option in options if option not in accepted]
    if unknown:
        raise BabelpruneError(
            f"Task '{name}' has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(accepted) or 'none'}."
        )
    return cls(**options)


# --------------------------------------------------------------------------- training modes


@dataclass(frozen=True)
class TrainingRun:
    """One model to fine-tune: its training examples and the languages it is evaluated on."""

    name: str
    train: list[Example]
    eval_languages: tuple[str, ...]


def training_runs(
    task: Task, mode: TrainingMode, langs: Sequence[str], source: str = "en"
) -> list[TrainingRun]:
    """The fine-tuning runs of a training mode over evaluation languages `langs`.

    - ``zero-shot``: one run named after `source`, trained on its training
      set alone and evaluated on every language in `langs`;
    - ``multilingual``: one run named ``multilingual``, trained on the
      training sets of all `langs` together (in the order given) and evaluated
      on all of them;
    - ``monolingual``: one run per language, trained and evaluated on it.
    """
    if mode not in TRAINING_MODES:
        raise BabelpruneError(f"Unknown training mode '{mode}'; use one of {', '.join(TRAINING_MODES)}.")
    if task.kind == "retrieval":
        raise BabelpruneError(
            f"Task '{task.name}' is a retrieval task and has no training; evaluate it without fine-tuning."
        )
    langs = list(dict.fromkeys(langs))  # drop repeats, keep order
    if not langs:
        raise BabelpruneError(f"Give at least one language to train task '{task.name}' on.")
    for lang in [*langs, source]:
        task.check_language(lang)
    if mode == "zero-shot":
        return [TrainingRun(source, task.examples(source, "train"), tuple(langs))]
    if mode == "multilingual":
        train = [example for lang in langs for example in task.examples(lang, "train")]
        return [TrainingRun("multilingual", train, tuple(langs))]
    return [TrainingRun(lang, task.examples(lang, "train"), (lang,)) for lang in langs]


def training_examples(
    task: Task, mode: TrainingMode, langs: Sequence[str], source: str = "en"
) -> dict[str, list[Example]]:
    """{run name: training examples} of `training_runs` (zero-shot: {source: ...},
    multilingual: {"multilingual": ...}, monolingual: {lang: ...} per language)."""
    return {run.name: run.train for run in training_runs(task, mode, langs, source)}
