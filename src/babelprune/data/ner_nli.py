"""WikiANN (PAN-X) named-entity recognition and XNLI natural-language inference.

Both tasks read their rows either from a Hugging Face `datasets` dataset
(``unimelb-nlp/wikiann`` and ``facebook/xnli``, one configuration per
language, splits ``train``/``validation``/``test``; needs the hub or a
local `datasets` cache) or from a local folder given as ``source``::

    <source>/<lang>/train.<ext>
    <source>/<lang>/validation.<ext>   (or dev.<ext>)
    <source>/<lang>/test.<ext>

Accepted files:

- ``.jsonl`` (both tasks), one object per line. WikiANN rows are
  ``{"tokens": [...], "ner_tags": [...]}``; XNLI rows are
  ``{"premise": ..., "hypothesis": ..., "label": ...}``. Labels are names
  (``"B-PER"``, ``"neutral"``) or indices into the task's labels, which
  follow the Hugging Face datasets' order.
- ``.conll``, ``.tsv`` or ``.txt`` (WikiANN only), CoNLL style: one
  ``token<TAB>tag`` per line (a tab, or else the last space, separates
  them), a blank line between sentences, ``-DOCSTART-`` lines ignored.

Example keys are ``"<split>:<row index>"`` (row index in the source file),
so rows that are aligned across languages (XNLI dev and test) share keys.
Sizes are capped by ``max_train`` and ``max_eval`` (dev and test), choosing
rows by a stable hash of the key and ``seed``, kept in file order.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from babelprune.data.hf import _first_line, _import_datasets
from babelprune.data.tasks import Example, Task, check_limit, language_list, sample_keys
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code, file_component

NER_LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
NLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")

# The 40 PAN-X languages of the XTREME benchmark (all are WikiANN configurations).
PANX_LANGUAGES: tuple[str, ...] = (
    "af", "ar", "bg", "bn", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fr", "he",
    "hi", "hu", "id", "it", "ja", "jv", "ka", "kk", "ko", "ml", "mr", "ms", "my", "nl",
    "pt", "ru", "sw", "ta", "te", "th", "tl", "tr", "ur", "vi", "yo", "zh",
)  # fmt: skip
XNLI_LANGUAGES: tuple[str, ...] = (
    "ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh",
)  # fmt: skip

# Task split -> accepted file stems (first is the Hugging Face split name).
_SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "dev": ("validation", "dev"),
    "test": ("test",),
}
_CONLL_SUFFIXES = (".conll", ".tsv", ".txt")

Row = dict[str, Any]


class _RowsTask(Task):
    """A task whose examples are rows of per-language, per-split files or dataset configs."""

    hf_dataset: str = ""
    default_languages: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = (".jsonl",)

    def __init__(
        self,
        source: str | None = None,
        languages: list[str] | str | None = None,
        max_train: int | None = 1000,
        max_eval: int | None = 500,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        self.source = source or self.hf_dataset
        self.folder = Path(self.source).expanduser() if Path(self.source).expanduser().is_dir() else None
        self.max_train = check_limit("max_train", max_train)
        self.max_eval = check_limit("max_eval", max_eval)
        self.seed = seed
        self.cache_dir = cache_dir
        langs = language_list(languages)
        self._langs = sorted(langs) if langs is not None else None
        self._cache: dict[tuple[str, str], list[Example]] = {}

    # ------------------------------------------------------------ languages

    def languages(self) -> list[str]:
        if self.folder is None:
            return list(self._langs) if self._langs is not None else sorted(self.default_languages)
        found = sorted(
            # A folder's name is its language code: checked, since it names run folders downstream.
            check_language_code(d.name, f"(a folder in {self.folder})", "rename that folder")
            for d in self.folder.iterdir()
            if d.is_dir() and any(self._files_in(d))
        )
        if not found:
            raise BabelpruneError(
                f"Folder {self.folder} has no <lang>/train{self.suffixes[0]} (or validation, test) "
                f"files for task '{self.name}'; lay it out as described in the documentation."
            )
        if self._langs is None:
            return found
        missing = [lang for lang in self._langs if lang not in found]
        if missing:
            raise BabelpruneError(
                f"Folder {self.folder} has no data for language {', '.join(map(repr, missing))}; "
                f"it has: {', '.join(found)}."
            )
        return list(self._langs)

    def _files_in(self, folder: Path) -> Iterable[Path]:
        for stems in _SPLIT_FILES.values():
            for stem in stems:
                for suffix in self.suffixes:
                    if (folder / f"{stem}{suffix}").is_file():
                        yield folder / f"{stem}{suffix}"

    # ------------------------------------------------------------ examples

    def _examples(self, lang: str, split: str) -> list[Example]:
        if (lang, split) not in self._cache:
            rows, names = self._load_rows(lang, split)
            examples = []
            for index, where, row in rows:
                example = self._parse(f"{split}:{index}", lang, row, names, where)
                if example is not None:
                    examples.append(example)
            self._cache[lang, split] = examples
        return self._cache[lang, split]

    def _kept_indices(self, split: str, count: int) -> list[int]:
        """Row indices kept under the split's size limit, in file order."""
        limit = self.max_train if split == "train" else self.max_eval
        keep = sample_keys((f"{split}:{i}" for i in range(count)), limit, self.seed)
        return [i for i in range(count) if f"{split}:{i}" in keep]

    def _load_rows(self, lang: str, split: str) -> tuple[list[tuple[int, str, Row]], dict[str, list[str]]]:
        """Kept rows as (index, where, row), and {field: label names} for fields whose
        integers the source names (Hugging Face ClassLabel features)."""
        if self.folder is None:
            return _hf_rows(self.source, lang, _SPLIT_FILES[split][0], self.cache_dir, lambda n: self._kept_indices(split, n))
        rows = self._read_file(self._local_file(lang, split))
        return [(i, *rows[i]) for i in self._kept_indices(split, len(rows))], {}

    def _local_file(self, lang: str, split: str) -> Path:
        # `lang` passed check_language, yet the join is checked too: this is where a code meets the disk.
        # Not `child_path`: a language folder linked to data elsewhere is the user's own layout, and is only read.
        folder = self.folder / file_component(lang, "language folder")  # type: ignore[operator]
        for stem in _SPLIT_FILES[split]:
            for suffix in self.suffixes:
                if (folder / f"{stem}{suffix}").is_file():
                    return folder / f"{stem}{suffix}"
        expected = " or ".join(f"{stem}{self.suffixes[0]}" for stem in _SPLIT_FILES[split])
        raise BabelpruneError(
            f"Folder {folder} has no '{split}' file for task '{self.name}'; add {expected}."
        )

    def _read_file(self, path: Path) -> list[tuple[str, Row]]:
        if path.suffix == ".jsonl":
            return read_jsonl(path)
        return read_conll(path)

    @abstractmethod
    def _parse(self, key: str, lang: str, row: Row, names: dict[str, list[str]], where: str) -> Example | None:
        """The example of one row (None to skip it); `where` names the row in errors."""


