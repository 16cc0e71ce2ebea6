"""--keep-script-rank: the script classifier, the rank cut, the trim it changes and its refusals."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

import babelprune
from babelprune.api import TrimConfig, language_scripts
from babelprune.data.files import FilesCorpus
from babelprune.data.languages import unicode_scripts
from babelprune.errors import BabelpruneError
from babelprune.prune.vocab import piece_script, ranked_piece_ids, script_rank_ids
from tests.cli_runner import run_cli
from tests.test_vocab_trim import corpus_file, ids, loaded_tiny, tiny_folder  # noqa: F401 (fixtures)
from tests.tiny_subword import TEXTS, tiny_bpe

CANDIDATES = ["Latin", "Cyrillic", "Han", "Arabic", "Devanagari"]


@pytest.mark.parametrize("piece, script", [
    ("▁the", "Latin"), ("ténèbres", "Latin"), ("▁Слово", "Cyrillic"), ("中国", "Han"), ("▁人。", "Han"),
    ("▁الله", "Arabic"), ("بِسْمِ", "Arabic"),  # Arabic vowel signs are Inherited, not Arabic
    ("नमस्ते", "Devanagari"), ("▁भारत।", "Devanagari"),  # the danda is Common
    ("2024", "Common"), ("▁", "Common"), ("...", "Common"), ("▁(", "Common"),
    ("ab中", None), ("▁Москваw", None),  # mixed scripts
    ("λόγος", None),  # Greek is not among the candidates
])
def test_piece_script(piece, script):
    assert piece_script(piece, CANDIDATES) == script


def bpe_spec(vocab: list[str], added: dict[int, str]) -> dict:
    """A minimal BPE tokenizer serialisation: ids in list order, `added` ids marked as added tokens."""
    return {"model": {"type": "BPE", "vocab": {piece: i for i, piece in enumerate(vocab)}, "merges": []},
            "added_tokens": [{"id": i, "content": content} for i, content in added.items()]}


SPEC = bpe_spec(["<pad>", "<0x41>", "▁the", "▁дом", "12", "▁el", "中", "▁le", "a", "б", "▁"],
                {0: "<pad>", 1: "<0x41>"})


def test_ranked_pieces_leave_out_added_tokens_and_bytes():
    assert ranked_piece_ids(SPEC) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_unigram_pieces_rank_by_score():
    spec = {"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["a", -5.0], ["▁b", -1.0], ["c", -3.0]]},
            "added_tokens": [{"id": 0, "content": "<unk>"}]}
    assert ranked_piece_ids(spec) == [2, 3, 1]


def test_rank_cut_keeps_the_scripts_pieces_above_it_and_every_letter():
    # Ranks: ▁the 1, ▁дом 2, 12 3, ▁el 4, 中 5, ▁le 6, a 7, б 8, ▁ 9.
    assert script_rank_ids(SPEC, ["Latin"], 3) == {2, 4, 8}  # ▁the, 12 (shared), and the letter a at any rank
    assert script_rank_ids(SPEC, ["Latin"], 6) == {2, 4, 5, 7, 8}
    assert script_rank_ids(SPEC, ["Latin"], 100) == {2, 4, 5, 7, 8, 10}  # the bare space marker is shared, rank 9
    assert script_rank_ids(SPEC, ["Cyrillic", "Han"], 2) == {3, 6, 9}  # ▁дом by rank, 中 and б as letters


@pytest.mark.parametrize("rank", [0, -1, -100])
def test_a_rank_below_one_is_refused(rank):
    with pytest.raises(BabelpruneError, match="--keep-script-rank must be at least 1"):
        script_rank_ids(SPEC, ["Latin"], rank)
    with pytest.raises(BabelpruneError, match="--keep-script-rank must be at least 1"):
        TrimConfig(keep_script_rank=rank)


def test_languages_map_to_unicode_scripts_and_an_unknown_script_is_refused():
    assert language_scripts(["en", "fr", "ru", "zh", "ar", "hi", "sw"]) == ["Latin", "Cyrillic", "Han", "Arabic", "Devanagari"]
    assert unicode_scripts("ja") == ("Han", "Hiragana", "Katakana")
    with pytest.raises(BabelpruneError) as refused:
        language_scripts(["en", "xx"])
    message = str(refused.value)
    assert "'xx'" in message and "\n" not in message


def test_keep_script_rank_keeps_pieces_of_an_unseen_language_in_a_kept_script(corpus_file):  # noqa: F811
    original = tiny_bpe()
    swahili = " ".join(TEXTS["sw"])  # Latin script, never in the trim text (en, fr)
    plain = loaded_tiny("gemma3", tiny_bpe())
    babelprune.trim_vocabulary(plain, FilesCorpus(corpus_file), ["en", "fr"], split="all")
    ruled = loaded_tiny("gemma3", tiny_bpe())
    trim = babelprune.trim_vocabulary(ruled, FilesCorpus(corpus_file), ["en", "fr"], split="all", keep_script_rank=10**6)
    before = [original.convert_ids_to_tokens(i) for i in ids(original, swahili)]
    assert [plain.tokenizer.convert_ids_to_tokens(i) for i in ids(plain.tokenizer, swahili)] != before
    assert [ruled.tokenizer.convert_ids_to_tokens(i) for i in ids(ruled.tokenizer, swahili)] == before
    russian = " ".join(TEXTS["ru"])  # another script: not kept by the rule
    assert [ruled.tokenizer.convert_ids_to_tokens(i) for i in ids(ruled.tokenizer, russian)] != \
        [original.convert_ids_to_tokens(i) for i in ids(original, russian)]
    record = ruled.pruning["vocabulary"]
    assert record["keep_script_rank"] == 10**6 and record["scripts"] == ["Latin"]
    assert record["rule_tokens"] == trim.rule_ids > 0
    assert record["kept_tokens"] == record["seen_tokens"] + record["required_tokens"] + record["rule_tokens"]
    assert "keep_script_rank" not in plain.pruning["vocabulary"]  # without the option the record is as before


def test_cli_keep_script_rank_is_recorded(monkeypatch, capsys, tiny_folder, corpus_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", str(tiny_folder), "--langs", "en,ru",
                                 "--corpus", str(corpus_file), "--keep-script-rank", "50", "--out", str(out))
    assert code == 0, err
    record = json.loads((out / "babelprune_vocabulary.json").read_text(encoding="utf-8"))
    assert record["keep_script_rank"] == 50 and record["scripts"] == ["Latin", "Cyrillic"]
    assert "--keep-script-rank 50 (Latin, Cyrillic)" in printed
    original = AutoTokenizer.from_pretrained(tiny_folder)
    kept = set(record["kept_ids"])
    assert set(ids(original, " ".join(TEXTS["ru"]))) <= kept  # Cyrillic: the rule covers what the text did not use
    assert not set(ids(original, " ".join(TEXTS["el"]))) <= kept  # Greek: neither kept language writes it


def test_cli_refuses_a_negative_rank(monkeypatch, capsys, tiny_folder, corpus_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", str(tiny_folder), "--langs", "en",
                           "--corpus", str(corpus_file), "--keep-script-rank", "-3", "--out", str(out))
    assert code == 2 and "--keep-script-rank" in err and "equal to 1" in err
    assert not out.exists()
