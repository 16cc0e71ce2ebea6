"""GGUF files measured in llama.cpp: `eval --runtime llama.cpp` and `bench-speed FILE.gguf`.

Without llama-cpp-python: the windows and token ids fed to the runtime are the
torch evaluation's, and bits per byte come out as computed by hand from known
logits (a fake runtime stands in for llama.cpp); every refusal is one
sentence, with nothing written. With llama-cpp-python: a tiny random Llama
exported as f32 GGUF scores within 1e-6 (relative) of babelprune's torch
scores of its source folder, per language, and bench-speed times it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from babelprune import api
from babelprune.errors import BabelpruneError
from babelprune.evaluate import llama_cpp as runtime_module
from babelprune.evaluate.windows import Window
from babelprune.formats.gguf import read_gguf
from babelprune.formats.loading import load_model
from babelprune.records.eval import EvalResult
from babelprune.records.speed import is_speed_reports_file
from tests.cli_runner import run_cli
from tests.test_gguf_export import as_loaded, one_sentence, tiny_for_gguf
from tests.tiny_subword import TEXTS

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (pip install 'babelprune[llama]')")

# |llama.cpp - torch| / torch, bits per byte of each language, f32 file and f32 key/value cache (docs/vocab.md).
F32_AGREEMENT = 1e-6
LANGS = ["en", "fr"]
SEQ_LEN, MAX_TOKENS = 16, 160  # windows of 16 tokens: 8 or more per language, enough for intervals
BOOST = 3.0  # the fake runtime's logit of the token that comes next


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A tiny random Llama's HF folder, its f32 GGUF export (which records the folder) and a corpus of TEXTS."""
    root = tmp_path_factory.mktemp("llama-cpp-eval")
    model, tokenizer = tiny_for_gguf("llama")
    folder = root / "source"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    path = root / "tiny-f32.gguf"
    api.export_gguf(load_model(str(folder)), path)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"lang": lang, "text": text}) + "\n"
                              for lang, texts in TEXTS.items() for text in texts * 3), encoding="utf-8")
    return {"folder": folder, "gguf": path, "corpus": corpus, "root": root}


class FakeRuntime:
    """Stands in for llama.cpp: logits of value BOOST at the token that comes next, 0 elsewhere; records what it is fed."""

    fed: list[list[int]] = []

    def __init__(self, path, n_ctx, **_) -> None:
        self.n_ctx = n_ctx
        self.n_vocab = len(read_gguf(path).tokens)

    def logits(self, ids):
        assert len(ids) <= self.n_ctx
        FakeRuntime.fed.append(list(ids))
        rows = np.zeros((len(ids), self.n_vocab), dtype=np.float32)
        rows[np.arange(len(ids) - 1), ids[1:]] = BOOST
        return rows

    def close(self) -> None:
        pass


@pytest.fixture
def fake_llama_cpp(monkeypatch):
    """llama.cpp replaced by FakeRuntime (llama-cpp-python need not be installed)."""
    FakeRuntime.fed = []
    monkeypatch.setattr(runtime_module, "LlamaCppRuntime", FakeRuntime)
    monkeypatch.setattr(runtime_module, "bindings", lambda purpose="": object())
    monkeypatch.setattr(runtime_module, "versions", lambda: ("0.0.0", "fake"))
    return FakeRuntime


# --------------------------------------------------------------------------- without llama.cpp


def test_window_nll_is_the_float64_log_softmax_at_the_next_token():
    logits = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [9.0, 9.0, 9.0]], dtype=np.float32)
    ids = [0, 2, 0]  # position 0 predicts 2, position 1 predicts 0; the last row predicts nothing
    expected = (math.log(1 + math.e + math.e**2) - 2.0) + (math.log(math.e**3 + 2) - 3.0)
    assert runtime_module.window_nll(logits, ids) == pytest.approx(expected, rel=1e-12)