class WikiannTask(_RowsTask):
    """WikiANN / PAN-X named-entity recognition (IOB2 tags; metric: entity F1).

    Options: ``source`` (a folder as described in the module docstring, or a
    `datasets` name; default ``unimelb-nlp/wikiann``), ``languages`` (default:
    the folder's languages, or the 40 PAN-X languages of XTREME),
    ``max_train``, ``max_eval``, ``seed``, ``cache_dir`` (for `datasets`).
    """

    name = "wikiann"
    kind = "token-classification"
    labels = NER_LABELS
    metric = "entity_f1"
    hf_dataset = "unimelb-nlp/wikiann"
    default_languages = PANX_LANGUAGES
    suffixes = (".jsonl", *_CONLL_SUFFIXES)

    def _parse(self, key: str, lang: str, row: Row, names: dict[str, list[str]], where: str) -> Example | None:
        tokens, tags = row.get("tokens"), row.get("ner_tags")
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise BabelpruneError(f"Row {where} needs lists 'tokens' and 'ner_tags'; fix the row.")
        if len(tokens) != len(tags):
            raise BabelpruneError(
                f"Row {where} has {len(tokens)} tokens but {len(tags)} tags; give one tag per token."
            )
        if not tokens:
            return None
        tag_names = names.get("ner_tags")
        ids = tuple(
            self.label_id(tag_names[tag] if tag_names and isinstance(tag, int) else tag, where)
            for tag in tags
        )
        return Example(key=key, lang=lang, tokens=tuple(str(t) for t in tokens), tags=ids)


