"""WikiANN and XNLI from local fixture folders, and through a stubbed `datasets.load_dataset`."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from babelprune.data.ner_nli import NER_LABELS, NLI_LABELS, PANX_LANGUAGES, read_conll
from babelprune.data.tasks import get_task
from babelprune.errors import BabelpruneError

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
WIKIANN = FIXTURES / "wikiann"
XNLI = FIXTURES / "xnli"


def _tags(names: list[str]) -> tuple[int, ...]:
    return tuple(NER_LABELS.index(name) for name in names)


def test_wikiann_jsonl_with_ids_and_names() -> None:
    task = get_task("wikiann", source=str(WIKIANN), max_train=None, max_eval=None)
    assert task.languages() == ["en", "sw"]
    assert (task.kind, task.metric, task.labels) == ("token-classification", "entity_f1", NER_LABELS)
    train = task.examples("en", "train")
    assert [e.key for e in train] == ["train:0", "train:1", "train:2", "train:3", "train:4"]
    assert train[0].tokens == ("John", "Smith", "lives", "in", "Paris", ".")
    assert train[0].tags == _tags(["B-PER", "I-PER", "O", "O", "B-LOC", "O"])
    assert train[1].tags == _tags(["O", "B-ORG", "I-ORG", "O", "O", "B-LOC", "I-LOC", "O"])
    assert train[1].text is None and train[1].lang == "en"
    assert [e.tokens[0] for e in task.examples("en", "dev")] == ["Alan", "Rome"]  # validation.jsonl
    assert len(task.examples("en", "test")) == 3


def test_wikiann_conll_files() -> None:
    task = get_task("wikiann", source=str(WIKIANN), languages=["sw"], max_train=None, max_eval=None)
    train = task.examples("sw", "train")
    assert [e.tokens for e in train] == [
        ("Juma", "anaishi", "Nairobi", "."),
        ("Benki", "Kuu", "ya", "Kenya", "imefungwa", "."),
        ("Amina", "Hassan", "alienda", "Mombasa", "."),
    ]
    assert train[1].tags == _tags(["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O"])
    dev = task.examples("sw", "dev")  # dev.conll; the -DOCSTART- line is ignored
    assert [(e.key, e.tokens) for e in dev] == [("dev:0", ("Wanjiku", "yuko", "Kisumu"))]
    assert [e.tokens for e in task.examples("sw", "test")] == [("Baraka", "anasoma"), ("Arusha", "ni", "mji")]


def test_wikiann_limits_are_deterministic_subsets() -> None:
    full = [e.key for e in get_task("wikiann", source=str(WIKIANN), max_train=None).examples("en", "train")]
    subsets = set()
    for seed in range(8):
        task = get_task("wikiann", source=str(WIKIANN), max_train=2, seed=seed)
        keys = [e.key for e in task.examples("en", "train")]
        assert len(keys) == 2 and keys == [k for k in full if k in keys]  # file order kept
        assert keys == [e.key for e in get_task("wikiann", source=str(WIKIANN), max_train=2, seed=seed).examples("en", "train")]
        subsets.add(tuple(keys))
    assert len(subsets) > 1  # the seed matters


def test_wikiann_unknown_label_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "train.jsonl").write_text('{"tokens": ["a", "b"], "ner_tags": ["O", "B-MISC"]}\n')
    task = get_task("wikiann", source=str(tmp_path))
    with pytest.raises(BabelpruneError, match=r"Unknown label 'B-MISC' in .*train.jsonl:1; the known labels are: O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC"):
        task.examples("en", "train")
    (tmp_path / "en" / "train.jsonl").write_text('{"tokens": ["a", "b"], "ner_tags": [0]}\n')
    with pytest.raises(BabelpruneError, match="2 tokens but 1 tags"):
        get_task("wikiann", source=str(tmp_path)).examples("en", "train")
    (tmp_path / "en" / "train.jsonl").write_text('{"tokens": ["a"], "ner_tags": [9]}\n')
    with pytest.raises(BabelpruneError, match="Label index 9"):
        get_task("wikiann", source=str(tmp_path)).examples("en", "train")
    with pytest.raises(BabelpruneError, match="no 'test' file for task 'wikiann'; add test.jsonl"):
        get_task("wikiann", source=str(tmp_path)).examples("en", "test")
    (tmp_path / "en" / "train.jsonl").write_text("not json\n")
    with pytest.raises(BabelpruneError, match="Line 1 of .* is not valid JSON"):
        get_task("wikiann", source=str(tmp_path)).examples("en", "train")


def test_conll_format_errors(tmp_path: Path) -> None:
    path = tmp_path / "train.conll"
    path.write_text("Juma B-PER\nnoTag\n")
    with pytest.raises(BabelpruneError, match="Line 2 of .* is not 'token<TAB>tag'"):
        read_conll(path)
    path.write_text("New York\tB-LOC\n")  # a tab separates; the token may hold a space
    assert read_conll(path)[0][1] == {"tokens": ["New York"], "ner_tags": ["B-LOC"]}


def test_languages_of_folders_and_defaults(tmp_path: Path) -> None:
    with pytest.raises(BabelpruneError, match="Task 'wikiann' has no data for language 'fr'; it has: en, sw"):
        get_task("wikiann", source=str(WIKIANN)).examples("fr", "train")
    with pytest.raises(BabelpruneError, match="has no data for language 'de'"):
        get_task("wikiann", source=str(WIKIANN), languages=["de"]).languages()
    with pytest.raises(BabelpruneError, match="has no <lang>/train.jsonl"):
        get_task("xnli", source=str(tmp_path)).languages()
    assert get_task("wikiann").languages() == sorted(PANX_LANGUAGES)
    assert len(PANX_LANGUAGES) == 40
    assert get_task("xnli", languages=["sw", "en"]).languages() == ["en", "sw"]


def test_xnli_local_rows() -> None:
    task = get_task("xnli", source=str(XNLI), max_train=None, max_eval=None)
    assert task.languages() == ["en", "fr"]
    assert (task.kind, task.metric, task.labels) == ("pair-classification", "accuracy", NLI_LABELS)
    train = task.examples("en", "train")
    # Row 3 is labelled -1 and skipped; its key is not reused.
    assert [(e.key, e.label) for e in train] == [("train:0", 0), ("train:1", 2), ("train:2", 1), ("train:4", 0)]
    assert (train[0].text, train[0].text_pair) == ("A man is playing a guitar.", "A man plays music.")
    en_dev, fr_dev = task.examples("en", "dev"), task.examples("fr", "dev")
    assert [(e.key, e.label) for e in en_dev] == [(e.key, e.label) for e in fr_dev] == [("dev:0", 0), ("dev:1", 2), ("dev:2", 1)]
    assert fr_dev[0].text == "Le chat dort sur le canapé."


def test_xnli_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "train.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": "maybe"}\n')
    with pytest.raises(BabelpruneError, match="Unknown label 'maybe' .* entailment, neutral, contradiction"):
        get_task("xnli", source=str(tmp_path)).examples("en", "train")
    (tmp_path / "en" / "train.jsonl").write_text('{"premise": "a", "label": 0}\n')
    with pytest.raises(BabelpruneError, match="needs text 'premise', 'hypothesis'"):
        get_task("xnli", source=str(tmp_path)).examples("en", "train")


def test_hugging_face_source_maps_class_label_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # A dataset whose ClassLabel order differs from ours: ids must be mapped by name.
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    features = datasets.Features(
        {"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))}
    )
    rows = datasets.Dataset.from_dict(
        {"tokens": [["Paris", "is", "nice"], ["Ada", "Lovelace"], ["nothing"]], "ner_tags": [[1, 0, 0], [3, 4], [0]]},
        features=features,
    )
    calls = []

    def fake_load_dataset(name: str, config: str, split: str, cache_dir: str | None = None) -> datasets.Dataset:
        calls.append((name, config, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = get_task("wikiann", languages=["sw"], max_eval=2, seed=0)
    dev = task.examples("sw", "dev")
    assert calls == [("unimelb-nlp/wikiann", "sw", "validation")]
    assert len(dev) == 2
    by_first = {e.tokens[0]: e.tags for e in dev}
    expected = {"Paris": _tags(["B-LOC", "O", "O"]), "Ada": _tags(["B-PER", "I-PER"]), "nothing": _tags(["O"])}
    assert by_first == {token: expected[token] for token in by_first}


def test_hugging_face_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise ConnectionError("hub unreachable\nmore details")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(BabelpruneError, match="Cannot load config 'en' split 'test' of dataset 'facebook/xnli' \\(hub unreachable\\)"):
        get_task("xnli").examples("en", "test")