def test_llama_cpp_gets_the_torch_windows_and_bits_per_byte_are_as_computed_by_hand(exported, fake_llama_cpp, monkeypatch):
    corpus = str(exported["corpus"])
    seen: list[list[int]] = []
    score_windows = api.score_windows

    def recording(model, windows: list[Window], *args, **kwargs):
        seen.extend(list(window.ids) for window in windows)
        return score_windows(model, windows, *args, **kwargs)

    monkeypatch.setattr(api, "score_windows", recording)
    torch_result = api.evaluate_model(str(exported["folder"]), corpus, LANGS, "all", SEQ_LEN, MAX_TOKENS)
    result = api.evaluate_model(str(exported["gguf"]), corpus, LANGS, "all", SEQ_LEN, MAX_TOKENS, runtime="llama.cpp")
    assert fake_llama_cpp.fed == seen and len(seen) >= 2 * 5  # the same windows, token for token, in the same order
    vocab = len(read_gguf(exported["gguf"]).tokens)
    per_token = math.log(math.exp(BOOST) + vocab - 1) - BOOST  # nats: BOOST on the right token, 0 on the other vocab - 1
    start = 0
    for ours, theirs in zip(result.scores, torch_result.scores):
        assert (ours.language, ours.n_windows, ours.n_tokens, ours.n_bytes) == (
            theirs.language, theirs.n_windows, theirs.n_tokens, theirs.n_bytes)
        assert ours.window_bytes == theirs.window_bytes
        windows, start = seen[start : start + ours.n_windows], start + ours.n_windows
        assert ours.window_nll == pytest.approx([(len(ids) - 1) * per_token for ids in windows], rel=1e-12)
        assert ours.bits_per_byte == pytest.approx(ours.n_tokens * per_token / math.log(2) / ours.n_bytes, rel=1e-12)
        assert ours.bits_per_byte_interval is not None  # the torch path's bootstrap, on the runtime's windows
    assert result.settings == {"seq_len": SEQ_LEN, "max_tokens": MAX_TOKENS}
    model = result.model
    assert model.runtime == "llama.cpp" and torch_result.model.runtime == "torch"
    assert model.gguf.file == str(exported["gguf"]) and model.gguf.file_type == "F32"
    assert model.gguf.tokenizer == str(exported["folder"].resolve()) and model.gguf.llama_cpp == "fake"
    assert model.architecture == "llama" and model.block_sparsity == 0.0


def test_the_result_round_trips_and_compares_with_the_torch_result(exported, fake_llama_cpp, tmp_path, monkeypatch, capsys):
    out, dense = tmp_path / "gguf.json", tmp_path / "torch.json"
    common = ["--corpus", str(exported["corpus"]), "--langs", "en,fr", "--split", "all", "--seq-len", str(SEQ_LEN),
              "--max-tokens", str(MAX_TOKENS)]
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", str(exported["folder"]), *common, "--out", str(dense))
    assert code == 0, err
    code, printed, err = run_cli(monkeypatch, capsys, "eval", "--runtime", "llama.cpp", "--model", str(exported["gguf"]),
                                 *common, "--out", str(out))
    assert code == 0, err
    assert "llama.cpp F32" in printed
    back = EvalResult.load(out)
    assert back.model.runtime == "llama.cpp" and back.model.gguf.file_type == "F32"
    code, printed, err = run_cli(monkeypatch, capsys, "compare", str(dense), str(out))
    assert code == 0, err  # the same windows: compare accepts the pair
    assert "dense, llama.cpp F32" in printed  # the column names the runtime and the file's type


def test_a_tokenizer_named_on_the_command_line_is_used_and_checked(exported, fake_llama_cpp):
    result = api.evaluate_model(str(exported["gguf"]), str(exported["corpus"]), ["en"], "all", SEQ_LEN, MAX_TOKENS,
                                runtime="llama.cpp", tokenizer=str(exported["folder"]))
    assert result.model.gguf.tokenizer == str(exported["folder"])
    other, tokenizer = tiny_for_gguf("gemma3")  # another vocabulary: tiny_bpe's pieces, Gemma's spelling
    folder = exported["root"] / "other"
    other.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(BabelpruneError) as error:
        api.evaluate_model(str(exported["gguf"]), str(exported["corpus"]), ["en"], "all", SEQ_LEN, MAX_TOKENS,
                           runtime="llama.cpp", tokenizer=str(folder))
    assert "is not the one tiny-f32.gguf was exported with (its space prefix is False there and True in the file)" in one_sentence(error)


