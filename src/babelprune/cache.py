"""Where converted models and fetched corpora live, and atomic writes.

Nothing is ever half-written: outputs are built in a temporary sibling
folder and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """The user's babelprune cache folder ($BABELPRUNE_CACHE, else $XDG_CACHE_HOME/babelprune)."""
    explicit = os.environ.get("BABELPRUNE_CACHE")
    if explicit:
        root = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "babelprune"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final`, on any error it is deleted.

    An interrupted run (Ctrl-C included) therefore leaves no half-written output.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(final)
        shutil.rmtree(final)
    os.replace(tmp, final)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json_record(file: Path, newest_version: int, redo: str) -> dict | None:
    """A JSON object written by babelprune next to a model (None if absent).

    A file that is not a JSON object is corrupt; one with a newer
    `format_version` than this babelprune knows needs an upgrade. `redo` is
    the command that rewrites it, for the error message.
    """
    import json

    from babelprune.errors import BabelpruneError

    file = Path(file)
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        raise BabelpruneError(f"{file} is corrupt or does not match the model; re-run `{redo}`.")
    if record.get("format_version", 0) > newest_version:
        raise BabelpruneError(f"{file} was written by a newer babelprune; upgrade babelprune to read it.")
    return record
