"""What outputs look like on disk: modes from the user's umask, and no debris left by killed runs.

`atomic_dir` / `atomic_file` build an output in a temporary beside it. The
temporary comes from `tempfile` (private 0700 / 0600), so it is given the
mode a plain mkdir / open would have had. A run killed with SIGKILL cannot
remove its temporary; the next write of the same output does, unless the
process that made it is still running.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from babelprune import cache
from babelprune.cache import atomic_dir, atomic_file, current_umask, remove_stale_partials

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


# ----- modes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600),
                                                             (0o002, 0o775, 0o664)], indirect=["umask"])
def test_outputs_get_the_modes_of_the_users_umask(tmp_path, umask, dir_mode, file_mode):
    with atomic_dir(tmp_path / "out") as folder:
        (folder / "config.json").write_text("{}", encoding="utf-8")
    atomic_file(tmp_path / "model.gguf", lambda tmp: tmp.write_bytes(b"GGUF"))
    assert oct(mode(tmp_path / "out")) == oct(dir_mode)
    assert oct(mode(tmp_path / "out" / "config.json")) == oct(file_mode)
    assert oct(mode(tmp_path / "model.gguf")) == oct(file_mode)


@pytest.mark.parametrize("umask", [0o022], indirect=True)
def test_a_writer_that_reopens_the_temporary_keeps_the_mode(tmp_path, umask):
    # GGUFWriter opens the path it is given with "wb", as does safetensors: the temporary's mode stays.
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"GGUF")

    atomic_file(tmp_path / "model.gguf", write)
    assert oct(mode(tmp_path / "model.gguf")) == oct(0o644)


@pytest.mark.parametrize("umask", [0o022], indirect=True)
def test_a_saved_model_folder_and_every_file_in_it_have_normal_modes(tmp_path, umask):
    from babelprune.formats.structured import save_structured
    from tests.tiny_models import tiny_model
    from tests.tiny_tokenizer import char_tokenizer

    out = save_structured(tiny_model("bert"), char_tokenizer(), tmp_path / "structured")
    modes = {p.relative_to(tmp_path).as_posix(): oct(mode(p)) for p in [out, *out.rglob("*")]}
    expected = {name: oct(0o755 if (tmp_path / name).is_dir() else 0o644) for name in modes}
    assert modes == expected


@pytest.mark.parametrize("umask", [0o027], indirect=True)
def test_the_umask_is_read_where_proc_does_not_state_it(monkeypatch, umask):
    assert current_umask() == 0o027
    monkeypatch.setattr(cache, "_PROC_STATUS", Path("/nonexistent/status"))
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # reading it left it as it was


# ----- temporaries of killed runs ------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def partial(parent: Path, name: str, size: int = 1000, age_s: float = 0.0, is_dir: bool = True) -> Path:
    path = parent / name
    if is_dir:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"\0" * size)
    else:
        path.write_bytes(b"\0" * size)
    if age_s:
        old = time.time() - age_s
        for item in [*path.rglob("*"), path] if is_dir else [path]:
            os.utime(item, (old, old))
    return path


def notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "babelprune" and r.levelno == logging.WARNING]


def test_the_next_write_removes_a_dead_runs_partial_and_keeps_a_live_ones(tmp_path, caplog):
    host = cache._host_tag()
    dead = partial(tmp_path, f".out.partial-{dead_pid()}-{host}-abc12345", size=1_000_000)
    live = partial(tmp_path, f".out.partial-{os.getpid()}-{host}-live0001")
    with caplog.at_level(logging.WARNING, logger="babelprune"), atomic_dir(tmp_path / "out") as folder:
        (folder / "config.json").write_text("{}", encoding="utf-8")
    assert not dead.exists()
    assert live.exists()
    assert notices(caplog) == [f"Removed a partial output left by an interrupted run: {dead.name} (1.0 MB)."]


def test_a_killed_exports_partial_file_is_removed_by_the_next_export(tmp_path, caplog):
    dead = partial(tmp_path, f".model.gguf.partial-{dead_pid()}-{cache._host_tag()}-x1y2z3ab", is_dir=False)
    with caplog.at_level(logging.WARNING, logger="babelprune"):
        atomic_file(tmp_path / "model.gguf", lambda tmp: tmp.write_bytes(b"GGUF"))
    assert not dead.exists()
    assert (tmp_path / "model.gguf").read_bytes() == b"GGUF"
    assert notices(caplog) == [f"Removed a partial output left by an interrupted run: {dead.name} (1.0 kB)."]


def test_only_this_outputs_temporaries_are_considered(tmp_path):
    host, gone = cache._host_tag(), dead_pid()
    other_output = partial(tmp_path, f".other.partial-{gone}-{host}-abc12345")
    prefixed_name = partial(tmp_path, f".out2.partial-{gone}-{host}-abc12345")
    not_hidden = partial(tmp_path, f"out.partial-{gone}-{host}-abc12345")
    assert remove_stale_partials(tmp_path / "out") == []
    assert other_output.exists() and prefixed_name.exists() and not_hidden.exists()


def test_unmarked_and_foreign_temporaries_are_removed_only_once_untouched_for_long(tmp_path):
    # Names without a pid (older babelprune) and pids of another machine cannot be checked: their age decides.
    fresh_unmarked = partial(tmp_path, ".out.partial-k2j4h5g6")
    old_unmarked = partial(tmp_path, ".out.partial-a1b2c3d4", age_s=2 * 3600)
    fresh_foreign = partial(tmp_path, f".out.partial-{dead_pid()}-00000000-abc12345", age_s=2 * 3600)
    old_foreign = partial(tmp_path, f".out.partial-{dead_pid()}-00000000-def67890", age_s=25 * 3600)
    assert cache._host_tag() != "00000000"
    assert remove_stale_partials(tmp_path / "out") == [old_foreign, old_unmarked]
    assert fresh_unmarked.exists() and fresh_foreign.exists()


def test_a_pid_now_used_by_a_newer_process_does_not_keep_the_partial(tmp_path):
    # After a reboot the dead writer's pid may name an unrelated process that started after the partial last changed.
    newer = subprocess.Popen(["sleep", "60"])
    try:
        reused = partial(tmp_path, f".out.partial-{newer.pid}-{cache._host_tag()}-abc12345", age_s=600)
        parent = partial(tmp_path, f".out.partial-{os.getppid()}-{cache._host_tag()}-def67890")
        assert remove_stale_partials(tmp_path / "out") == [reused]
        assert parent.exists()  # a live process that started before its partial may still be writing it
    finally:
        newer.kill()
        newer.wait()


def test_an_output_set_aside_by_a_run_killed_mid_replace_is_put_back(tmp_path, caplog):
    # Killed between renaming the old output aside and renaming the new one in: the old one is the only copy.
    aside = tmp_path / f".out.previous-{dead_pid()}-{cache._host_tag()}-abc12345"
    (aside / "out").mkdir(parents=True)
    (aside / "out" / "config.json").write_text('{"old": true}', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="babelprune"):
        assert remove_stale_partials(tmp_path / "out") == [aside]
    assert (tmp_path / "out" / "config.json").read_text(encoding="utf-8") == '{"old": true}'
    assert not aside.exists()
    assert notices(caplog) == [f"Restored {tmp_path / 'out'}, which an interrupted run had set aside as {aside.name}."]


def test_a_superseded_previous_output_is_removed(tmp_path):
    (tmp_path / "out").mkdir()
    aside = tmp_path / f".out.previous-{dead_pid()}-{cache._host_tag()}-abc12345"
    (aside / "out").mkdir(parents=True)
    assert remove_stale_partials(tmp_path / "out") == [aside]
    assert (tmp_path / "out").is_dir() and not aside.exists()


WRITER = """
import sys, time
from pathlib import Path
from babelprune.cache import atomic_dir, atomic_file