class XnliTask(_RowsTask):
    """XNLI natural-language inference (premise, hypothesis -> 3 labels; metric: accuracy).

    Options as for `WikiannTask`; default source ``facebook/xnli`` and its 15
    languages. Rows labelled -1 (unlabelled in GLUE-style sets) are skipped.
    """

    name = "xnli"
    kind = "pair-classification"
    labels = NLI_LABELS
    metric = "accuracy"
    hf_dataset = "facebook/xnli"
    default_languages = XNLI_LANGUAGES

    def _parse(self, key: str, lang: str, row: Row, names: dict[str, list[str]], where: str) -> Example | None:
        premise, hypothesis, label = row.get("premise"), row.get("hypothesis"), row.get("label")
        if not isinstance(premise, str) or not isinstance(hypothesis, str) or label is None:
            raise BabelpruneError(f"Row {where} needs text 'premise', 'hypothesis' and a 'label'; fix the row.")
        if label == -1:
            return None
        label_names = names.get("label")
        if label_names and isinstance(label, int) and 0 <= label < len(label_names):
            label = label_names[label]
        return Example(key=key, lang=lang, text=premise, text_pair=hypothesis, label=self.label_id(label, where))


# --------------------------------------------------------------------------- readers


def read_jsonl(path: Path) -> list[tuple[str, Row]]:
    """[(\"file:line\", object)] of a JSONL file; blank lines are skipped."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BabelpruneError(f"Line {number} of {path} is not valid JSON ({error.msg}); fix it.") from None
        if not isinstance(row, dict):
            raise BabelpruneError(f"Line {number} of {path} is not a JSON object; write one object per line.")
        rows.append((f"{path}:{number}", row))
    return rows


def read_conll(path: Path) -> list[tuple[str, Row]]:
    """Sentences of a CoNLL-style file as rows {"tokens": [...], "ner_tags": [tag names]}."""
    rows: list[tuple[str, Row]] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate([*lines, ""], start=1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                rows.append((f"{path}:{start}", {"tokens": tokens, "ner_tags": tags}))
            tokens, tags = [], []
            continue
        token, separator, tag = line.rpartition("\t") if "\t" in line else line.strip().rpartition(" ")
        if not separator or not token.strip():
            raise BabelpruneError(
                f"Line {number} of {path} is not 'token<TAB>tag'; write one token and its tag per line."
            )
        start = start if tokens else number
        tokens.append(token.strip())
        tags.append(tag.strip())
    return rows


def _hf_rows(
    dataset: str, config: str, split: str, cache_dir: str | None, kept: Callable[[int], list[int]]
) -> tuple[list[tuple[int, str, Row]], dict[str, list[str]]]:
    """Kept rows (`kept(row count)` gives their indices) of one config and split of a
    `datasets` dataset, with the label names of its features."""
    datasets = _import_datasets()
    try:
        rows = datasets.load_dataset(dataset, config, split=split, cache_dir=cache_dir)
    except Exception as error:  # datasets raises many types; all mean "cannot load"
        raise BabelpruneError(
            f"Cannot load config '{config}' split '{split}' of dataset '{dataset}' "
            f"({_first_line(error)}): check the names, and give a local folder as source when offline."
        ) from None
    names = {field: found for field in rows.column_names if (found := _label_names(rows.features[field]))}
    indices = kept(len(rows))
    # Select before iterating: XNLI's training split has 392,702 rows per language.
    selected = rows.select(indices)
    where = f"{dataset}/{config}/{split} row"
    return [(i, f"{where} {i}", dict(row)) for i, row in zip(indices, selected, strict=True)], names


def _label_names(feature: Any) -> list[str] | None:
    """Names of a ClassLabel feature, or of the ClassLabel inside a sequence feature."""
    for candidate in (feature, getattr(feature, "feature", None)):
        names = getattr(candidate, "names", None)
        if isinstance(names, list) and names:
            return names
    return None
