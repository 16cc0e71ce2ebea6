"""Safe names: language codes and the user strings that become file or folder names.

A language code is data, never a path, yet babelprune uses codes as folder
names (one pruned model per language, one fine-tuning run per language) and
as keys that reach the file system through corpora and tasks. So codes are
checked where they enter: when a corpus or a task is read, and when a user
types them. A code is ASCII letters, digits, '-' and '_', starting with a
letter or a digit, at most 64 characters: that admits every BCP-47 tag
('zh-Hant', 'sr-Latn', 'de-1901'), FLORES-style configs ('eng_Latn') and
ISO 639-3 codes, and rules out '..', separators, absolute paths, control
characters and whitespace.

Any other user string that becomes a file name goes through
`file_component` (refuses what could leave the folder or garble a terminal)
or `slug` (maps any text to a safe form), and `child_path` joins a name to a
folder and checks that the result stays inside it.

This module imports only the standard library and `babelprune.errors`, so
every layer of the package can use it.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from babelprune.errors import BabelpruneError

MAX_CODE_LENGTH = 64
# fullmatch, not match with '$': '$' also matches before a final newline, which would let "en\n" through.
_LANGUAGE_CODE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_CODE_LENGTH - 1}}}")
CODE_RULE = (
    f"a code is letters, digits, '-' and '_' (like 'en' or 'zh-Hans'), "
    f"starting with a letter or digit, at most {MAX_CODE_LENGTH} characters"
)

# Most file systems cap one name at 255 bytes.
MAX_COMPONENT_BYTES = 255
# '\\' and ':' separate paths (or name drives and streams) on Windows even though POSIX allows them.
_SEPARATORS = ("/", "\\", ":")


def is_language_code(text: object) -> bool:
    """Whether `text` is a string of the allowed language-code form (see the module docstring)."""
    return isinstance(text, str) and _LANGUAGE_CODE.fullmatch(text) is not None


def check_language_code(code: object, where: str = "", fix: str = "give a code of that form") -> str:
    """`code` if it has the language-code form, else one sentence naming where it came from and what is allowed.

    `where` completes "Language code 'x' <where>" (e.g. "in corpus.jsonl line 3"); `fix` says what to change.
    """
    if is_language_code(code):
        return code  # type: ignore[return-value]
    place = f" {where}" if where else ""
    raise BabelpruneError(f"Language code {_shown(code)}{place} is not allowed: {CODE_RULE}; {fix}.")


def file_component(text: object, what: str = "name", fix: str = "choose another") -> str:
    """`text` if it can be one file or folder name inside a folder, else a BabelpruneError.

    Refused: a non-string, the empty string, '.' and '..', path separators
    ('/', '\\', ':'), control characters (NUL, newline, escape...), line and
    paragraph separators, leading or trailing whitespace, and names over 255
    bytes. Nothing is rewritten: a name that changed silently could collide
    with another or surprise whoever looks for it.
    """
    problem = _component_problem(text)
    if problem is None:
        return text  # type: ignore[return-value]
    raise BabelpruneError(f"The {what} {_shown(text)} cannot be a file name: it {problem}; {fix} {what}.")


def child_path(root: Path | str, name: object, what: str = "name", fix: str = "choose another") -> Path:
    """`root / name` for a checked `file_component(name)`, refused if it resolves outside `root`.

    The resolved check also catches an existing link at `root / name` that points elsewhere.
    """
    root = Path(root)
    path = root / file_component(name, what, fix)
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise BabelpruneError(
            f"The {what} {_shown(name)} leads outside {root} (through a link there); {fix} {what} or remove the link."
        )
    return path


def slug(text: object, limit: int = 48) -> str:
    """Lower-case ASCII letters and digits joined by '-', at most `limit` characters; "x" when nothing is left.

    For file names made from free text (report figures named after a method or a label): any input maps
    to a safe name, so a label never fails a report, and '-' never starts it.
    """
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:limit] or "x"


def _component_problem(text: object) -> str | None:
    """Why `text` cannot be a file name, as the end of "it ...", or None when it can."""
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not text"
    if not text:
        return "is empty"
    if text in (".", ".."):
        return f"is {text!r}, a name the file system reserves"
    separator = next((s for s in _SEPARATORS if s in text), None)
    if separator is not None:
        return f"holds the path separator {separator!r}"
    if any(_is_control(ch) for ch in text):
        return "holds a control character"
    if text != text.strip():
        return "starts or ends with whitespace"
    if len(text.encode("utf-8")) > MAX_COMPONENT_BYTES:
        return f"is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls (NUL, newline, ESC...); Zl/Zp: Unicode line and paragraph separators.
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _shown(value: object) -> str:
    """`value` for an error sentence: repr escapes control characters, so the message stays one line."""
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60])[:-1] + "...'"  # cut inside the quotes: 'xxx...'
    return repr(value)