def test_a_file_whose_source_is_gone_needs_the_tokenizer(exported, fake_llama_cpp, tmp_path):
    model, tokenizer = tiny_for_gguf("llama")
    path = tmp_path / "elsewhere.gguf"
    api.export_gguf(as_loaded(model, tokenizer, spec=str(tmp_path / "gone")), path)
    with pytest.raises(BabelpruneError) as error:
        api.evaluate_model(str(path), str(exported["corpus"]), ["en"], "all", SEQ_LEN, MAX_TOKENS, runtime="llama.cpp")
    assert "give --tokenizer" in one_sentence(error)
    result = api.evaluate_model(str(path), str(exported["corpus"]), ["en"], "all", SEQ_LEN, MAX_TOKENS, runtime="llama.cpp",
                                tokenizer=str(exported["folder"]))
    assert result.scores[0].n_windows >= 5


def _refused(monkeypatch, capsys, out: Path, *args: str) -> str:
    """The command fails with one line on stderr and writes nothing at `out`."""
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    return err


@pytest.mark.parametrize(("options", "says"), [
    (["--runtime", "torch"], "is a GGUF file, which the torch runtime does not load; add --runtime llama.cpp"),
    ([], "add --runtime llama.cpp"),
    (["--runtime", "llama.cpp", "--device", "cpu"], "--device has no effect with --runtime llama.cpp"),
    (["--runtime", "llama.cpp", "--dtype", "float32", "--batch-size", "2"], "--batch-size, --dtype have no effect with --runtime llama.cpp"),
    (["--runtime", "llama.cpp", "--sparse-kernels", "none"], "--sparse-kernels has no effect"),
])
def test_options_and_models_the_runtime_cannot_take_are_refused(exported, monkeypatch, capsys, tmp_path, options, says):
    out = tmp_path / "r.json"
    err = _refused(monkeypatch, capsys, out, "eval", "--model", str(exported["gguf"]), "--corpus", str(exported["corpus"]),
                   *options, "--out", str(out))
    assert says in err


@pytest.mark.parametrize(("settings", "says"), [
    ({"device": "cuda"}, "--device has no effect with --runtime llama.cpp"),
    ({"dtype": "bfloat16", "sparse_kernels": "2:4"}, "--dtype, --sparse-kernels have no effect with --runtime llama.cpp"),
    ({"runtime": "onnx"}, "Unknown runtime 'onnx'; choose one of torch, llama.cpp."),
])
def test_the_library_refuses_the_same_settings(exported, settings, says):
    with pytest.raises(BabelpruneError) as error:
        api.evaluate_model(str(exported["gguf"]), str(exported["corpus"]), **{"runtime": "llama.cpp", **settings})
    assert says in one_sentence(error)


def test_a_tokenizer_with_the_torch_runtime_is_refused(exported, monkeypatch, capsys, tmp_path):
    out = tmp_path / "r.json"
    err = _refused(monkeypatch, capsys, out, "eval", "--model", str(exported["folder"]), "--tokenizer",
                   str(exported["folder"]), "--corpus", str(exported["corpus"]), "--out", str(out))
    assert "--tokenizer" in err and "--runtime llama.cpp" in err


@pytest.mark.parametrize("what", ["folder", "json", "missing"])
def test_what_is_not_a_gguf_file_is_refused_with_llama_cpp(exported, monkeypatch, capsys, tmp_path, what):
    model = {"folder": str(exported["folder"]), "json": str(exported["folder"] / "config.json"),
             "missing": str(tmp_path / "none.gguf")}[what]
    out = tmp_path / "r.json"
    err = _refused(monkeypatch, capsys, out, "eval", "--runtime", "llama.cpp", "--model", model, "--corpus",
                   str(exported["corpus"]), "--out", str(out))
    assert ("is not a GGUF file" if what == "json" else "No GGUF file at") in err


