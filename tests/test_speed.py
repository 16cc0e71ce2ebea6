"""Speed and size measurement: hand-counted FLOPs, parameters and bytes on tiny models."""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.evaluate.speed import (
    SpeedReport,
    flops_per_token,
    measure_speed,
    measure_speeds,
    model_bytes,
    speed_markdown,
    speed_ratios,
    speed_table,
)
from babelprune.models.base import LoadedModel
from babelprune.prune.structured import (
    LayerKeep,
    Selection,
    apply_selection,
    structured_prune,
)
from babelprune.formats.structured import load_structured, save_structured
from tests.tiny_models import tiny_model

# Tiny configs (tests/tiny_models.py): vocab 128, hidden 32, 2 blocks, 4 heads of width 8, FFN 64.
# Llama: 2 kv heads, gated FFN, no biases, untied LM head. BERT: 4 kv heads, plain FFN, biases, no LM head.
#
# Llama block linears (weights): q 32*32 + k 32*16 + v 32*16 + o 32*32 = 3072; gate, up, down 3 * 32*64 = 6144.
LLAMA_BLOCK = 3072 + 6144  # 9216
# Parameters: embedding 128*32 + LM head 128*32 + 2 blocks + 2 norms of 32 per block + final norm 32.
LLAMA_PARAMS = 4096 + 4096 + 2 * LLAMA_BLOCK + 2 * 64 + 32  # 26784
# FLOPs per token at seq_len 8: linears 2 * 9216 per block; attention 4 * 4 heads * 8 wide * 8 positions = 1024 per block.
LLAMA_BODY_FLOPS_8 = 2 * (2 * 9216 + 1024)  # 38912
LLAMA_HEAD_FLOPS = 2 * 32 * 128  # 8192


def _loaded(family: str, path=None) -> LoadedModel:
    kind = "encoder" if family == "bert" else "causal-lm"
    return LoadedModel(model=tiny_model(family), tokenizer=None, spec=family, path=path, kind=kind)


def _llama_selection() -> Selection:
    """Block 0 loses key/value group 0 (query heads 0, 1); block 1 loses FFN neurons 48-63."""
    layers = [LayerKeep([2, 3], [1], list(range(64))), LayerKeep([0, 1, 2, 3], [0, 1], list(range(48)))]
    return Selection(layers=layers, blocks=[0, 1], removed_params=0, total_params=0)


def test_flops_of_dense_llama_by_hand():
    flops = flops_per_token(tiny_model("llama"), seq_len=8)
    assert (flops.linears, flops.attention, flops.lm_head) == (2 * 2 * 9216, 2 * 1024, LLAMA_HEAD_FLOPS)
    assert flops.body == LLAMA_BODY_FLOPS_8 and flops.total == 47104
    # Attention grows with the sequence: 4 * 4 * 8 * 128 = 16384 per block at 128 positions.
    assert flops_per_token(tiny_model("llama"), 128).attention == 2 * 16384


def test_flops_of_dense_bert_by_hand():
    flops = flops_per_token(tiny_model("bert"), seq_len=8)
    # Biases are not counted: per block q, k, v, o 4 * 32*32 + up, down 2 * 32*64 = 8192 MACs.
    assert (flops.linears, flops.attention, flops.lm_head) == (2 * 2 * 8192, 2 * 1024, 0)
    assert flops.total == flops.body == 34816


def test_llama_after_removing_a_group_and_neurons():
    loaded = _loaded("llama")
    apply_selection(loaded.model, _llama_selection())
    # Block 0: q 32*16 + k 32*8 + v 32*8 + o 16*32 = 1536 attention, 6144 FFN.
    # Block 1: 3072 attention, 3 * 32*48 = 4608 FFN.
    flops = flops_per_token(loaded.model, 8)
    # Attention: block 0 has 2 query heads (4*2*8*8 = 512), block 1 still 4 (1024).
    assert (flops.linears, flops.attention) == (2 * (7680 + 7680), 512 + 1024)
    assert (flops.body, flops.total) == (32256, 40448)
    report = measure_speed(loaded, seq_len=8, batch_size=2, runs=1, warmup=0)
    assert report.n_block_parameters == 15360
    assert report.n_parameters == LLAMA_PARAMS - (2 * LLAMA_BLOCK - 15360) == 23712
    assert (report.bytes_on_disk, report.bytes_source) == (4 * 23712, "estimate")


def test_bert_after_removing_heads_and_neurons():
    loaded = _loaded("bert")
    layers = [LayerKeep([0, 2], [0, 2], list(range(64))), LayerKeep([0, 1, 2, 3], [0, 1, 2, 3], list(range(40)))]
    apply_selection(loaded.model, Selection(layers=layers, blocks=[0, 1], removed_params=0, total_params=0))
    # Block 0 MACs: q, k, v 3 * 32*16 + o 16*32 + FFN 2 * 32*64 = 6144; attention 4 * 2 * 8 * 8 = 512.
    # Block 1 MACs: 4 * 32*32 + 2 * 32*40 = 6656; attention 1024.
    flops = flops_per_token(loaded.model, 8)
    assert (flops.linears, flops.attention, flops.total) == (2 * (6144 + 6656), 512 + 1024, 27136)
    report = measure_speed(loaded, seq_len=8, batch_size=2, runs=1, warmup=0)
    # With biases: block 0 = 3 * (32*16 + 16) + (16*32 + 32) + 4192 = 6320; block 1 = 4224 + (32*40 + 40) + (40*32 + 32) = 6856.
    assert report.n_block_parameters == 6320 + 6856
    # Dense BERT: embeddings 4096 + 2048 + 64 + norm 64, blocks 2 * (8416 + 2 norms 128), pooler 1056 = 24416.
    assert report.n_parameters == 24416 - (2 * 8416 - 13176) == 20760


