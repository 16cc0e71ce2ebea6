"""Bible genre classification and verse retrieval: genres, chapter splits, shared keys, limits."""

from __future__ import annotations

from collections import Counter

import pytest

from babelprune.data.bible_tasks import (
    CHAPTERS_PER_BOOK,
    GENRES,
    BibleGenreTask,
    BibleRetrievalTask,
    chapter_splits,
    genre_of_book,
    genre_of_key,
    round_robin,
)
from babelprune.data.tasks import get_task
from babelprune.errors import BabelpruneError

# Chapters per genre (books 1-5, 6-17, 18-22, 23-39, 40-44, 45-65, 66), summed by hand.
CHAPTERS_PER_GENRE = (187, 249, 243, 250, 117, 121, 22)
# round(10%) of each (at least 1) is held out for test, and as many for dev.
HELD_OUT_PER_GENRE = (19, 25, 24, 25, 12, 12, 2)


@pytest.mark.parametrize(
    ("book", "genre"),
    [(1, "law"), (5, "law"), (6, "history"), (17, "history"), (18, "poetry"), (22, "poetry"),
     (23, "prophets"), (39, "prophets"), (40, "gospels"), (44, "gospels"), (45, "letters"),
     (65, "letters"), (66, "apocalypse")],
)  # fmt: skip
def test_genre_of_book(book: int, genre: str) -> None:
    assert GENRES[genre_of_book(book)] == genre


def test_genre_errors_and_keys() -> None:
    assert GENRES[genre_of_key("43:1:1")] == "gospels"
    with pytest.raises(BabelpruneError, match="Book number 67"):
        genre_of_book(67)


def test_chapter_table() -> None:
    assert len(CHAPTERS_PER_BOOK) == 66
    assert sum(CHAPTERS_PER_BOOK) == 1189
    assert CHAPTERS_PER_BOOK[18] == 150  # Psalms


def test_chapter_splits_are_stratified_by_genre() -> None:
    splits = chapter_splits()
    assert len(splits) == 1189
    per_genre: dict[str, Counter[str]] = {}
    for chapter, split in splits.items():
        per_genre.setdefault(GENRES[genre_of_book(int(chapter.split(":")[0]))], Counter())[split] += 1
    for genre, total, held_out in zip(GENRES, CHAPTERS_PER_GENRE, HELD_OUT_PER_GENRE, strict=True):
        assert per_genre[genre] == Counter(test=held_out, dev=held_out, train=total - 2 * held_out)
    assert chapter_splits() == splits  # stable


def test_round_robin() -> None:
    lists = [["a1", "a2", "a3"], ["b1"], ["c1", "c2"]]
    assert round_robin(lists, 5) == ["a1", "b1", "c1", "a2", "c2"]
    assert round_robin(lists, None) == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert round_robin(lists, 2) == ["a1", "b1"]


class FakeBible:
    """Verse 1 and 2 of every chapter; 'xx' leaves verse 2 of every even chapter empty."""

    def languages(self) -> list[str]:
        return ["en", "sw", "xx"]

    def verses(self, lang: str) -> dict[str, str]:
        verses = {}
        for book, count in enumerate(CHAPTERS_PER_BOOK, start=1):
            for chapter in range(1, count + 1):
                for verse in (1, 2):
                    if lang == "xx" and verse == 2 and chapter % 2 == 0:
                        continue
                    verses[f"{book}:{chapter}:{verse}"] = f"{lang} {book}:{chapter}:{verse}"
        return verses


def _chapter(key: str) -> str:
    return key.rsplit(":", 1)[0]


