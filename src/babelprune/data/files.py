"""A corpus from the user's own text files.

Two forms are accepted:

- a folder with one UTF-8 file per language, named ``<lang>.txt``
  (``en.txt``, ``zh-Hant.txt``). A file's segments are its paragraphs,
  separated by blank lines; a file without any blank line has one segment
  per non-empty line. Segment ``i`` of every file has the key ``str(i)``, so
  files that hold the same text paragraph by paragraph are aligned.
- a JSONL file (``.jsonl``), one object per line:
  ``{"lang": "en", "text": "...", "id": "...", "group": "..."}`` where
  ``id`` (the alignment key) and ``group`` (the split unit) are optional.
  Without ``id``, the key is the segment's position within its language.

Without an explicit group, segments are grouped in blocks of consecutive
segments (``"block N"``). The block size is the same for every language, so
aligned files split alike, and shrinks for short corpora (down to one
segment per block) so that there are enough groups for both splits to get
text: ``block_size = clamp(min_segments // 20, 1, 10)`` over the languages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from babelprune.data.corpus import Corpus, Segment
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code

# Upper bound on the block size, and the number of blocks aimed for per language.
MAX_BLOCK_SIZE = 10
TARGET_BLOCKS = 20

_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, or lines when there is no blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    pieces = _BLANK_LINE.split(text) if _BLANK_LINE.search(text) else text.split("\n")
    # Lines inside a paragraph are joined: a paragraph is one segment of running text.
    return [" ".join(piece.split()) for piece in pieces if piece.strip()]


def block_size(min_segments: int) -> int:
    """Consecutive segments per group, from the smallest language's segment count."""
    return max(1, min(MAX_BLOCK_SIZE, min_segments // TARGET_BLOCKS))


class FilesCorpus(Corpus):
    """Text from a folder of `<lang>.txt` files or from a JSONL file."""

    name = "files"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BabelpruneError(
                f"Corpus path {self.path} does not exist: give a folder of <lang>.txt files "
                "or a .jsonl file."
            )
        if not self.path.is_dir() and self.path.suffix.lower() != ".jsonl":
            raise BabelpruneError(
                f"Corpus file {self.path} is not a .jsonl file: give a folder of <lang>.txt "
                "files or a .jsonl file with one {\"lang\": ..., \"text\": ...} object per line."
            )
        # Read eagerly so that a bad file is reported now, not halfway through a run.
        self._by_lang = self._assign_groups(self._read())

    def languages(self) -> list[str]:
        return sorted(self._by_lang)

    def _segments(self, lang: str) -> list[Segment]:
        return list(self._by_lang[lang])

    # -- reading ------------------------------------------------------------

    def _read(self) -> dict[str, list[tuple[str | None, str | None, str]]]:
        """{lang: [(id or None, group or None, text)]} in file order."""
        rows = self._read_folder() if self.path.is_dir() else self._read_jsonl()
        if not rows:
            raise BabelpruneError(
                f"Corpus {self.path} holds no text: add <lang>.txt files (or JSONL lines) "
                "with non-empty text."
            )
        return rows

    def _read_folder(self) -> dict[str, list[tuple[str | None, str | None, str]]]:
        files = sorted(p for p in self.path.glob("*.txt") if p.is_file())
        if not files:
            raise BabelpruneError(
                f"Folder {self.path} has no <lang>.txt files: add one UTF-8 text file per "
                "language, e.g. en.txt."
            )
        rows = {}
        for file in files:
            # The stem is the language code, and codes become folder names later: check it before reading.
            lang = check_language_code(
                file.stem, f"(from the file name {file.name!r} in {self.path})", "rename the file"
            )
            paragraphs = split_paragraphs(_read_utf8(file))
            if paragraphs:
                rows[lang] = [(None, None, text) for text in paragraphs]
        return rows

    def _read_jsonl(self) -> dict[str, list[tuple[str | None, str | None, str]]]:
        rows: dict[str, list[tuple[str | None, str | None, str]]] = {}
        seen_ids: set[tuple[str, str]] = set()
        for number, line in enumerate(_read_utf8(self.path).splitlines(), start=1):
            if not line.strip():
                continue
            lang, seg_id, group, text = _parse_jsonl_line(self.path, number, line)
            if seg_id is not None:
                if (lang, seg_id) in seen_ids:
                    raise BabelpruneError(
                        f"{self.path}, line {number} repeats id {seg_id!r} for language "
                        f"'{lang}': give every segment of a language its own id."
                    )
                seen_ids.add((lang, seg_id))
            if text.strip():
                rows.setdefault(lang, []).append((seg_id, group, " ".join(text.split())))
        return rows

    @staticmethod
    def _assign_groups(
        rows: dict[str, list[tuple[str | None, str | None, str]]],
    ) -> dict[str, list[Segment]]:
        size = block_size(min(len(items) for items in rows.values()))
        by_lang = {}
        for lang, items in rows.items():
            by_lang[lang] = [
                Segment(
                    key=seg_id if seg_id is not None else str(index),
                    group=group if group is not None else f"block {index // size}",
                    text=text,
                )
                for index, (seg_id, group, text) in enumerate(items)
            ]
        return by_lang


def text_file_segments(paths: Sequence[Path | str]) -> list[str]:
    """The paragraphs (or lines) of UTF-8 text files, each a segment as a corpus's text is; a bad file is one sentence."""
    return [segment for path in paths for segment in split_paragraphs(_read_utf8(Path(path)))]


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise BabelpruneError(
            f"{path} is not valid UTF-8 (byte {error.start}): save it as UTF-8 and try again."
        ) from None
    except OSError as error:
        raise BabelpruneError(f"Cannot read {path} ({error.strerror}): check the file.") from None


def _parse_jsonl_line(
    path: Path, number: int, line: str
) -> tuple[str, str | None, str | None, str]:
    """(lang, id, group, text) of one JSONL line, or a clear error naming the line."""
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BabelpruneError(
            f"{where} is not valid JSON ({error.msg}): fix or remove that line."
        ) from None
    if not isinstance(record, dict):
        raise BabelpruneError(
            f"{where} is not a JSON object: write {{\"lang\": ..., \"text\": ...}}."
        )
    lang, text = record.get("lang"), record.get("text")
    if not isinstance(lang, str) or not lang.strip():
        raise BabelpruneError(f"{where} has no \"lang\" string: add the language key, e.g. \"en\".")
    # Surrounding spaces are dropped as before; what is left must be a code, since codes become folder names.
    check_language_code(lang.strip(), f"in {path} line {number}", "fix the corpus")
    if not isinstance(text, str):
        raise BabelpruneError(f"{where} has no \"text\" string: add the segment's text.")
    seg_id = record.get("id")
    group = record.get("group")
    return (
        lang.strip(),
        None if seg_id is None else str(seg_id),
        None if group is None else str(group),
        text,
    )