def test_without_llama_cpp_python_eval_names_the_extra(exported, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    out = tmp_path / "r.json"
    err = _refused(monkeypatch, capsys, out, "eval", "--runtime", "llama.cpp", "--model", str(exported["gguf"]),
                   "--corpus", str(exported["corpus"]), "--out", str(out))
    assert "pip install 'babelprune[llama]'" in err
    with pytest.raises(BabelpruneError) as error:
        api.evaluate_model(str(exported["gguf"]), str(exported["corpus"]), runtime="llama.cpp")
    assert "babelprune[llama]" in one_sentence(error)


def test_bench_speed_refusals(exported, monkeypatch, capsys, tmp_path):
    out = tmp_path / "s.json"
    gguf = str(exported["gguf"])
    err = _refused(monkeypatch, capsys, out, "bench-speed", gguf, "--batch", "2", "--json", str(out))
    assert "--batch has no effect with GGUF files" in err
    err = _refused(monkeypatch, capsys, out, "bench-speed", gguf, str(exported["folder"]), "--json", str(out))
    assert "separate bench-speed commands" in err
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    err = _refused(monkeypatch, capsys, out, "bench-speed", gguf, "--json", str(out))
    assert "pip install 'babelprune[llama]'" in err


# --------------------------------------------------------------------------- with llama.cpp


@needs_llama_cpp
def test_llama_cpp_scores_the_f32_export_as_torch_scores_its_source(exported):
    corpus = str(exported["corpus"])
    reference = api.evaluate_model(str(exported["folder"]), corpus, LANGS, "all", SEQ_LEN, MAX_TOKENS)
    result = api.evaluate_model(str(exported["gguf"]), corpus, LANGS, "all", SEQ_LEN, MAX_TOKENS, runtime="llama.cpp")
    for ours, theirs in zip(result.scores, reference.scores):
        assert (ours.n_windows, ours.n_tokens, ours.n_bytes) == (theirs.n_windows, theirs.n_tokens, theirs.n_bytes)
        change = abs(ours.bits_per_byte - theirs.bits_per_byte) / theirs.bits_per_byte
        print(f"\n{ours.language}: torch {theirs.bits_per_byte:.6f}, llama.cpp {ours.bits_per_byte:.6f} bits/byte, "
              f"relative difference {change:.1e}")
        assert change < F32_AGREEMENT
        np.testing.assert_allclose(ours.window_nll, theirs.window_nll, rtol=F32_AGREEMENT)
    assert result.model.gguf.llama_cpp_python == importlib.import_module("llama_cpp").__version__


@needs_llama_cpp
def test_bench_speed_times_a_gguf_file_in_llama_cpp(exported, monkeypatch, capsys, tmp_path):
    out = tmp_path / "speed.json"
    code, printed, err = run_cli(monkeypatch, capsys, "bench-speed", str(exported["gguf"]), "--seq-len", "32",
                                 "--prompt-tokens", "8", "--new-tokens", "8", "--runs", "3", "--warmup", "1",
                                 "--threads", "1", "--json", str(out))
    assert code == 0, err
    assert "prompt tok/s" in printed
    assert is_speed_reports_file(out)
    (report,) = json.loads(out.read_text())
    assert report["runtime"] == "llama.cpp" and report["file_type"] == "F32" and report["threads"] == 1
    assert len(report["samples_ms"]["prompt"]) == 3 and len(report["samples_ms"]["generate"]) == 3
    assert report["prompt_tokens_per_s"] > 0 and report["generate_tokens_per_s"] > 0



def test_gguf_segment_scores_feed_llama_cpp_the_windows_torch_scores(exported, fake_llama_cpp):
    """shrink's GGUF scores: one window per segment, the same token ids as `segment_scores` of the source folder."""
    from babelprune.evaluate.windows import make_windows

    corpus = api.get_corpus(str(exported["corpus"]))
    loaded = load_model(str(exported["folder"]))
    scores = api.gguf_segment_scores(exported["gguf"], exported["folder"], corpus, LANGS, 3, SEQ_LEN)
    expected = [w.ids for lang in LANGS for text in corpus.texts(lang, "all")[:3]
                for w in make_windows(loaded.tokenizer, [text], SEQ_LEN)]
    assert FakeRuntime.fed == expected
    torch_scores = api.segment_scores(loaded, corpus, LANGS, 3, SEQ_LEN)
    for ours, theirs in zip(scores, torch_scores):  # the same windows, item by item: the intervals pair
        assert (ours.language, ours.n_windows, ours.n_tokens, ours.window_bytes) == \
               (theirs.language, theirs.n_windows, theirs.n_tokens, theirs.window_bytes)


@needs_llama_cpp
def test_gguf_segment_scores_of_the_f32_export_match_torchs_segment_scores(exported):
    corpus = api.get_corpus(str(exported["corpus"]))
    ours = api.gguf_segment_scores(exported["gguf"], exported["folder"], corpus, LANGS, 3, SEQ_LEN)
    theirs = api.segment_scores(load_model(str(exported["folder"])), corpus, LANGS, 3, SEQ_LEN)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.window_nll, reference.window_nll, rtol=F32_AGREEMENT)
