"""Where converted models and fetched corpora live, and atomic writes.

Nothing is ever half-written: outputs are built in a temporary sibling
folder and renamed into place only when complete. A disk that fills up on
the way (ENOSPC) ends in one sentence, with the temporary removed and any
previous output left as it was.

A process killed outright (kill -9, a lost machine) cannot remove its
temporary, so each one's name says who made it:
`.NAME.partial-<pid>-<host tag>-<random>`. The next write of the same
output removes the temporaries whose process is gone (`remove_stale_partials`)
and says so through the "babelprune" logger, one warning per path.
Outputs get the modes the user's umask gives (0755 / 0644 with umask 022),
not the private 0700 / 0600 of `tempfile` and safetensors (`grant_umask_modes`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
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


# ----- temporaries of interrupted runs ----------------------------------------------

_log = logging.getLogger("babelprune")
# Temporaries whose maker cannot be checked (named before pids were recorded, or made on
# another machine sharing the folder) count as abandoned once nothing in them changed for this
# long; a foreign host's writer may be slow, so it gets longer.
UNMARKED_STALE_AFTER_S = 3600.0
FOREIGN_STALE_AFTER_S = 24 * 3600.0
_ROLES = ("partial", "previous")  # a temporary being written / a previous output set aside
_OWNER = re.compile(r"^(\d+)-([0-9a-f]{8})-")
_CLOCK_SLACK_S = 2.0  # /proc/stat's boot time has whole seconds


def _host_tag() -> str:
    """A short, file-name-safe tag of this machine's name (pids mean nothing on another machine)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _temp_prefix(final: Path, role: str) -> str:
    return f".{final.name}.{role}-{os.getpid()}-{_host_tag()}-"


def _newest_change(path: Path) -> float:
    """The latest modification time of `path` or of anything inside it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _describe_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counting from the pid
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _maker_is_gone(path: Path, owner: re.Match | None, now: float) -> bool:
    """Whether the process that made the temporary `path` has ended (never guess so of a live writer)."""
    if owner is None:
        return now - _newest_change(path) > UNMARKED_STALE_AFTER_S
    pid, host = int(owner.group(1)), owner.group(2)
    if host != _host_tag():
        return now - _newest_change(path) > FOREIGN_STALE_AFTER_S
    if pid == os.getpid():
        return False  # this process is writing it (another thread, an enclosing write)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # PermissionError: the pid belongs to another user's live process
    # The pid is in use, but by its maker only if that process started before the temporary last
    # changed: after a reboot or a wrap-around the pid names some unrelated, newer process.
    started = _process_start(pid)
    return started is not None and started > path.lstat().st_mtime + _CLOCK_SLACK_S


def _put_back_previous(aside: Path, final: Path) -> bool:
    """Restore an output that a run killed between its two renames had set aside (`final` is missing)."""
    previous = aside / final.name
    if final.exists() or not previous.exists():
        return False
    try:
        os.rename(previous, final)
    except OSError:
        return False
    _log.warning("Restored %s, which an interrupted run had set aside as %s.", final, aside.name)
    return True


def _delete(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return not os.path.lexists(path)


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove the temporaries that killed runs left beside `final`; return what was removed.

    Only babelprune's own names for `final` are considered (`.NAME.partial-*`,
    `.NAME.previous-*` in the same folder), and only those whose process has
    ended: a run writing the same output at this moment keeps its temporary.
    An output that a killed run had set aside while replacing it is put back
    when nothing took its place. Each removal is logged as a warning of the
    "babelprune" logger.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    now = time.time()
    removed = []
    for role in _ROLES:
        head = f".{final.name}.{role}-"
        for path in sorted(final.parent.glob(glob.escape(head) + "*")):
            try:
                if not _maker_is_gone(path, _OWNER.match(path.name[len(head):]), now):
                    continue
                restored = role == "previous" and _put_back_previous(path, final)
                size = _size(path)
            except OSError:  # its maker finished or another run removed it meanwhile, or it is not ours to read
                continue
            if not _delete(path):
                continue
            removed.append(path)
            if restored:
                continue  # the folder left is empty; the restore was reported
            what = "a partial output" if role == "partial" else "a previous output, already replaced,"
            _log.warning("Removed %s left by an interrupted run: %s (%s).", what, path.name, _describe_size(size))
    return removed


# ----- atomic writes ---------------------------------------------------------------


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final`, on any error it is deleted.

    An interrupted run (Ctrl-C included) therefore leaves no half-written
    output, and with `overwrite` the previous `final` stays whole until the
    new one is in place. A full disk becomes a BabelpruneError naming `final`.
    What killed runs left beside `final` is removed first (`remove_stale_partials`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final, "partial"), dir=final.parent))
    try:
        yield tmp
        if final.exists() and not overwrite:
            raise FileExistsError(final)
        grant_umask_modes(tmp)
        move_into_place(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error(final) from exc
        raise


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an existing `final` is set aside first and put back if the rename fails."""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(final, "previous"), dir=final.parent))
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
    What killed runs left beside `path` is removed first (`remove_stale_partials`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path, "partial"), dir=path.parent)
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
