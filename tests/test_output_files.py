"""What outputs look like on disk: modes from the user's umask.

`atomic_dir` / `atomic_file` build an output in a temporary beside it. The
temporary comes from `tempfile` (private 0700 / 0600), so it is given the
mode a plain mkdir / open would have had.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from babelprune import cache
from babelprune.cache import atomic_dir, atomic_file, current_umask


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
