"""Tasks built from the aligned Bible corpus: verse genre classification and verse retrieval.

``bible-genre`` labels each verse with the genre of its book (7 labels):

====================  ===========  =====================================
label                 books        contents
====================  ===========  =====================================
``law``               1-5          Genesis ... Deuteronomy
``history``           6-17         Joshua ... Esther
``poetry``            18-22        Job ... Song of Songs (poetry, wisdom)
``prophets``          23-39        Isaiah ... Malachi
``gospels``           40-44        Matthew ... Acts
``letters``           45-65        Romans ... Jude
``apocalypse``        66           Revelation
====================  ===========  =====================================

Splits are made **by chapter**: within each genre, the chapters are ranked
by a stable hash of their id ("book:chapter"); the first 10% (at least one)
are the test chapters, the next 10% the dev chapters and the rest the
training chapters. No verse of an evaluation chapter is ever trained on,
every genre is in every split, and the split depends on nothing but the
chapter id (the chapter counts of the 66 books are fixed below), so it is the
same in every language and for every option.

Within a split, only verses that are non-empty in *every* language of the
task are used (the Bengali version leaves ~800 verses empty), so all
languages have exactly the same keys and labels. Sizes are capped for CPU
budgets: ``max_per_label`` training verses per genre (a balanced sample) and
``max_eval`` dev/test verses (taken genre by genre in turn, so as balanced
as the split allows). Samples are chosen by a stable hash of the verse key
and ``seed``.

``bible-retrieval`` uses the same splits and sampling: its examples are the
verses of a split, to be retrieved from English (metric top-1); it has no
training. English is always one of its languages.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import cached_property

from babelprune.data.bible import BibleCorpus
from babelprune.data.tasks import Example, Task, check_limit, language_list, stable_rank
from babelprune.errors import BabelpruneError

# Chapters of each book, books 1 (Genesis) to 66 (Revelation): 1,189 in all.
CHAPTERS_PER_BOOK: tuple[int, ...] = (
    50, 40, 27, 36, 34, 24, 21, 4, 31, 24, 22, 25, 29, 36, 10, 13, 10, 42, 150, 31, 12, 8,
    66, 52, 5, 48, 12, 14, 3, 9, 1, 4, 7, 3, 3, 3, 2, 14, 4, 28, 16, 24, 21, 28, 16, 16, 13,
    6, 6, 4, 4, 5, 3, 6, 4, 3, 1, 13, 5, 5, 3, 5, 1, 1, 1, 22,
)  # fmt: skip

GENRES: tuple[str, ...] = ("law", "history", "poetry", "prophets", "gospels", "letters", "apocalypse")
# Last book of each genre, in the order of GENRES.
_GENRE_LAST_BOOK: tuple[int, ...] = (5, 17, 22, 39, 44, 65, 66)

# Shares of each genre's chapters held out for test and dev.
TEST_SHARE = 0.1
DEV_SHARE = 0.1
_SPLIT_SALT = "bible-task-split"
SOURCE_LANGUAGE = "en"


def genre_of_book(book: int) -> int:
    """Index into GENRES of a book number (1-66)."""
    for genre, last in enumerate(_GENRE_LAST_BOOK):
        if 1 <= book <= last:
            return genre
    raise BabelpruneError(f"Book number {book} is not a Bible book; books are numbered 1 to 66.")


def genre_of_key(key: str) -> int:
    """Index into GENRES of a verse key "book:chapter:verse"."""
    return genre_of_book(int(key.split(":")[0]))


def chapter_splits() -> dict[str, str]:
    """{"book:chapter": "train" | "dev" | "test"} for all 1,189 chapters (see module docstring)."""
    by_genre: dict[int, list[str]] = {}
    for book, count in enumerate(CHAPTERS_PER_BOOK, start=1):
        chapters = [f"{book}:{chapter}" for chapter in range(1, count + 1)]
        by_genre.setdefault(genre_of_book(book), []).extend(chapters)
    splits = {}
    for chapters in by_genre.values():
        ranked = sorted(chapters, key=lambda c: stable_rank(c, _SPLIT_SALT))
        n_test = max(1, round(TEST_SHARE * len(ranked)))
        n_dev = max(1, round(DEV_SHARE * len(ranked)))
        for position, chapter in enumerate(ranked):
            splits[chapter] = "test" if position < n_test else "dev" if position < n_test + n_dev else "train"
    return splits


def _verse_order(key: str) -> tuple[int, ...]:
    return tuple(int(part) for part in key.split(":"))


def _chapter(key: str) -> str:
    return key.rsplit(":", 1)[0]


def round_robin(ranked_by_label: list[list[str]], total: int | None) -> list[str]:
    """Take the next item of each list in turn until `total` items (all when None) or exhaustion."""
    chosen: list[str] = []
    depth = 0
    while total is None or len(chosen) < total:
        layer = [items[depth] for items in ranked_by_label if depth < len(items)]
        if not layer:
            break
        chosen.extend(layer if total is None else layer[: total - len(chosen)])
        depth += 1
    return chosen


class _BibleTask(Task):
    """Shared by the Bible tasks: languages, the common verse pool, splits and sampling."""

    def __init__(
        self,
        languages: list[str] | str | None = None,
        seed: int = 0,
        version_per_language: dict[str, str] | None = None,
        corpus: BibleCorpus | None = None,
    ) -> None:
        self.corpus = corpus or BibleCorpus(version_per_language)
        available = self.corpus.languages()
        langs = language_list(languages) if languages is not None else list(available)
        unknown = [lang for lang in langs if lang not in available]
        if unknown:
            raise BabelpruneError(
                f"Task '{self.name}' has no data for language {', '.join(map(repr, unknown))}; "
                f"it has: {', '.join(available)}."
            )
        if not langs:
            raise BabelpruneError(f"Give at least one language for task '{self.name}'.")
        self._langs = sorted(langs)
        self.seed = seed
        self._cache: dict[tuple[str, str], list[Example]] = {}

    def languages(self) -> list[str]:
        return list(self._langs)

    @cached_property
    def shared_keys(self) -> list[str]:
        """Verse keys non-empty in every language of the task, in canonical order."""
        keys: set[str] | None = None
        for lang in self._langs:
            present = set(self.corpus.verses(lang))
            keys = present if keys is None else keys & present
        return sorted(keys or (), key=_verse_order)

    @cached_property
    def _ranked_by_split(self) -> dict[str, list[list[str]]]:
        """{split: [keys of genre g ranked by stable hash, for g in GENRES]}."""
        splits = chapter_splits()
        ranked: dict[str, list[list[str]]] = {s: [[] for _ in GENRES] for s in ("train", "dev", "test")}
        for key in self.shared_keys:
            ranked[splits[_chapter(key)]][genre_of_key(key)].append(key)
        for per_genre in ranked.values():
            for keys in per_genre:
                keys.sort(key=lambda k: stable_rank(k, self.seed))
        return ranked

    @abstractmethod
    def selected_keys(self, split: str) -> list[str]:
        """The keys of a split after the task's size limits."""

    def _examples(self, lang: str, split: str) -> list[Example]:
        if (lang, split) not in self._cache:
            verses = self.corpus.verses(lang)
            keys = sorted(self.selected_keys(split), key=_verse_order)
            self._cache[lang, split] = [self._example(key, lang, verses[key]) for key in keys]
        return self._cache[lang, split]

    def _example(self, key: str, lang: str, text: str) -> Example:
        return Example(key=key, lang=lang, text=text)


