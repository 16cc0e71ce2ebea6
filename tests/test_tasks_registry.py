"""The task registry, label checks, deterministic sampling and training modes."""

from __future__ import annotations

import pytest

from babelprune.data.tasks import (
    Example,
    Task,
    get_task,
    label_id,
    language_list,
    sample_keys,
    task_names,
    task_options,
    training_examples,
    training_runs,
)
from babelprune.errors import BabelpruneError


class TinyTask(Task):
    """Two labels, three languages, train examples keyed '<lang>-<i>'."""

    name = "tiny"
    kind = "classification"
    labels = ("no", "yes")

    def languages(self) -> list[str]:
        return ["de", "en", "sw"]

    def _examples(self, lang: str, split: str) -> list[Example]:
        count = {"train": 2, "dev": 1, "test": 1}[split]
        return [Example(key=f"{lang}-{i}", lang=lang, text=f"{lang} {i}", label=i % 2) for i in range(count)]


def test_task_names_and_unknown_name() -> None:
    assert task_names() == ["bible-genre", "bible-retrieval", "wikiann", "xnli"]
    with pytest.raises(BabelpruneError, match="Unknown task 'sentiment'; choose one of: bible-genre, bible-retrieval, wikiann, xnli"):
        get_task("sentiment")


def test_unknown_option_lists_the_options() -> None:
    assert task_options("xnli") == ["source", "languages", "max_train", "max_eval", "seed", "cache_dir"]
    with pytest.raises(BabelpruneError, match="no option 'max_per_label'; its options are: source, languages"):
        get_task("xnli", max_per_label=3)


def test_bad_limits_are_clear_errors() -> None:
    with pytest.raises(BabelpruneError, match="max_train must be a positive whole number"):
        get_task("xnli", max_train=0)
    with pytest.raises(BabelpruneError, match="max_eval"):
        get_task("wikiann", max_eval=2.5)


def test_label_id_by_name_or_index() -> None:
    labels = ("O", "B-PER", "I-PER")
    assert label_id("I-PER", labels, "x") == 2
    assert label_id(1, labels, "x") == 1
    with pytest.raises(BabelpruneError, match="Unknown label 'B-MISC' in file.jsonl:3; the known labels are: O, B-PER, I-PER"):
        label_id("B-MISC", labels, "file.jsonl:3")
    with pytest.raises(BabelpruneError, match="Label index 7 .* 0=O, 1=B-PER, 2=I-PER"):
        label_id(7, labels, "x")
    with pytest.raises(BabelpruneError, match="neither a label name nor an index"):
        label_id(True, labels, "x")


def test_examples_checks_language_and_split() -> None:
    task = TinyTask()
    with pytest.raises(BabelpruneError, match="Task 'tiny' has no data for language 'fr'; it has: de, en, sw"):
        task.examples("fr", "train")
    with pytest.raises(BabelpruneError, match="Unknown task split 'validation'"):
        task.examples("en", "validation")  # type: ignore[arg-type]


def test_sample_keys_is_deterministic_and_capped() -> None:
    keys = [f"k{i}" for i in range(50)]
    first = sample_keys(keys, 10, seed=0)
    assert len(first) == 10 and first <= set(keys)
    assert sample_keys(reversed(keys), 10, seed=0) == first  # order of the input does not matter
    assert sample_keys(keys, 10, seed=1) != first
    assert sample_keys(keys, None, seed=0) == set(keys)
    assert sample_keys(keys, 80, seed=0) == set(keys)


def test_training_modes() -> None:
    task = TinyTask()
    zero = training_examples(task, "zero-shot", ["sw", "de"])
    assert list(zero) == ["en"]
    assert [e.key for e in zero["en"]] == ["en-0", "en-1"]

    multi = training_examples(task, "multilingual", ["sw", "de", "sw"])
    assert list(multi) == ["multilingual"]
    assert [e.key for e in multi["multilingual"]] == ["sw-0", "sw-1", "de-0", "de-1"]

    mono = training_examples(task, "monolingual", ["sw", "de"])
    assert {lang: [e.key for e in examples] for lang, examples in mono.items()} == {
        "sw": ["sw-0", "sw-1"],
        "de": ["de-0", "de-1"],
    }
    runs = training_runs(task, "zero-shot", ["sw", "de"])
    assert [(r.name, r.eval_languages) for r in runs] == [("en", ("sw", "de"))]
    assert [(r.name, r.eval_languages) for r in training_runs(task, "monolingual", ["de"])] == [("de", ("de",))]


def test_training_mode_errors() -> None:
    task = TinyTask()
    with pytest.raises(BabelpruneError, match="Unknown training mode 'few-shot'"):
        training_examples(task, "few-shot", ["de"])  # type: ignore[arg-type]
    with pytest.raises(BabelpruneError, match="no data for language 'fr'"):
        training_examples(task, "monolingual", ["fr"])
    with pytest.raises(BabelpruneError, match="no data for language 'xx'"):
        training_examples(task, "zero-shot", ["de"], source="xx")
    with pytest.raises(BabelpruneError, match="at least one language"):
        training_examples(task, "multilingual", [])
    task.kind = "retrieval"
    with pytest.raises(BabelpruneError, match="retrieval task and has no training"):
        training_examples(task, "zero-shot", ["de"])


def test_language_list_accepts_commas() -> None:
    assert language_list("en, sw,,en") == ["en", "sw"]
    assert language_list(["sw", "en", "sw"]) == ["sw", "en"]
    assert language_list(None) is None
