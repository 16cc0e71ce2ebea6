"""Multilingual text keyed by language, with deterministic non-overlapping splits.

A corpus is a set of *segments* (a verse, a paragraph, an article...) per
language. Each segment has an alignment key (the same key in every language
for aligned corpora such as the Bible or the UDHR) and a *group* (a chapter,
an article) used for splitting. Splits are decided per group by a stable hash
of the group name, so that:

- calibration and evaluation never share a segment (nor a group);
- every language of an aligned corpus has the same groups in the same split;
- the split does not depend on the order or the machine.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import get_args

from babelprune.choices import Split
from babelprune.data.languages import Language, language_info
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code

SPLITS: tuple[str, ...] = get_args(Split)

# Share of groups that go to the evaluation split; the rest is calibration.
EVAL_SHARE = 0.5


@dataclass(frozen=True)
class Segment:
    """One unit of text. `key` aligns it across languages; `group` decides its split."""

    key: str
    group: str
    text: str


def split_of(group: str, eval_share: float = EVAL_SHARE) -> str:
    """'eval' or 'calib' for a group name, by a stable hash (same on every machine)."""
    digest = hashlib.sha256(group.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return "eval" if bucket < eval_share else "calib"


# The evaluation split cut in two halves by a second stable hash of the group: a search scores its
# candidates on "dev" and confirms its choice on "test", text it never saw (babelprune.shrink).
HELD_OUT_HALVES: tuple[str, ...] = ("dev", "test")


def half_of(group: str) -> str:
    """'dev' or 'test' for an evaluation-split group name, by a stable hash independent of `split_of`'s."""
    digest = hashlib.sha256(f"held-out half:{group}".encode("utf-8")).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < 0.5 else "test"


class Corpus(ABC):
    """Text per language. Subclasses implement `languages()` and `_segments(lang)`."""

    name: str = "corpus"
    eval_share: float = EVAL_SHARE

    @abstractmethod
    def languages(self) -> list[str]:
        """Language keys this corpus has (BCP-47 style: 'en', 'zh-Hans', 'sr-Cyrl')."""

    @abstractmethod
    def _segments(self, lang: str) -> list[Segment]:
        """All non-empty segments of one language, in a stable document order."""

    def language(self, lang: str) -> Language:
        """Metadata (name, script, resource level) of one of this corpus's languages."""
        return language_info(lang)

    def check_languages(self, langs: list[str]) -> list[str]:
        """Return `langs` if the corpus has them all, else raise naming what it has."""
        for lang in langs:
            # A typed code is refused for its form first: "../x" is never a language, whatever the corpus holds.
            check_language_code(lang, f"for corpus '{self.name}'")
        available = self.languages()
        unknown = [lang for lang in langs if lang not in available]
        if unknown:
            raise BabelpruneError(
                f"Corpus '{self.name}' has no language {', '.join(map(repr, unknown))}; "
                f"it has: {', '.join(available)}."
            )
        if not langs:
            raise BabelpruneError(f"No languages were given for corpus '{self.name}'.")
        return list(langs)

    def segments(self, lang: str, split: Split = "all") -> list[Segment]:
        """Segments of `lang` in `split`; raises a clear error if the split has no text."""
        if split not in SPLITS:
            raise BabelpruneError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
        self.check_languages([lang])
        segments = [s for s in self._segments(lang) if s.text.strip()]
        if split != "all":
            segments = [s for s in segments if split_of(s.group, self.eval_share) == split]
        if not segments:
            raise BabelpruneError(
                f"Corpus '{self.name}' has no text for language '{lang}' in the '{split}' split; "
                "choose another language or add text for it."
            )
        return segments

    def texts(self, lang: str, split: Split = "all") -> list[str]:
        """The texts of `segments(lang, split)`."""
        return [s.text for s in self.segments(lang, split)]


class HeldOutHalf(Corpus):
    """One half ("dev" or "test") of another corpus's evaluation split, as a corpus whose every segment is in it.

    A group (a chapter, an article) goes whole to one half, so the halves share no segment; both
    stay apart from the calibration split. Read it with split "all". `limit` keeps the first segments
    of each language only.
    """

    def __init__(self, corpus: Corpus, half: str, limit: int | None = None) -> None:
        if half not in HELD_OUT_HALVES:
            raise BabelpruneError(f"Unknown held-out half '{half}'; use one of {', '.join(HELD_OUT_HALVES)}.")
        self.corpus, self.half, self.limit = corpus, half, limit  # limit: only the first segments of each language
        self.name = f"{corpus.name}:eval-{half}"
        self.eval_share = corpus.eval_share

    def languages(self) -> list[str]:
        return self.corpus.languages()

    def language(self, lang: str) -> Language:
        return self.corpus.language(lang)

    def _segments(self, lang: str) -> list[Segment]:
        return [segment for segment in self.corpus.segments(lang, "eval") if half_of(segment.group) == self.half][:self.limit]