class BibleGenreTask(_BibleTask):
    """Verse classification by the genre of its book (7 labels; see the module docstring).

    Options: ``languages`` (default: all 22 of the Bible corpus; the shared
    verses are those non-empty in all of them), ``max_per_label`` training
    verses per genre (None: all), ``max_eval`` dev/test verses (None: all),
    ``seed`` for the samples, ``version_per_language`` as for `BibleCorpus`.
    """

    name = "bible-genre"
    kind = "classification"
    labels = GENRES
    metric = "accuracy"

    def __init__(
        self,
        languages: list[str] | str | None = None,
        max_per_label: int | None = 100,
        max_eval: int | None = 350,
        seed: int = 0,
        version_per_language: dict[str, str] | None = None,
        corpus: BibleCorpus | None = None,
    ) -> None:
        self.max_per_label = check_limit("max_per_label", max_per_label)
        self.max_eval = check_limit("max_eval", max_eval)
        super().__init__(languages, seed, version_per_language, corpus)

    def selected_keys(self, split: str) -> list[str]:
        ranked = self._ranked_by_split[split]
        if split == "train":
            return [key for keys in ranked for key in keys[: self.max_per_label]]
        return round_robin(ranked, self.max_eval)

    def _example(self, key: str, lang: str, text: str) -> Example:
        return Example(key=key, lang=lang, text=text, label=genre_of_key(key))


class BibleRetrievalTask(_BibleTask):
    """English-to-X verse retrieval on the verses of a split (no training; metric top-1).

    Options: ``languages`` (English is always added), ``max_eval`` verses
    per split (None: all), ``seed``, ``version_per_language``.
    """

    name = "bible-retrieval"
    kind = "retrieval"
    labels = ()
    metric = "top1"

    def __init__(
        self,
        languages: list[str] | str | None = None,
        max_eval: int | None = 200,
        seed: int = 0,
        version_per_language: dict[str, str] | None = None,
        corpus: BibleCorpus | None = None,
    ) -> None:
        self.max_eval = check_limit("max_eval", max_eval)
        if languages is not None:
            languages = [SOURCE_LANGUAGE, *(language_list(languages) or [])]
        super().__init__(languages, seed, version_per_language, corpus)

    def selected_keys(self, split: str) -> list[str]:
        return round_robin(self._ranked_by_split[split], self.max_eval)