def test_blocks_removed_by_structured_prune():
    loaded = _loaded("llama")
    structured_prune(loaded, {"blocks"}, "magnitude", 0.5, progress=False)
    flops = flops_per_token(loaded.model, 8)
    assert (flops.body, flops.total) == (2 * 9216 + 1024, 2 * 9216 + 1024 + LLAMA_HEAD_FLOPS)
    report = measure_speed(loaded, seq_len=8, batch_size=2, runs=1, warmup=0)
    assert (report.n_blocks, report.n_block_parameters) == (1, LLAMA_BLOCK)
    assert report.n_parameters == LLAMA_PARAMS - LLAMA_BLOCK - 64 == 17504


def test_measure_speed_structure_on_a_causal_lm():
    report = measure_speed(_loaded("llama"), seq_len=8, batch_size=3, runs=2, warmup=1, threads=1)
    assert report.n_parameters == LLAMA_PARAMS and report.n_block_parameters == 2 * LLAMA_BLOCK
    assert (report.flops_per_token, report.flops_per_token_body, report.has_lm_head) == (47104, LLAMA_BODY_FLOPS_8, True)
    assert (report.bytes_on_disk, report.bytes_source) == (4 * LLAMA_PARAMS, "estimate")
    assert set(report.samples_ms) == {"latency", "throughput", "latency_body", "throughput_body"}
    assert all(len(values) == 2 and min(values) > 0 for values in report.samples_ms.values())
    assert report.latency_batch1_ms > 0 and report.throughput_tokens_per_s > 0 and report.throughput_body_tokens_per_s > 0
    assert (report.runs, report.warmup, report.threads, report.seq_len, report.batch_size) == (2, 1, 1, 8, 3)


def test_encoder_body_is_the_whole_model_and_threads_are_restored():
    before = torch.get_num_threads()
    report = measure_speed(_loaded("bert"), seq_len=8, batch_size=2, runs=1, warmup=0, threads=1)
    assert torch.get_num_threads() == before
    assert set(report.samples_ms) == {"latency", "throughput"} and report.has_lm_head is False
    assert report.latency_body_batch1_ms == report.latency_batch1_ms
    assert report.flops_per_token == report.flops_per_token_body == 34816


def test_bytes_from_saved_files_and_not_from_a_stale_folder(tmp_path):
    loaded = _loaded("llama")
    apply_selection(loaded.model, _llama_selection())
    save_structured(loaded.model, None, tmp_path / "pruned")
    again = load_structured(tmp_path / "pruned")
    size, source = model_bytes(again)
    file_size = (tmp_path / "pruned" / "model.safetensors").stat().st_size
    assert source == "files" and size == file_size
    assert 4 * 23712 < size < 4 * 23712 + 10_000  # the weights plus a small JSON header
    # A dense model whose path names the pruned folder is not credited with that folder's size.
    stale = _loaded("llama", path=tmp_path / "pruned")
    assert model_bytes(stale) == (4 * LLAMA_PARAMS, "estimate")


def _report(spec: str, flops: int, latency: float, throughput: float, params: int) -> SpeedReport:
    return SpeedReport(
        spec=spec, kind="encoder", n_blocks=2, n_parameters=params, n_block_parameters=params // 2,
        bytes_on_disk=4 * params, bytes_source="estimate", seq_len=128, batch_size=8,
        flops_per_token=flops, flops_per_token_body=flops, has_lm_head=False,
        latency_batch1_ms=latency, throughput_tokens_per_s=throughput,
        latency_body_batch1_ms=latency, throughput_body_tokens_per_s=throughput,
        runs=3, warmup=1, threads=2, samples_ms={"latency": [latency] * 3, "throughput": [1.0] * 3},
    )


def test_ratios_and_tables_by_hand():
    dense = _report("dense", flops=100, latency=10.0, throughput=1000.0, params=1000)
    pruned = _report("ffn-50%", flops=50, latency=6.25, throughput=1500.0, params=800)
    ratios = speed_ratios(dense, pruned)
    assert (ratios.flop_reduction, ratios.latency_speedup, ratios.throughput_speedup) == (2.0, 1.6, 1.5)
    assert (ratios.latency_efficiency, ratios.throughput_efficiency) == (0.8, 0.75)
    assert (ratios.parameters, ratios.bytes) == (0.8, 0.8)
    markdown = speed_markdown([dense, pruned])
    pruned_row = markdown.strip().splitlines()[-1]
    assert pruned_row.startswith("| ffn-50% |") and "| 2.00x | 0.80 | 0.75 |" in pruned_row
    assert "(1.60x) | 1500 (1.50x) |" in pruned_row and len(markdown.strip().splitlines()) == 6  # title, blank, header, rule, 2 rows
    table = speed_table([dense, pruned], labels=["dense", "FFN"])
    assert table.row_count == 2 and table.columns[0]._cells == ["dense", "FFN"]


def test_bad_settings_raise_one_sentence_errors():
    with pytest.raises(BabelpruneError, match="at least 1"):
        flops_per_token(tiny_model("llama"), 0)
    with pytest.raises(BabelpruneError, match="runs"):
        measure_speeds([_loaded("llama")], runs=0)
    with pytest.raises(BabelpruneError, match="No speed reports"):
        speed_markdown([])
