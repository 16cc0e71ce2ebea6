"""--keep-common: pieces of the kept languages' most common words, each language weighted equally."""

from __future__ import annotations

import json

import pytest

import babelprune
from babelprune.data.files import FilesCorpus
from babelprune.errors import BabelpruneError
from babelprune.prune.vocab import common_word_ids, word_piece_shares
from tests.cli_runner import run_cli
from tests.test_vocab_trim import corpus_file, ids, loaded_tiny, tiny_folder  # noqa: F401 (fixtures)
from tests.tiny_subword import tiny_bpe
from tests.tiny_tokenizer import char_tokenizer

wordfreq = pytest.importorskip("wordfreq", reason="pip install 'babelprune[words]'")

# char_tokenizer ids: specials 0-3, then a=4, b=5, " "=6, A=7, B=8
CHARS = "ab AB"


def test_shares_of_an_unspaced_language_count_each_word_as_written():
    shares = word_piece_shares(char_tokenizer(CHARS), {"ab": 0.75, "b": 0.25}, unspaced=True)
    # a: 0.75; b: 0.75 + 0.25 = 1.0; of 1.75 in all
    assert shares == pytest.approx({4: 0.75 / 1.75, 5: 1.0 / 1.75})


def test_shares_of_a_spaced_language_weigh_the_forms_a_word_takes():
    shares = word_piece_shares(char_tokenizer(CHARS), {"ab": 1.0}, unspaced=False)
    # " ab" 0.6, " Ab" 0.2, "ab" 0.1, "Ab" 0.1: space 0.8, a 0.7, b 1.0, A 0.3, of 2.8 in all
    assert shares == pytest.approx({6: 0.8 / 2.8, 4: 0.7 / 2.8, 5: 1.0 / 2.8, 7: 0.3 / 2.8})


def test_languages_weigh_equally_and_pieces_already_kept_are_passed_over():
    lists = {"x": {"aa": 1.0}, "y": {"bb": 1.0, "ab": 1.0}}
    scripts = {"x": ("Han",), "y": ("Han",)}  # unspaced: the words as written
    # a: (1 + 1/4) / 2 = 0.625, b: (0 + 3/4) / 2 = 0.375, although y alone uses b three times as often as a
    assert common_word_ids(char_tokenizer(CHARS), lists, scripts, 1, already=set()) == {4}
    assert common_word_ids(char_tokenizer(CHARS), lists, scripts, 1, already={4}) == {5}
    assert common_word_ids(char_tokenizer(CHARS), lists, scripts, 5, already=set()) == {4, 5}


def test_a_count_below_one_is_refused():
    with pytest.raises(BabelpruneError, match="--keep-common must be at least 1"):
        common_word_ids(char_tokenizer(CHARS), {"x": {"a": 1.0}}, {}, 0, already=set())


def test_keep_common_keeps_the_pieces_of_common_words_the_text_never_used(corpus_file):  # noqa: F811
    original = tiny_bpe()
    unseen = "Il y a des gens qui sont dans la maison, mais nous ne savons pas pourquoi."
    plain = loaded_tiny("gemma3", tiny_bpe())
    babelprune.trim_vocabulary(plain, FilesCorpus(corpus_file), ["fr"], split="all")
    ruled = loaded_tiny("gemma3", tiny_bpe())
    trim = babelprune.trim_vocabulary(ruled, FilesCorpus(corpus_file), ["fr"], split="all", keep_common=10**6)
    before = [original.convert_ids_to_tokens(i) for i in ids(original, unseen)]
    assert [plain.tokenizer.convert_ids_to_tokens(i) for i in ids(plain.tokenizer, unseen)] != before
    assert [ruled.tokenizer.convert_ids_to_tokens(i) for i in ids(ruled.tokenizer, unseen)] == before
    record = ruled.pruning["vocabulary"]
    assert record["keep_common"] == 10**6 and record["no_word_list"] == []
    assert record["rule_tokens"] == trim.rule_ids > 0
    assert record["kept_tokens"] == record["seen_tokens"] + record["required_tokens"] + record["rule_tokens"]


def test_cli_says_which_languages_have_no_word_list(monkeypatch, capsys, tiny_folder, corpus_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", str(tiny_folder), "--langs", "en,sw",
                                 "--corpus", str(corpus_file), "--keep-common", "20", "--out", str(out))
    assert code == 0, err
    record = json.loads((out / "babelprune_vocabulary.json").read_text(encoding="utf-8"))
    assert record["keep_common"] == 20 and record["no_word_list"] == ["sw"]
    assert "--keep-common 20" in printed and "no word list for sw" in printed


def test_cli_refuses_keep_common_when_no_language_has_a_word_list(monkeypatch, capsys, tiny_folder, corpus_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", str(tiny_folder), "--langs", "sw",
                           "--corpus", str(corpus_file), "--keep-common", "20", "--out", str(out))
    assert code != 0 and "no word frequency list for any of sw" in err
    assert not out.exists()
