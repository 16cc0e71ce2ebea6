"""bench-speed's generation, disk and memory figures: counts, sources and tables on tiny models (no timing asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.evaluate.memory import PeakMemory
from babelprune.evaluate.probes import generation_probe
from babelprune.evaluate.sizes import folder_bytes, model_bytes
from babelprune.evaluate.speed import SpeedReport, footprint_markdown, measure_speed, measure_speeds
from babelprune.formats.pruned import load_pruned, save_pruned
from babelprune.models.base import LoadedModel
from tests.cli_runner import run_cli
from tests.test_prune_storage import pruned_shared
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

NEW_TOKENS = 64


def _loaded(family: str, positions: int = 128, path=None) -> LoadedModel:
    """A tiny model with room for a short prompt and 64 new tokens."""
    model = tiny_model(family)
    model.config.max_position_embeddings = positions
    kind = "encoder" if family == "bert" else "causal-lm"
    return LoadedModel(model=model, tokenizer=None, spec=family, path=path, kind=kind)


def test_generation_is_timed_once_per_run_and_makes_exactly_the_asked_tokens():
    report = measure_speed(_loaded("llama"), seq_len=8, batch_size=2, runs=3, warmup=1, new_tokens=NEW_TOKENS, prompt_tokens=8)
    assert (report.new_tokens, report.prompt_tokens) == (NEW_TOKENS, 8)
    assert len(report.samples_ms["generate"]) == 3  # the warm-up call is not among the samples
    assert report.generate_ms_per_token is not None and report.generate_ms_per_token > 0
    assert report.memory is None  # not asked for


def test_an_end_of_sequence_token_does_not_cut_generation_short():
    loaded = _loaded("llama")
    with torch.no_grad():  # every logit equal: greedy picks id 0, made the end of sequence token
        loaded.model.lm_head.weight.zero_()
    loaded.model.generation_config.eos_token_id = 0
    counts: list[int] = []
    with torch.inference_mode():
        output = generation_probe(loaded, NEW_TOKENS, 8, counts)()
    assert counts == [NEW_TOKENS] and output.shape == (1, 8 + NEW_TOKENS)
    assert 0 not in output[0, 8:].tolist()  # held back until the last new token


def test_encoders_have_no_generation_and_tables_say_n_a():
    report = measure_speed(_loaded("bert"), seq_len=8, batch_size=2, runs=1, warmup=0, new_tokens=NEW_TOKENS)
    assert (report.new_tokens, report.generate_ms_per_token, report.prompt_tokens) == (None, None, None)
    assert "generate" not in report.samples_ms
    row = footprint_markdown([report]).strip().splitlines()[-1]
    assert row.split(" | ")[4] == "n/a", row


def test_too_many_positions_for_generation_are_refused_before_timing():
    with pytest.raises(BabelpruneError, match="needs 80 positions, but llama has 64"):
        measure_speed(_loaded("llama", positions=64), runs=1, warmup=0, new_tokens=NEW_TOKENS, prompt_tokens=16)


def test_bad_generation_settings_are_one_sentence_errors():
    with pytest.raises(BabelpruneError, match="prompt tokens must be at least 1"):
        measure_speed(_loaded("llama"), runs=1, warmup=0, new_tokens=4, prompt_tokens=0)
    with pytest.raises(BabelpruneError, match="new tokens at least 0"):
        measure_speed(_loaded("llama"), runs=1, warmup=0, new_tokens=-1)


# ----- bytes on disk ----------------------------------------------------------------


def _files_bytes(folder) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_a_sparse_only_folder_counts_its_sparse_copy_and_every_file(tmp_path):
    loaded, result = pruned_shared("llama")
    folder = save_pruned(loaded, result, tmp_path / "sparse-only", format="sparse", values="fp16")
    again = load_pruned(folder)
    size, source = model_bytes(again)
    assert (size, source) == ((folder / "sparse" / "sparse.safetensors").stat().st_size, "sparse")
    assert folder_bytes(again) == _files_bytes(folder)
    assert not (folder / "model.safetensors").exists()


def test_a_folder_in_format_both_counts_the_hf_copy_as_weights_and_both_copies_in_the_folder(tmp_path):
    loaded, result = pruned_shared("llama")
    folder = save_pruned(loaded, result, tmp_path / "both", format="both")
    again = load_pruned(folder)
    hf, sparse = (folder / "model.safetensors").stat().st_size, (folder / "sparse" / "sparse.safetensors").stat().st_size
    assert model_bytes(again) == (hf, "files")
    assert folder_bytes(again) == _files_bytes(folder) and folder_bytes(again) > hf + sparse


def test_a_model_changed_after_loading_has_no_folder_bytes_and_no_memory_source(tmp_path):
    loaded, result = pruned_shared("llama")
    again = load_pruned(save_pruned(loaded, result, tmp_path / "out", format="sparse"))
    again.model.lm_head.weight.data = torch.zeros(200, 32)  # more rows than the folder holds
    assert model_bytes(again)[1] == "estimate" and folder_bytes(again) is None
    with pytest.raises(BabelpruneError, match="changed after it was loaded"):
        measure_speed(again, runs=1, warmup=0, memory=True)


# ----- peak memory, one fresh process per model ---------------------------------------


def test_memory_is_measured_for_every_model_in_a_fresh_process(tmp_path):
    loaded, result = pruned_shared("llama")
    hf_folder = tmp_path / "hf"
    loaded.model.save_pretrained(hf_folder)
    char_tokenizer().save_pretrained(hf_folder)
    sparse = load_pruned(save_pruned(loaded, result, tmp_path / "sparse", format="sparse"))
    hf = _loaded("llama", positions=64, path=hf_folder)
    hf.model = type(loaded.model).from_pretrained(hf_folder).eval()
    reports = measure_speeds([hf, sparse], seq_len=8, batch_size=2, runs=1, warmup=0, new_tokens=8, prompt_tokens=4, memory=True)
    for report in reports:
        memory = report.memory
        assert memory is not None and 0 < memory.base and 0 < memory.loaded <= memory.peak
    assert [r.new_tokens for r in reports] == [8, 8]


def test_footprint_table_by_hand():
    def report(spec, weights, folder, nonzero, generate, peak, source="files") -> SpeedReport:
        return SpeedReport(
            spec=spec, kind="causal-lm", n_blocks=2, n_parameters=1000, n_block_parameters=500, bytes_on_disk=weights,
            bytes_source=source, seq_len=8, batch_size=2, flops_per_token=1, flops_per_token_body=1, has_lm_head=True,
            latency_batch1_ms=1.0, throughput_tokens_per_s=1.0, latency_body_batch1_ms=1.0,
            throughput_body_tokens_per_s=1.0, runs=3, warmup=1, threads=1, samples_ms={},
            n_nonzero_parameters=nonzero, folder_bytes=folder, prompt_tokens=16, new_tokens=64,
            generate_ms_per_token=generate, memory=PeakMemory(base=1, loaded=2, peak=peak),
        )

    dense = report("dense", 8_000_000, 10_000_000, 2_000_000, 20.0, 400_000_000)
    small = report("small", 2_000_000, 2_500_000, 500_000, 8.0, 300_000_000, source="sparse")
    rows = footprint_markdown([dense, small]).strip().splitlines()
    assert rows[-1] == "| small | 2 (0.25x) sparse | 2 (0.25x) | 0.5 (0.25x) | 8.0 (2.50x) | 300 (0.75x) |", rows[-1]
    assert "64 new tokens after 16 prompt tokens" in rows[0]


def test_bench_speed_writes_the_new_fields_to_json(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "tiny-lm"
    _loaded("gemma3").model.save_pretrained(folder)
    out = tmp_path / "speed.json"
    code, printed, err = run_cli(monkeypatch, capsys, "bench-speed", str(folder), "--runs", "1", "--warmup", "0", "--seq-len", "8",
                                 "--batch", "2", "--new-tokens", "8", "--prompt-tokens", "4", "--no-memory", "--json", str(out))
    assert code == 0, err
    (record,) = json.loads(out.read_text())
    assert (record["new_tokens"], record["prompt_tokens"], record["memory"]) == (8, 4, None)
    assert record["bytes_source"] == "files" and record["folder_bytes"] == _files_bytes(folder)
    assert "Disk, generation and memory" in printed


def test_bench_speed_refuses_a_generation_too_long_for_the_model_in_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "tiny-lm"
    _loaded("gemma3", positions=64).model.save_pretrained(folder)
    out = tmp_path / "speed.json"
    code, _, err = run_cli(monkeypatch, capsys, "bench-speed", str(folder), "--runs", "1", "--warmup", "0",
                           "--new-tokens", "64", "--prompt-tokens", "16", "--json", str(out))
    assert code == 2 and "needs 80 positions" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_memory_process_does_not_inherit_this_process_s_resident_memory(tmp_path):
    from babelprune.evaluate.memory import current_rss, measure_peak_memory

    folder = tmp_path / "tiny-lm"
    _loaded("llama").model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    ballast = torch.ones(256 * 2**20, dtype=torch.float32)  # 1 GiB resident in this process while the child runs
    parent = current_rss()
    peak = measure_peak_memory(str(folder), seq_len=8, batch_size=2, new_tokens=4, prompt_tokens=4).peak
    del ballast
    # A child that loads a tiny model stays far below a parent holding 1 GiB more than the libraries.
    assert peak < parent - 2**29, (peak, parent)
