"""Quantized GGUF export: importance matrices from per-language statistics, their file, refusals, llama.cpp itself.

The matrix values are checked on a toy model whose linear inputs are known
by construction; the file against llama.cpp's imatrix GGUF layout. With
llama-cpp-python installed, tiny Llama models (hidden width 256, so that
k-quants apply, and 32, so that they fall back) are quantized by
llama.cpp and read back with the `gguf` package and with llama.cpp.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch import nn

from babelprune import api
from babelprune.errors import BabelpruneError
from babelprune.formats.gguf import export_gguf
from babelprune.formats.imatrix import ImportanceMatrix, read_imatrix, write_imatrix
from babelprune.prune.calibration import Calibration
from babelprune.prune.imatrix import importance_values, linear_input_stats
from tests.cli_runner import run_cli
from tests.test_gguf_export import SENTENCES, as_loaded, decoder_for_gguf, llama_tokenizer, one_sentence

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed")


class Toy(nn.Module):
    """Token t's input to `proj` is row t of a fixed table: the statistics are known by hand."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(table)  # (vocab, 2)
        self.proj = nn.Linear(2, 3)

    def forward(self, input_ids, use_cache=False):
        return self.proj(self.table[input_ids])  # (n, T, 2) -> (n, T, 3)


def toy_calibration() -> Calibration:
    """Two English windows of token 0 (inputs [1, 2]) and one French window of token 1 (inputs [3, 0])."""
    ids = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 1, 1]])
    return Calibration(ids, ("en", "en", "fr"), "toy")


def toy_stats():
    return linear_input_stats(Toy([[1.0, 2.0], [3.0, 0.0]]), toy_calibration(), batch=1)


def test_balanced_matrix_is_the_mean_of_the_language_means():
    values = importance_values(toy_stats(), "balanced")["proj"]
    # en: mean x^2 = [1, 4]; fr: [9, 0]; each language 1/2. Pooled over tokens it would be [11/3, 8/3].
    np.testing.assert_allclose(values, [5.0, 2.0], rtol=1e-6)