def test_genre_task_on_a_fake_bible() -> None:
    task = BibleGenreTask(languages=["en", "xx"], max_per_label=5, max_eval=14, corpus=FakeBible())  # type: ignore[arg-type]
    train_en, train_xx = task.examples("en", "train"), task.examples("xx", "train")
    assert [e.key for e in train_en] == [e.key for e in train_xx]
    assert [e.label for e in train_en] == [e.label for e in train_xx]
    assert Counter(e.label for e in train_en) == Counter({g: 5 for g in range(7)})
    test = task.examples("en", "test")
    assert Counter(e.label for e in test) == Counter({g: 2 for g in range(7)})  # 14 taken genre by genre
    # Verses empty in 'xx' are left out for every language.
    all_keys = [e.key for split in ("train", "dev", "test") for e in task.examples("en", split)]  # type: ignore[arg-type]
    assert not [k for k in all_keys if k.endswith(":2") and int(k.split(":")[1]) % 2 == 0]
    assert {_chapter(e.key) for e in train_en}.isdisjoint(_chapter(e.key) for e in test)
    assert train_en[0].text == "en " + train_en[0].key
    assert [e.label for e in train_en] == [genre_of_key(e.key) for e in train_en]
    assert [e.key for e in train_en] == sorted((e.key for e in train_en), key=lambda k: tuple(map(int, k.split(":"))))


def test_genre_task_options_and_errors() -> None:
    with pytest.raises(BabelpruneError, match="Task 'bible-genre' has no data for language 'fr'; it has: en, sw, xx"):
        BibleGenreTask(languages=["fr"], corpus=FakeBible())  # type: ignore[arg-type]
    task = BibleGenreTask(languages=["en", "sw"], max_per_label=None, max_eval=None, corpus=FakeBible())  # type: ignore[arg-type]
    sizes = {split: len(task.examples("sw", split)) for split in ("train", "dev", "test")}  # type: ignore[arg-type]
    held_out = sum(HELD_OUT_PER_GENRE)  # 119 chapters, 2 verses each
    assert sizes == {"train": 2 * (1189 - 2 * held_out), "dev": 2 * held_out, "test": 2 * held_out}
    other_seed = BibleGenreTask(languages=["en"], max_per_label=5, seed=1, corpus=FakeBible())  # type: ignore[arg-type]
    seed0 = BibleGenreTask(languages=["en"], max_per_label=5, seed=0, corpus=FakeBible())  # type: ignore[arg-type]
    assert [e.key for e in other_seed.examples("en", "train")] != [e.key for e in seed0.examples("en", "train")]
    with pytest.raises(BabelpruneError, match="max_per_label"):
        BibleGenreTask(max_per_label=0, corpus=FakeBible())  # type: ignore[arg-type]


def test_retrieval_task_on_a_fake_bible() -> None:
    task = BibleRetrievalTask(languages=["sw"], max_eval=21, corpus=FakeBible())  # type: ignore[arg-type]
    assert task.languages() == ["en", "sw"]
    assert (task.kind, task.metric, task.labels) == ("retrieval", "top1", ())
    sw, en = task.examples("sw", "test"), task.examples("en", "test")
    assert len(sw) == 21 and [e.key for e in sw] == [e.key for e in en]
    assert all(e.label is None for e in sw)
    # Same sampling as the genre task: its test keys (21 = 3 per genre) are the same.
    genre = BibleGenreTask(languages=["en", "sw"], max_eval=21, corpus=FakeBible())  # type: ignore[arg-type]
    assert [e.key for e in genre.examples("sw", "test")] == [e.key for e in sw]


@pytest.mark.real
def test_real_bible_genre_en_sw() -> None:
    task = get_task("bible-genre", languages=["en", "sw"], max_per_label=100, max_eval=350)
    for split, size in (("train", 700), ("dev", 350), ("test", 350)):
        en, sw = task.examples("en", split), task.examples("sw", split)
        assert len(en) == len(sw) == size
        assert [(e.key, e.label) for e in en] == [(e.key, e.label) for e in sw]
        assert all(e.text and e.lang == "sw" for e in sw)
    train = task.examples("sw", "train")
    assert Counter(e.label for e in train) == Counter({g: 100 for g in range(7)})
    train_chapters = {_chapter(e.key) for e in train}
    eval_chapters = {_chapter(e.key) for split in ("dev", "test") for e in task.examples("sw", split)}  # type: ignore[arg-type]
    assert train_chapters.isdisjoint(eval_chapters)

    full = get_task("bible-genre", languages=["en", "sw"], max_per_label=None, max_eval=None)
    labels = {e.key: e.label for split in ("train", "dev", "test") for e in full.examples("en", split)}  # type: ignore[arg-type]
    assert GENRES[labels["1:1:1"]] == "law"
    assert GENRES[labels["66:1:1"]] == "apocalypse"
    assert len(labels) == 31102  # en and sw have every verse
