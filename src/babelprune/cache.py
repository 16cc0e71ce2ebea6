"""Where converted models and fetched corpora live, and atomic writes.

Nothing is ever half-written: outputs are built in a temporary sibling
folder and renamed into place only when complete. A disk that fills up on
the way (ENOSPC) ends in one sentence, with the temporary removed and any
previous output left as it was.

Outputs get the modes the user's umask gives (0755 / 0644 with umask 022),
not the private 0700 / 0600 of `tempfile` and safetensors (`grant_umask_modes`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from babelprune.errors import BabelpruneError


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


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How libraries that do not raise OSError (safetensors' Rust writer, torch's zip writer) word a full disk.
_DISK_FULL_WORDS = ("No space left on device", "StorageFull", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, reports a full disk or an exhausted quota."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(words in str(exc) for words in _DISK_FULL_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(target: Path) -> BabelpruneError:
    return BabelpruneError(f"No space left on device while writing {target}; free some space or choose another --out.")


# ----- modes: what the user's umask gives ------------------------------------------

_PROC_STATUS = Path("/proc/self/status")  # Linux states the umask here (since 4.7)
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open(_PROC_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way to read it is to set it and put it back; the lock keeps our own
    # threads from creating files during that instant.
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def grant_umask_modes(path: Path) -> None:
    """Give `path`, and everything in a folder, at least the permissions a plain mkdir / open would have.

    `tempfile` makes private temporaries (0700 / 0600), and so do writers
    that write through one of their own: safetensors 0.8 leaves every file it
    saves at 0600, save_pretrained included. Permissions are only added,
    never taken away, so an executable stays executable.
    """
    umask = current_umask()
    items = [Path(path)]
    if items[0].is_dir() and not items[0].is_symlink():
        items += [Path(root) / name for root, dirs, files in os.walk(path) for name in dirs + files]
    for item in items:
        info = item.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # chmod would change what the link points to
        wanted = info.st_mode | ((0o777 if stat.S_ISDIR(info.st_mode) else 0o666) & ~umask)
        if stat.S_IMODE(wanted) != stat.S_IMODE(info.st_mode):
            os.chmod(item, stat.S_IMODE(wanted))


# ----- atomic writes ---------------------------------------------------------------


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final`, on any error it is deleted.

    An interrupted run (Ctrl-C included) therefore leaves no half-written
    output, and with `overwrite` the previous `final` stays whole until the
    new one is in place. A full disk becomes a BabelpruneError naming `final`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
        if final.exists() and not overwrite:
            raise FileExistsError(final)
        grant_umask_modes(tmp)
        _move_into_place(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error(final) from exc
        raise


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an existing `final` is set aside first and put back if the rename fails."""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.previous-", dir=final.parent))
    previous = aside / final.name
    os.rename(final, previous)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.rename(previous, final)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def atomic_file(path: Path, write: Callable[[Path], None], before_replace: Callable[[], None] | None = None) -> None:
    """Run `write` on a temporary file beside `path`, then rename it into place: readers see the old file or the whole new one.

    `before_replace` runs just before the rename (a last check, e.g. that
    nobody wrote `path` meanwhile). Any failure (a full disk, Ctrl-C)
    deletes the temporary; a full disk becomes a BabelpruneError naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        grant_umask_modes(Path(tmp))  # after `write`, which may have replaced the file with one of its own
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see either the old file or the whole new one (see `atomic_file`)."""
    atomic_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json_record(file: Path, newest_version: int, redo: str) -> dict | None:
    """A JSON object written by babelprune next to a model (None if absent).

    A file that is not a JSON object is corrupt; one with a newer
    `format_version` than this babelprune knows needs an upgrade. `redo` is
    the command that rewrites it, for the error message.
    """
    import json

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