def test_one_language_matrix_is_that_language_alone():
    stats = toy_stats()
    np.testing.assert_allclose(importance_values(stats, "en")["proj"], [1.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(importance_values(stats, "fr")["proj"], [9.0, 0.0], rtol=1e-6)
    with pytest.raises(BabelpruneError) as error:
        importance_values(stats, "de")
    assert "de" in one_sentence(error) and "en, fr" in str(error.value)


def test_imatrix_file_round_trips_in_llama_cpps_layout(tmp_path):
    from gguf import GGUFReader

    values = {"blk.0.attn_q.weight": np.array([5.0, 2.0, 0.25], dtype=np.float32),
              "blk.0.ffn_down.weight": np.arange(1, 9, dtype=np.float32) / 7}
    matrix = ImportanceMatrix(values, "balanced", ("en", "fr"), tokens=9, chunk_size=3, chunks=3, datasets=("toy",))
    path = tmp_path / "m.imatrix.gguf"
    write_imatrix(matrix, path)
    back = read_imatrix(path)
    assert set(back) == set(values)
    for name in values:
        np.testing.assert_allclose(back[name], values[name], rtol=1e-6)
    reader = GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "imatrix"
    assert reader.fields["imatrix.datasets"].contents() == ["toy"]
    assert reader.fields["imatrix.chunk_count"].contents() == 3 and reader.fields["imatrix.chunk_size"].contents() == 3
    shapes = {t.name: (t.tensor_type.name, [int(n) for n in t.shape]) for t in reader.tensors}
    # ggml's ne order: in_sum2 (in, matrices), counts (1, matrices); sums are mean * count.
    assert shapes["blk.0.attn_q.weight.in_sum2"] == ("F32", [3, 1])
    assert shapes["blk.0.attn_q.weight.counts"] == ("F32", [1, 1])
    sums = {t.name: np.array(t.data) for t in reader.tensors}
    np.testing.assert_allclose(sums["blk.0.attn_q.weight.in_sum2"].ravel(), [45.0, 18.0, 2.25], rtol=1e-6)


# --------------------------------------------------------------------------- refusals, before any model is loaded


def _never_loaded(*args, **kwargs):
    raise AssertionError("the model was loaded before the refusal")


@pytest.fixture
def no_loading(monkeypatch):
    monkeypatch.setattr(api, "load_model", _never_loaded)


def test_an_unknown_quantization_is_refused_in_one_sentence(no_loading, tmp_path):
    with pytest.raises(BabelpruneError) as error:
        api.export_model("tiny", tmp_path / "m.gguf", quant="Q4_0_X")
    assert "Q4_0_X" in one_sentence(error) and "Q4_K_M" in str(error.value)


def test_without_llama_cpp_python_one_sentence_names_the_extra(no_loading, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    with pytest.raises(BabelpruneError) as error:
        api.export_model("tiny", tmp_path / "m.gguf", quant="Q4_K_M")
    assert "pip install 'babelprune[llama]'" in one_sentence(error)


def test_cli_without_llama_cpp_python_says_so_in_one_line(no_loading, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    code, _, err = run_cli(monkeypatch, capsys, "export", "tiny", "--out", str(tmp_path / "m.gguf"), "--quant", "Q2_K")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "babelprune[llama]" in err, err


def test_a_matrix_without_a_quantization_is_refused(no_loading, tmp_path):
    with pytest.raises(BabelpruneError) as error:
        api.export_model("tiny", tmp_path / "m.gguf", imatrix="balanced")
    assert "--quant" in one_sentence(error)


@needs_llama_cpp
def test_q8_0_with_a_matrix_is_refused(no_loading, tmp_path):
    with pytest.raises(BabelpruneError) as error:
        api.export_model("tiny", tmp_path / "m.gguf", quant="Q8_0", imatrix="balanced")
    assert "Q8_0" in one_sentence(error)


@needs_llama_cpp
def test_a_matrix_language_outside_the_calibration_is_refused(no_loading, tmp_path):
    spec = api.CalibrationSpec(languages=["en", "fr"])
    with pytest.raises(BabelpruneError) as error:
        api.export_model("tiny", tmp_path / "m.gguf", quant="Q4_K_M", imatrix="sw", calibration=spec)
    assert "sw" in one_sentence(error)


# --------------------------------------------------------------------------- llama.cpp itself


def wide_llama(width: int = 256):
    tokenizer = llama_tokenizer()
    model = decoder_for_gguf("llama", tokenizer, hidden_size=width, intermediate_size=2 * width,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=width // 4)
    return as_loaded(model, tokenizer), tokenizer


def sentence_calibration(tokenizer) -> Calibration:
    """Windows of the test sentences labelled as two languages (the first half 'en', the rest 'fr')."""
    rows = [tokenizer(text)["input_ids"] for text in SENTENCES[:6]]
    width = min(len(row) for row in rows)
    return Calibration(torch.tensor([row[:width] for row in rows]), ("en",) * 3 + ("fr",) * 3, "toy")


def stored(path) -> tuple[dict, dict]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return ({t.name: t.tensor_type.name for t in reader.tensors}, {t.name: bytes(t.data) for t in reader.tensors})


@needs_llama_cpp
def test_q4_k_m_with_a_balanced_matrix_is_quantized_by_llama_cpp(tmp_path):
    from gguf import GGUFReader

    from babelprune.formats.gguf import linear_gguf_names
    from babelprune.formats.gguf_quant import export_quantized

    loaded, tokenizer = wide_llama()
    names = linear_gguf_names(loaded)
    values = importance_values(linear_input_stats(loaded.model, sentence_calibration(tokenizer)), "balanced")
    matrix = ImportanceMatrix({names[m]: v for m, v in values.items()}, "balanced", ("en", "fr"), 60, 10, 6)
    balanced = export_quantized(loaded, tmp_path / "balanced.gguf", "Q4_K_M", matrix=matrix)
    plain = export_quantized(loaded, tmp_path / "plain.gguf", "Q4_K_M")
    assert balanced.quant == "Q4_K_M" and balanced.fallbacks == {} and balanced.imatrix == "balanced"
    types, data = stored(balanced.path)
    assert types["blk.0.attn_q.weight"] == "Q4_K" and types["blk.0.attn_norm.weight"] == "F32"
    assert set(types.values()) <= {"Q4_K", "Q6_K", "F32"}  # Q4_K_M keeps some tensors in Q6_K
    # The matrix reached the quantizer: the same weights were rounded differently.
    plain_types, plain_data = stored(plain.path)
    assert plain_types == types
    assert data["blk.0.attn_q.weight"] != plain_data["blk.0.attn_q.weight"]
    fields = GGUFReader(str(balanced.path)).fields
    assert fields["babelprune.quantize.type"].contents() == "Q4_K_M"
    assert fields["babelprune.quantize.imatrix"].contents() == "balanced"
    assert fields["babelprune.quantize.imatrix.languages"].contents() == ["en", "fr"]
    assert fields["babelprune.quantize.imatrix"].contents() == "balanced"
    assert GGUFReader(str(plain.path)).fields["babelprune.quantize.imatrix"].contents() == "none"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["balanced.gguf", "plain.gguf"]  # no temporaries left


@needs_llama_cpp
@pytest.mark.parametrize("quant", ["Q6_K", "Q5_K_M", "Q3_K_M", "Q2_K"])
def test_every_k_mix_writes_its_types(quant, tmp_path):
    from babelprune.formats.gguf_quant import export_quantized

    loaded, _ = wide_llama()
    written = export_quantized(loaded, tmp_path / "m.gguf", quant)
    main = {"Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q3_K_M": "Q3_K", "Q2_K": "Q2_K"}[quant]
    types, _ = stored(written.path)
    assert types["blk.0.ffn_gate.weight"] == main and written.fallbacks == {}


@needs_llama_cpp
def test_rows_narrower_than_a_k_block_fall_back_and_are_recorded(tmp_path):
    from gguf import GGUFReader

    from babelprune.formats.gguf_quant import export_quantized

    loaded, _ = wide_llama(32)
    written = export_quantized(loaded, tmp_path / "m.gguf", "Q6_K")
    types, _ = stored(written.path)
    assert written.fallbacks and set(written.fallbacks.values()) == {"Q8_0"}  # llama.cpp's fallback for Q6_K
    assert all(types[name] == kind for name, kind in written.fallbacks.items())
    recorded = GGUFReader(str(written.path)).fields["babelprune.quantize.fallback_tensors"].contents()
    assert sorted(recorded) == sorted(written.fallbacks) and "blk.0.ffn_down.weight" in recorded


@needs_llama_cpp
def test_q8_0_runs_in_llama_cpp_close_to_the_f32_model(tmp_path):
    import llama_cpp

    from babelprune.formats.gguf_quant import export_quantized

    loaded, tokenizer = wide_llama()
    written = export_quantized(loaded, tmp_path / "q8.gguf", "Q8_0")
    types, _ = stored(written.path)
    assert types["blk.0.attn_q.weight"] == "Q8_0" and written.imatrix == "none"
    ids = tokenizer(SENTENCES[0])["input_ids"]
    f32 = llama_cpp.GGML_TYPE_F32
    engine = llama_cpp.Llama(str(written.path), n_ctx=64, logits_all=True, verbose=False, n_threads=1,
                             type_k=f32, type_v=f32)
    engine.eval(ids)
    read = torch.tensor(np.array(engine.scores[: len(ids)]), dtype=torch.float32)
    with torch.no_grad():
        original = loaded.model(input_ids=torch.tensor([ids])).logits[0]
    # Q8_0 rounds weights (and, in ggml's matmul, activations) to 8 bits per 32-value block: about 0.03 on
    # these logits of up to 1.2, against 1e-5 for the f32 file (tests/test_gguf_export.py).
    difference = (read - original).abs().max().item()
    assert difference < 0.05, difference
    assert (read.argmax(-1) == original.argmax(-1)).float().mean() >= 0.8
