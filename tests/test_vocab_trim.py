"""Vocabulary trimming on tiny trained tokenizers (BPE with byte fallback, XLM-R unigram) and tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

import babelprune
from babelprune.data.files import FilesCorpus
from babelprune.errors import BabelpruneError
from babelprune.models.base import LoadedModel
from babelprune.models.inspect import block_sparsity
from babelprune.prune.vocab import tokenizer_json
from tests.cli_runner import run_cli
from tests.tiny_subword import TEXTS, tiny_bpe, tiny_model_for, tiny_unigram

KEPT_LANGUAGES = ["en", "fr"]
OTHER_LANGUAGES = ["sw", "ru", "el"]


@pytest.fixture
def corpus_file(tmp_path):
    """TEXTS as a JSONL corpus, each sentence its own group, so both splits get text."""
    path = tmp_path / "tiny.jsonl"
    lines = [json.dumps({"lang": lang, "text": text, "group": f"{lang}-{i}-{copy}"})
             for lang, texts in TEXTS.items() for i, text in enumerate(texts) for copy in range(5)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def loaded_tiny(family: str, tokenizer, seed: int = 0) -> LoadedModel:
    model = tiny_model_for(family, tokenizer, seed)
    kind = "encoder" if family == "bert" else "causal-lm"
    return LoadedModel(model=model, tokenizer=tokenizer, spec=f"tiny-{family}", path=None, kind=kind)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def trimmed(family: str, tokenizer_factory, corpus_file, **options):
    original = tokenizer_factory()
    loaded = loaded_tiny(family, tokenizer_factory())
    reference = tiny_model_for(family, original)  # same seed: the same weights, untouched
    trim = babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), KEPT_LANGUAGES, split="all", **options)
    return original, reference, loaded, trim


# ----- BPE with byte fallback (gemma3-270m's kind) ----------------------------------


def test_bpe_kept_language_text_keeps_its_pieces(corpus_file):
    original, _, loaded, trim = trimmed("gemma3", tiny_bpe, corpus_file)
    assert len(trim.kept_ids) < len(original)
    for lang in KEPT_LANGUAGES:
        for text in TEXTS[lang]:
            new = ids(loaded.tokenizer, text)
            assert [trim.kept_ids[i] for i in new] == ids(original, text)
            assert loaded.tokenizer.convert_ids_to_tokens(new) == original.convert_ids_to_tokens(ids(original, text))


@pytest.mark.parametrize("text", [*(t for lang in OTHER_LANGUAGES for t in TEXTS[lang]), "日本語 🙂 ©", "x\n\ty  z"])
def test_bpe_text_needing_removed_pieces_round_trips_without_unknown(corpus_file, text):
    original, _, loaded, trim = trimmed("gemma3", tiny_bpe, corpus_file)
    new = ids(loaded.tokenizer, text)
    assert loaded.tokenizer.decode(new) == text
    assert loaded.tokenizer.unk_token_id not in new
    assert max(new) < len(trim.kept_ids)


def test_bpe_keeps_specials_bytes_and_only_merges_over_kept_pieces(corpus_file):
    original, _, loaded, trim = trimmed("gemma3", tiny_bpe, corpus_file)
    kept_tokens = set(original.convert_ids_to_tokens(trim.kept_ids))
    assert {*original.all_special_tokens, "<start_of_turn>", "<unused0>"} <= kept_tokens
    assert {original.bos_token, original.eos_token, original.pad_token, original.unk_token} <= kept_tokens
    assert {f"<0x{b:02X}>" for b in range(256)} <= kept_tokens
    model = tokenizer_json(loaded.tokenizer)["model"]
    assert set(model["vocab"]) == kept_tokens - {t for t in kept_tokens if t not in original.get_vocab()}
    assert all(a in model["vocab"] and b in model["vocab"] and a + b in model["vocab"] for a, b in model["merges"])
    # Special tokens keep their meaning under the new ids.
    tokenizer = loaded.tokenizer
    assert [trim.kept_ids[i] for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)] == [2, 1, 0]
    assert loaded.model.config.pad_token_id == tokenizer.pad_token_id and loaded.model.config.bos_token_id == tokenizer.bos_token_id


def test_drop_reserved_removes_only_the_placeholders(corpus_file):
    original, _, _, trim = trimmed("gemma3", tiny_bpe, corpus_file, keep_reserved=False)
    kept_tokens = set(original.convert_ids_to_tokens(trim.kept_ids))
    assert "<unused0>" not in kept_tokens and "<unused1>" not in kept_tokens
    assert "<start_of_turn>" in kept_tokens


def test_min_count_drops_rare_tokens(tmp_path):
    """A word seen once is kept at --min-count 1 and dropped at 2; one seen twice stays."""
    path = tmp_path / "counts.jsonl"
    texts = ["x the", "x was", "x was"]  # segments are stripped: a word after a space
    path.write_text("\n".join(json.dumps({"lang": "fr", "text": t}) for t in texts) + "\n", encoding="utf-8")
    tokenizer = tiny_bpe()
    assert tokenizer.tokenize(" the was") == ["▁the", "▁was"]  # whole pieces
    kept = {}
    for min_count in (1, 2):
        loaded = loaded_tiny("gemma3", tiny_bpe())
        trim = babelprune.trim_vocabulary(loaded, FilesCorpus(path), ["fr"], split="all", min_count=min_count)
        kept[min_count] = set(tokenizer.convert_ids_to_tokens(trim.kept_ids))
    assert {"▁the", "▁was"} <= kept[1]
    assert "▁was" in kept[2] and "▁the" not in kept[2]


@pytest.mark.parametrize("family", ["gemma3", "llama"])  # tied and untied LM head
def test_trimmed_logits_are_the_original_logits_at_kept_ids(corpus_file, family):
    original, reference, loaded, trim = trimmed(family, tiny_bpe, corpus_file)
    assert reference.config.tie_word_embeddings == (family == "gemma3")
    text = TEXTS["fr"][0] + " " + TEXTS["en"][1]
    old = torch.tensor([[original.bos_token_id, *ids(original, text)]])
    new = torch.tensor([[loaded.tokenizer.bos_token_id, *ids(loaded.tokenizer, text)]])
    assert torch.equal(torch.tensor(trim.kept_ids)[new], old)
    with torch.no_grad():
        expected = reference(input_ids=old).logits[..., trim.kept_ids]
        got = loaded.model(input_ids=new).logits
    assert got.shape[-1] == len(trim.kept_ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_saved_folder_loads_without_babelprune_and_through_load_model(corpus_file, tmp_path):
    original, reference, loaded, trim = trimmed("gemma3", tiny_bpe, corpus_file)
    out = babelprune.save_trimmed(loaded, tmp_path / "trimmed")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    text = TEXTS["en"][0]
    new = torch.tensor([tokenizer(text)["input_ids"]])  # BOS added by the saved tokenizer
    old = torch.tensor([original(text)["input_ids"]])
    assert torch.equal(torch.tensor(trim.kept_ids)[new], old)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=new).logits, reference(input_ids=old).logits[..., trim.kept_ids])
    record = json.loads((out / "babelprune_vocabulary.json").read_text(encoding="utf-8"))
    assert record["kept_ids"] == trim.kept_ids and record["languages"] == KEPT_LANGUAGES
    again = babelprune.load_model(str(out))
    assert again.pruning["vocabulary"]["kept_ids"] == trim.kept_ids
    assert again.model.get_input_embeddings().weight.shape[0] == len(trim.kept_ids)


def test_trimming_twice_records_ids_of_the_original_vocabulary(corpus_file):
    original, _, loaded, first = trimmed("gemma3", tiny_bpe, corpus_file)
    first_tokens = loaded.tokenizer
    second = babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), ["en"], split="all")
    assert len(second.kept_ids) < len(first.kept_ids) and second.original_size == len(original)
    text = TEXTS["en"][2]
    assert [second.kept_ids[i] for i in ids(loaded.tokenizer, text)] == ids(original, text)
    assert first_tokens is not loaded.tokenizer


def test_prune_then_trim_keeps_the_zeros_and_the_pruning_record(corpus_file, tmp_path):
    loaded = loaded_tiny("gemma3", tiny_bpe())
    babelprune.prune(loaded, babelprune.PruneConfig(method="magnitude", sparsity=0.5), progress=False)
    sparsity = block_sparsity(loaded.model)
    babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), KEPT_LANGUAGES, split="all")
    again = babelprune.load_model(str(babelprune.save_trimmed(loaded, tmp_path / "pruned-trimmed")))
    assert block_sparsity(again.model) == pytest.approx(sparsity) and sparsity > 0.4
    assert again.pruning["method"] == "magnitude" and again.pruning["vocabulary"]["languages"] == KEPT_LANGUAGES


def test_a_structured_refit_model_with_added_biases_is_not_saved_trimmed(corpus_file, tmp_path):
    from babelprune.models.adapters import adapter_for
    from babelprune.models.layouts import add_output_bias, record_structure

    loaded = loaded_tiny("gemma3", tiny_bpe())
    adapter = adapter_for(loaded.model)
    down = adapter.ffn_linears(adapter.get_blocks(loaded.model)[0])["down"]
    add_output_bias(down, torch.ones(down.weight.shape[0]))  # what --refit leaves on a linear built without bias
    record_structure(loaded.model, adapter)
    babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), KEPT_LANGUAGES, split="all")
    with pytest.raises(BabelpruneError, match="would drop; trim the vocabulary first, then prune with --refit"):
        babelprune.save_trimmed(loaded, tmp_path / "trimmed")
    assert not (tmp_path / "trimmed").exists()


def test_trim_then_prune_saves_a_loadable_pruned_folder(corpus_file, tmp_path):
    loaded = loaded_tiny("gemma3", tiny_bpe())
    trim = babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), KEPT_LANGUAGES, split="all")
    outcome = babelprune.prune(loaded, babelprune.PruneConfig(method="magnitude", sparsity=0.5), progress=False)
    again = babelprune.load_model(str(babelprune.save_pruned(loaded, outcome, tmp_path / "trimmed-pruned")))
    assert again.model.get_input_embeddings().weight.shape[0] == len(trim.kept_ids)
    assert len(again.tokenizer) == len(trim.kept_ids)


# ----- unigram (e5-small's kind) ------------------------------------------------------


def test_unigram_kept_language_text_keeps_its_pieces_and_encoder_output(corpus_file):
    original, reference, loaded, trim = trimmed("bert", tiny_unigram, corpus_file)
    assert len(trim.kept_ids) < len(original)
    for text in TEXTS["en"] + TEXTS["fr"]:
        old, new = original(text)["input_ids"], loaded.tokenizer(text)["input_ids"]  # <s> ... </s> included
        assert [trim.kept_ids[i] for i in new] == old
        with torch.no_grad():
            expected = reference(input_ids=torch.tensor([old])).last_hidden_state
            got = loaded.model(input_ids=torch.tensor([new])).last_hidden_state
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("text", [t for lang in OTHER_LANGUAGES for t in TEXTS[lang]])
def test_unigram_other_scripts_segment_into_kept_pieces(corpus_file, text):
    original, _, loaded, _ = trimmed("bert", tiny_unigram, corpus_file)
    new = ids(loaded.tokenizer, text)
    assert loaded.tokenizer.unk_token_id not in new
    # The same text back as the original tokenizer gives (XLM-R normalises spaces, nothing else here).
    assert loaded.tokenizer.decode(new) == original.decode(ids(original, text)) == text


def test_unigram_saved_folder_loads_with_automodel(corpus_file, tmp_path):
    original, reference, loaded, trim = trimmed("bert", tiny_unigram, corpus_file)
    out = babelprune.save_trimmed(loaded, tmp_path / "e5-trimmed")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModel.from_pretrained(out).eval()
    text = TEXTS["fr"][1]
    assert [trim.kept_ids[i] for i in tokenizer(text)["input_ids"]] == original(text)["input_ids"]
    assert tokenizer.mask_token_id == trim.kept_ids.index(original.mask_token_id)
    assert model.get_input_embeddings().padding_idx == tokenizer.pad_token_id


# ----- bad input --------------------------------------------------------------------


def test_a_language_the_corpus_lacks_is_refused(corpus_file):
    loaded = loaded_tiny("gemma3", tiny_bpe())
    rows = loaded.model.get_input_embeddings().weight.shape[0]
    with pytest.raises(BabelpruneError, match="has no language 'de'"):
        babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), ["en", "de"])
    assert loaded.model.get_input_embeddings().weight.shape[0] == rows  # untouched


def test_a_special_token_the_model_has_no_row_for_is_refused(corpus_file):
    tokenizer = tiny_bpe()
    model = tiny_model_for("gemma3", tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<extra_special>"]})  # id len(model rows)
    loaded = LoadedModel(model=model, tokenizer=tokenizer, spec="tiny", path=None, kind="causal-lm")
    with pytest.raises(BabelpruneError, match="would lose it") as error:
        babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), KEPT_LANGUAGES, split="all")
    assert "'<extra_special>'" in str(error.value) and str(error.value).count(". ") == 0


def test_min_count_below_one_is_refused(corpus_file):
    loaded = loaded_tiny("gemma3", tiny_bpe())
    with pytest.raises(BabelpruneError, match="--min-count must be at least 1"):
        babelprune.trim_vocabulary(loaded, FilesCorpus(corpus_file), KEPT_LANGUAGES, min_count=0)


# ----- command line ---------------------------------------------------------------------


@pytest.fixture
def tiny_folder(tmp_path):
    tokenizer = tiny_bpe()
    folder = tmp_path / "tiny-gemma"
    tiny_model_for("gemma3", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_trims_with_extra_text(monkeypatch, capsys, tiny_folder, corpus_file, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("Οὗτος ἦλθεν εἰς μαρτυρίαν.\n", encoding="utf-8")
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", str(tiny_folder), "--langs", "en,fr",
                                 "--corpus", str(corpus_file), "--extra", str(extra), "--out", str(out))
    assert code == 0, err
    record = json.loads((out / "babelprune_vocabulary.json").read_text(encoding="utf-8"))
    original = AutoTokenizer.from_pretrained(tiny_folder)
    kept = set(record["kept_ids"])
    assert set(ids(original, "Οὗτος ἦλθεν εἰς μαρτυρίαν.")) <= kept  # the extra text's pieces were kept
    assert record["languages"] == ["en", "fr"] and record["split"] == "calib"
    assert f"{len(kept):,}" in printed


def test_cli_unknown_language_is_one_line_and_writes_nothing(monkeypatch, capsys, tiny_folder, corpus_file, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", str(tiny_folder), "--langs", "en,xx",
                           "--corpus", str(corpus_file), "--out", str(out))
    assert code == 2 and "has no language 'xx'" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_cli_missing_extra_file_is_refused(monkeypatch, capsys, tiny_folder, corpus_file, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", str(tiny_folder), "--corpus", str(corpus_file),
                           "--langs", "en", "--extra", str(tmp_path / "nothing.txt"), "--out", str(out))
    assert code == 2 and "nothing.txt" in err
    assert not out.exists()
