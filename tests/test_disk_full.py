"""A full disk (ENOSPC) while saving: one sentence, the previous output intact, nothing half-written.

The disk is "filled" by making one write raise OSError(ENOSPC): the final
rename (`os.replace`), a file write inside the temporary folder, or the
library call that writes the weights.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import pytest

from babelprune import cache
from babelprune.cache import atomic_dir, atomic_write_text
from babelprune.errors import BabelpruneError
from babelprune.formats import pruned as pruned_format
from babelprune.finetune.dynamic import DynamicModel, save_dynamic
from babelprune.formats.pruned import save_pruned
from babelprune.formats.structured import save_structured
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import prune
from babelprune.report.records import EvalResult, LMScore, ModelInfo
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def assert_disk_full_sentence(error: BabelpruneError, target: Path) -> None:
    message = str(error)
    assert message.startswith("No space left on device while writing") and str(target) in message
    rest = message.replace(str(target), "TARGET")
    assert "\n" not in rest and rest.endswith(".") and ". " not in rest[:-1], message


def folder_contents(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----- the two atomic writers ------------------------------------------------------


def test_atomic_write_text_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text("old")
    monkeypatch.setattr(cache.os, "replace", disk_full)
    with pytest.raises(BabelpruneError) as caught:
        atomic_write_text(target, "new")
    assert_disk_full_sentence(caught.value, target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_write_text_cleans_up_when_the_write_itself_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(cache.Path, "write_text", disk_full)  # the temporary's write runs out of space
    with pytest.raises(BabelpruneError) as caught:
        atomic_write_text(tmp_path / "new.txt", "text")
    assert_disk_full_sentence(caught.value, tmp_path / "new.txt")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_overwrite_keeps_the_previous_folder_when_the_rename_fails(tmp_path, monkeypatch):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("old")
    monkeypatch.setattr(cache.os, "replace", disk_full)
    with pytest.raises(BabelpruneError) as caught:
        with atomic_dir(final, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
    assert_disk_full_sentence(caught.value, final)
    assert folder_contents(final) == {"a.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_overwrite_replaces_the_previous_folder_when_all_goes_well(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with atomic_dir(final, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert folder_contents(final) == {"b.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_turns_a_full_disk_inside_the_block_into_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(BabelpruneError) as caught:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half.bin").write_bytes(b"half")
            (tmp / "meta.json").write_text("{}")
    assert_disk_full_sentence(caught.value, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_worded_by_a_library_is_recognised_and_other_errors_pass_through(tmp_path):
    # safetensors' writer reports a full disk as an error naming the OS error, not as OSError.
    with pytest.raises(BabelpruneError, match="No space left on device while writing"):
        with atomic_dir(tmp_path / "a"):
            raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
    with pytest.raises(RuntimeError, match="something else"):
        with atomic_dir(tmp_path / "b"):
            raise RuntimeError("something else")
    with pytest.raises(OSError) as caught:
        with atomic_dir(tmp_path / "c"):
            raise OSError(errno.EACCES, "Permission denied")
    assert not isinstance(caught.value, BabelpruneError)
    assert list(tmp_path.iterdir()) == []


def test_nested_atomic_dirs_name_the_outer_output(tmp_path):
    with pytest.raises(BabelpruneError) as caught:
        with atomic_dir(tmp_path / "outer") as outer:
            with atomic_dir(outer / "inner"):
                disk_full()
    assert_disk_full_sentence(caught.value, tmp_path / "outer")
    assert list(tmp_path.iterdir()) == []


# ----- every saver goes through them -------------------------------------------------


def loaded_tiny(family: str = "llama") -> LoadedModel:
    model = tiny_model(family)
    return LoadedModel(model=model, tokenizer=char_tokenizer(), spec=f"tiny-{family}", path=None, kind=adapter_for(model).kind)


def half_written_then_full(folder_arg_index: int = 0):
    """A save function that writes part of its output, then finds the disk full."""

    def save(*args, **kwargs):
        folder = Path(args[folder_arg_index])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"half a file")
        disk_full()

    return save


def test_save_pruned_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    loaded = loaded_tiny()
    result = prune(loaded, PruneConfig(method="magnitude", sparsity=0.5), None, progress=False)
    monkeypatch.setattr(pruned_format, "save_file", disk_full)  # the sparse copy
    with pytest.raises(BabelpruneError) as caught:
        save_pruned(loaded, result, tmp_path / "out")
    assert_disk_full_sentence(caught.value, tmp_path / "out")
    monkeypatch.setattr(loaded.model, "save_pretrained", half_written_then_full())  # the HF weights
    with pytest.raises(BabelpruneError) as caught:
        save_pruned(loaded, result, tmp_path / "out", format="hf")
    assert_disk_full_sentence(caught.value, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_save_structured_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    loaded = loaded_tiny()
    monkeypatch.setattr(loaded.model, "save_pretrained", half_written_then_full())
    with pytest.raises(BabelpruneError) as caught:
        save_structured(loaded.model, loaded.tokenizer, tmp_path / "out")
    assert_disk_full_sentence(caught.value, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_save_dynamic_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    loaded = loaded_tiny("bert")
    dynamic = DynamicModel(loaded, None, {"levels": [0.0, 0.5], "units": ["heads", "ffn"]})
    monkeypatch.setattr(loaded.tokenizer, "save_pretrained", half_written_then_full())
    with pytest.raises(BabelpruneError) as caught:
        save_dynamic(dynamic, tmp_path / "out")
    assert_disk_full_sentence(caught.value, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_saving_a_result_on_a_full_disk_keeps_the_previous_result(tmp_path, monkeypatch):
    score = LMScore(language="en", name="English", script="Latn", resource="high", n_windows=1, n_tokens=2, n_bytes=4,
                    nll_nats=2 * math.log(8))
    result = EvalResult(model=ModelInfo(spec="tiny", architecture="LlamaForCausalLM", n_parameters=10, block_sparsity=0.0),
                        corpus="bible", split="eval", scores=[score])
    target = tmp_path / "dense.json"
    result.save(target)
    before = target.read_bytes()
    changed = result.model_copy(update={"corpus": "udhr"})
    monkeypatch.setattr(cache.os, "replace", disk_full)
    with pytest.raises(BabelpruneError) as caught:
        changed.save(target)
    assert_disk_full_sentence(caught.value, target)
    assert target.read_bytes() == before and EvalResult.load(target).corpus == "bible"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.json"]
