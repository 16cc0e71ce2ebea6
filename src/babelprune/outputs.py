"""Output paths, checked when a command starts, before any model is loaded.

Every command that writes calls `check_output_file` or `check_output_folder`
first, so a mistake in an output path costs one sentence, not the whole
computation. The rules are the same for every output:

- the name is not empty and holds no control characters;
- a file has a suffix its format is written with (`--chart c.txt` is refused);
- a file is not an existing folder, and a folder is not an existing file;
- an existing output is refused, unless the command offers `--overwrite`
  and the file or folder is one babelprune wrote (each caller says how to
  recognise its own);
- missing parent folders are created when the output is written (the same
  for every command); the nearest existing one must be a folder we may
  write in.

Nothing is created here: a refused command leaves the disk as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from babelprune.errors import BabelpruneError

# The names a results store (SQLite) may have.
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")

Recogniser = Callable[[Path], bool]


def check_output_file(
    path: Path | str,
    option: str,
    suffixes: Sequence[str],
    *,
    overwrite: bool = False,
    recognise: Recogniser | None = None,
    reuse: bool = False,
    writer: str = "babelprune",
) -> Path:
    """`path` as a file output of `option` (e.g. '--out'), or one sentence saying what is wrong with it.

    `suffixes` are the accepted ones, lower case with their dot ('.json').
    `overwrite` is the user's `--overwrite`; `recognise(path)` says whether
    an existing file is one babelprune wrote (None: the command offers no
    overwrite, so an existing file is always refused). With `reuse` an
    existing file is the command's to go on with (a results store a sweep
    resumes; the store checks whose it is when it opens it). `writer` names
    the command whose outputs `recognise` knows, for the message.
    """
    path = _named(path, option)
    if path.is_dir():
        raise BabelpruneError(f"{option} {_show(path)} is a folder, but this output is a file; give a file name.")
    if path.suffix.lower() not in suffixes:
        choices = suffixes[0] if len(suffixes) == 1 else f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"
        raise BabelpruneError(f"{option} {_show(path)} does not end in {choices}, the form this output is written in; name the file with that suffix.")
    if reuse and path.is_file():
        _check_writable(path.absolute().parent, option, path)
        return path
    if path.exists() or path.is_symlink():
        _refuse_existing(path, option, "file", overwrite, recognise, writer)
    _check_parent(path, option)
    return path


def check_output_folder(
    path: Path | str,
    option: str,
    *,
    overwrite: bool = False,
    recognise: Recogniser | None = None,
    reuse: Recogniser | None = None,
    writer: str = "babelprune",
) -> Path:
    """`path` as a folder output of `option`, or one sentence saying what is wrong with it.

    `reuse(path)` says whether an existing folder is one the command goes on
    writing into (a fine-tuning run folder it resumes); such a folder is
    accepted as it is. Otherwise an existing folder is refused unless
    `overwrite` and `recognise(path)`.
    """
    path = _named(path, option)
    if path.exists() and not path.is_dir():
        raise BabelpruneError(f"{option} {_show(path)} is a file, but this output is a folder; give a folder name.")
    if path.exists() or path.is_symlink():
        if reuse is not None and reuse(path):
            _check_writable(path, option)
            return path
        _refuse_existing(path, option, "folder", overwrite, recognise, writer)
    _check_parent(path, option)
    return path


def _named(path: Path | str, option: str) -> Path:
    """The path, refused when it names nothing (empty, '.', '..', '/') or holds control characters."""
    text = os.fspath(path)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise BabelpruneError(f"{option} {text!r} holds a control character; give a plain file or folder name.")
    path = Path(text)
    if text.strip() == "" or path.name in ("", ".", ".."):
        raise BabelpruneError(f"{option} {text!r} names no file or folder; give a name such as {option} result.")
    return path


def _refuse_existing(path: Path, option: str, kind: str, overwrite: bool, recognise: Recogniser | None, writer: str) -> None:
    if recognise is None:
        raise BabelpruneError(f"Output {kind} {_show(path)} exists; choose another {option} or remove it.")
    if not overwrite:
        raise BabelpruneError(f"Output {kind} {_show(path)} exists; choose another {option}, remove it, or give --overwrite.")
    if path.is_symlink() or not recognise(path):
        raise BabelpruneError(
            f"{_show(path)} is not a {kind} written by {writer}, so --overwrite leaves it alone; choose another {option}."
        )


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing folder above `path` must be a folder we may create entries in."""
    parent = path.absolute().parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: creating the folders would follow it
            raise BabelpruneError(f"{option} {_show(path)} lies under {_show(parent)}, a broken link; choose another {option}.")
        parent = parent.parent
    if not parent.is_dir():
        raise BabelpruneError(f"{option} {_show(path)} lies under {_show(parent)}, which is a file, not a folder; choose another {option}.")
    _check_writable(parent, option, path)


def _check_writable(folder: Path, option: str, path: Path | None = None) -> None:
    # access() answers for the real user and knows read-only file systems (EROFS), root included.
    if not os.access(folder, os.W_OK | os.X_OK):
        target = f"{_show(path)}: " if path is not None else ""
        raise BabelpruneError(f"{option} {target}the folder {_show(folder)} cannot be written to (read-only); choose another {option}.")


def _show(path: Path) -> str:
    """A path for a message: repr-quoted when it holds characters a terminal would act on."""
    text = str(path)
    return repr(text) if any(not char.isprintable() for char in text) else text


def file_mentions(path: Path, marker: bytes, head: int = 1 << 22) -> bool:
    """Whether the first `head` bytes of `path` contain `marker` (how a chart or GGUF file says who wrote it)."""
    try:
        with open(path, "rb") as handle:
            return marker in handle.read(head)
    except OSError:
        return False