final = Path(sys.argv[1])
def write(tmp):
    tmp.write_bytes(b"\\0" * 1_000_000)
    print("writing", flush=True)
    time.sleep(300)

if sys.argv[2] == "dir":
    with atomic_dir(final) as folder:
        write(folder / "model.safetensors")
else:
    atomic_file(final, write)
"""


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_kill_9_leaves_a_partial_that_the_next_run_removes(tmp_path, caplog, kind):
    final = tmp_path / ("pruned" if kind == "dir" else "model.gguf")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(final), kind], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert writer.stdout.readline() == "writing\n"
        (left,) = tmp_path.glob(f".{final.name}.partial-*")
        assert remove_stale_partials(final) == []  # its writer is still running: hands off
        assert left.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    assert left.exists()  # SIGKILL ran no cleanup
    with caplog.at_level(logging.WARNING, logger="babelprune"):
        if kind == "dir":
            with atomic_dir(final) as folder:
                (folder / "config.json").write_text("{}", encoding="utf-8")
        else:
            atomic_file(final, lambda tmp: tmp.write_bytes(b"GGUF"))
    assert [p.name for p in tmp_path.iterdir()] == [final.name]
    assert notices(caplog) == [f"Removed a partial output left by an interrupted run: {left.name} (1.0 MB)."]
