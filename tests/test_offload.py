"""--offload disk (babelprune.prune.offload): one block in memory at a time, the in-memory result, a normal folder."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from babelprune.api import load_model
from babelprune.errors import BabelpruneError
from babelprune.formats import stream
from babelprune.formats.pruned import METADATA_FILE, load_sparse, save_pruned
from babelprune.prune import offload
from babelprune.prune.config import PruneConfig, ReconstructConfig
from babelprune.prune.engine import prune
from babelprune.prune.offload import open_offloaded, prune_offloaded
from tests.cli_runner import run_cli
from tests.test_disk_full import assert_disk_full_sentence
from tests.test_prune_engine import calibration
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer


def source_folder(root: Path, family: str, **save) -> Path:
    folder = root / f"dense-{family}"
    tiny_model(family).save_pretrained(folder, **save)
    char_tokenizer().save_pretrained(folder)
    return folder


def state_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_model(str(folder)).model.state_dict()


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("llama", PruneConfig(method="wanda", calib_batch=2)),
        ("gemma3", PruneConfig(method="sparsegpt", calib_batch=4)),
        ("opt", PruneConfig(method="mwanda", allocation="cwl")),  # the allocation pre-pass reads every block too
        ("bert", PruneConfig(method="mwanda", reconstruct=ReconstructConfig(), calib_batch=2)),
        ("gpt2", PruneConfig(method="magnitude", pattern="2:4")),
    ],
    ids=["llama-wanda", "gemma3-sparsegpt", "opt-mwanda-cwl", "bert-refit", "gpt2-magnitude"],
)
def test_the_offloaded_result_is_the_in_memory_one(tmp_path, family, config):
    source = source_folder(tmp_path, family)
    reference = load_model(str(source))
    calib = calibration(reference.model)
    in_memory = prune(reference, config, calib, progress=False)
    save_pruned(reference, in_memory, tmp_path / "in-memory")

    offloaded = prune_offloaded(open_offloaded(str(source)), config, calib, tmp_path / "offloaded", progress=False)

    assert_same_state(state_of(tmp_path / "offloaded"), state_of(tmp_path / "in-memory"))
    assert offloaded.layer_sparsity == in_memory.layer_sparsity
    assert offloaded.block_sparsity_targets == in_memory.block_sparsity_targets
    assert (offloaded.starting_sparsity, offloaded.achieved_sparsity) == (in_memory.starting_sparsity, in_memory.achieved_sparsity)
    assert in_memory.achieved_sparsity == pytest.approx(0.5, abs=0.05)  # the weights did change
    # The same files, and the same sparse copy.
    files = sorted(p.relative_to(tmp_path / "offloaded").as_posix() for p in (tmp_path / "offloaded").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "in-memory").as_posix() for p in (tmp_path / "in-memory").rglob("*") if p.is_file())
    assert_same_state(load_sparse(tmp_path / "offloaded").state_dict(), load_sparse(tmp_path / "in-memory").state_dict())


def test_the_folder_loads_with_transformers_alone(tmp_path):
    source = source_folder(tmp_path, "gemma3")
    offloaded = open_offloaded(str(source))
    prune_offloaded(offloaded, PruneConfig(method="wanda"), calibration(offloaded.loaded.model), tmp_path / "out", progress=False)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    assert_same_state(plain, state_of(tmp_path / "out"))
    # The head stays tied to the embedding, and the blocks' linears are half zeros.
    assert torch.equal(plain["lm_head.weight"], plain["model.embed_tokens.weight"])
    assert float((plain["model.layers.1.mlp.down_proj.weight"] == 0).float().mean()) == 0.5
    record = json.loads((tmp_path / "out" / METADATA_FILE).read_text())
    assert record["method"] == "wanda" and record["parent"] == str(source)


def test_a_sharded_source_folder_is_read_shard_by_shard(tmp_path):
    source = source_folder(tmp_path, "llama", max_shard_size="20KB")
    assert (source / "model.safetensors.index.json").is_file() and not (source / "model.safetensors").exists()
    reference = load_model(str(source))
    calib = calibration(reference.model)
    save_pruned(reference, prune(reference, PruneConfig(method="wanda"), calib, progress=False), tmp_path / "in-memory")
    prune_offloaded(open_offloaded(str(source)), PruneConfig(method="wanda"), calib, tmp_path / "offloaded", progress=False)
    assert_same_state(state_of(tmp_path / "offloaded"), state_of(tmp_path / "in-memory"))


def test_one_block_at_a_time_is_in_memory(tmp_path, monkeypatch):
    source = source_folder(tmp_path, "llama")
    offloaded = open_offloaded(str(source))
    blocks = list(offloaded.loaded.model.model.layers)
    assert all(p.is_meta for block in blocks for p in block.parameters())  # nothing of the blocks was read
    assert not any(p.is_meta for p in offloaded.loaded.model.model.embed_tokens.parameters())
    in_memory: list[list[int]] = []
    opened = offload.DiskBlocks.pruned

    def pruned(self, index, block):
        in_memory.append([i for i, b in enumerate(blocks) if not any(p.is_meta for p in b.parameters())])
        opened(self, index, block)

    monkeypatch.setattr(offload.DiskBlocks, "pruned", pruned)
    prune_offloaded(offloaded, PruneConfig(method="wanda"), calibration(offloaded.loaded.model), tmp_path / "out", progress=False)
    assert in_memory == [[0], [1]]
    assert all(p.is_meta for block in blocks for p in block.parameters())  # and each was freed


# ----- bad input ------------------------------------------------------------------


def disk_full_on_call(number: int):
    """A SafetensorsStream.add that runs out of space on its `number`-th call."""
    calls = []
    original = stream.SafetensorsStream.add

    def add(self, key, tensor):
        calls.append(key)
        if len(calls) == number:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(self, key, tensor)

    return add


@pytest.mark.parametrize("number", [1, 12])  # the embedding, a block's weight
def test_a_full_disk_gives_one_sentence_and_leaves_nothing(tmp_path, monkeypatch, number):
    source = source_folder(tmp_path, "llama")
    offloaded = open_offloaded(str(source))
    monkeypatch.setattr(stream.SafetensorsStream, "add", disk_full_on_call(number))
    target = tmp_path / "out"
    with pytest.raises(BabelpruneError) as caught:
        prune_offloaded(offloaded, PruneConfig(method="wanda"), calibration(offloaded.loaded.model), target, progress=False)
    assert_disk_full_sentence(caught.value, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_a_disk_that_fills_while_the_file_is_assembled_leaves_nothing(tmp_path, monkeypatch):
    source = source_folder(tmp_path, "llama")
    offloaded = open_offloaded(str(source))

    def full_copy(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stream.shutil, "copyfileobj", full_copy)
    with pytest.raises(BabelpruneError) as caught:
        prune_offloaded(offloaded, PruneConfig(method="wanda"), calibration(offloaded.loaded.model), tmp_path / "out", progress=False)
    assert_disk_full_sentence(caught.value, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_folders_it_cannot_read_are_refused_in_one_sentence(tmp_path):
    bin_folder = source_folder(tmp_path, "llama")
    weights = bin_folder / "model.safetensors"
    torch.save(load_model(str(bin_folder)).model.state_dict(), bin_folder / "pytorch_model.bin")  # the older format
    weights.unlink()
    with pytest.raises(BabelpruneError, match="safetensors weights only"):
        open_offloaded(str(bin_folder))
    with pytest.raises(BabelpruneError, match="hub id"):
        open_offloaded("someone/some-model")
    source = source_folder(tmp_path, "gemma3")
    offloaded = open_offloaded(str(source))
    prune_offloaded(offloaded, PruneConfig(method="magnitude"), None, tmp_path / "pruned", progress=False)
    with pytest.raises(BabelpruneError, match="written by babelprune"):
        open_offloaded(str(tmp_path / "pruned"))
    with pytest.raises(BabelpruneError, match="exists"):
        prune_offloaded(offloaded, PruneConfig(method="magnitude"), None, tmp_path / "pruned", progress=False)


def test_a_truncated_weights_file_is_named(tmp_path):
    source = source_folder(tmp_path, "llama")
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(BabelpruneError, match="truncated or corrupt"):
        open_offloaded(str(source))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--setting", "per-language"], "use --setting shared"),
        (["--language-budget", "minimax"], "drop one of them"),
        (["--structured", "heads"], "--offload disk prunes one-shot"),
    ],
)
def test_the_command_refuses_what_offloading_cannot_do(tmp_path, monkeypatch, capsys, args, expected):
    source = source_folder(tmp_path, "gemma3")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "prune", "--model", str(source), "--offload", "disk", "--out", "out", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_the_command_prunes_from_disk(tmp_path, monkeypatch, capsys):
    source = source_folder(tmp_path, "gemma3")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(
        monkeypatch, capsys, "prune", "--model", str(source), "--method", "wanda", "--calib", str(Path(__file__).parent / "fixtures" / "tiny.jsonl"),
        "--calib-langs", "en,fr", "--samples", "1", "--seq-len", "16", "--offload", "disk", "--out", "out",
    )
    assert code == 0, err
    assert "one block at a time from disk" in out
    pruned = AutoModel.from_pretrained(tmp_path / "out").state_dict()
    assert float((pruned["layers.0.self_attn.q_proj.weight"] == 0).float().mean()) == 0.5
