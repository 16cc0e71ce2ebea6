"""FilesCorpus on hand-written fixtures: paragraphs, JSONL, groups, splits and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelprune.data.files import FilesCorpus, block_size, split_paragraphs
from babelprune.errors import BabelpruneError

FIXTURES = Path(__file__).parent / "fixtures"


def test_split_paragraphs_on_blank_lines_joins_wrapped_lines() -> None:
    text = "one\ntwo\n\n  \nthree\n\n\n\nfour  five\n"
    assert split_paragraphs(text) == ["one two", "three", "four five"]


def test_split_paragraphs_falls_back_to_lines() -> None:
    assert split_paragraphs("a\r\nb\nc") == ["a", "b", "c"]
    assert split_paragraphs("x\ny\n") == ["x", "y"]


def test_block_size_shrinks_for_small_corpora() -> None:
    assert block_size(6) == 1
    assert block_size(59) == 2
    assert block_size(1000) == 10


def test_folder_reads_one_language_per_txt_file() -> None:
    corpus = FilesCorpus(FIXTURES / "files_folder")
    assert corpus.languages() == ["en", "fr"]  # README.md is not a language
    texts = corpus.texts("en")
    assert len(texts) == 6
    assert texts[0] == "First paragraph of English, still the first paragraph."
    assert texts[3] == "Fourth paragraph."
    assert [s.key for s in corpus.segments("fr")] == ["0", "1", "2", "3", "4", "5"]
    # 6 segments -> blocks of one segment each.
    assert [s.group for s in corpus.segments("fr")] == [f"block {i}" for i in range(6)]


def test_folder_splits_are_disjoint_non_empty_and_aligned() -> None:
    corpus = FilesCorpus(FIXTURES / "files_folder")
    for lang in corpus.languages():
        calib = {s.key for s in corpus.segments(lang, "calib")}
        evaluation = {s.key for s in corpus.segments(lang, "eval")}
        assert calib and evaluation
        assert not calib & evaluation
        assert calib | evaluation == {s.key for s in corpus.segments(lang)}
    assert {s.key for s in corpus.segments("en", "eval")} == {s.key for s in corpus.segments("fr", "eval")}


def test_jsonl_keeps_ids_groups_and_skips_blank_text() -> None:
    corpus = FilesCorpus(FIXTURES / "tiny.jsonl")
    assert corpus.languages() == ["en", "fr"]
    segments = corpus.segments("en")
    assert [s.key for s in segments] == ["a", "b", "c"]
    assert [s.group for s in segments] == ["block 0", "block 1", "farewells"]
    assert segments[2].text == "See you tomorrow."
    assert corpus.texts("fr") == ["Bonjour.", "Merci beaucoup.", "À demain."]


def test_jsonl_without_ids_keys_by_position(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"lang": "de", "text": "Eins."}\n{"lang": "de", "text": "Zwei."}\n', encoding="utf-8")
    assert [(s.key, s.text) for s in FilesCorpus(path).segments("de")] == [("0", "Eins."), ("1", "Zwei.")]


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BabelpruneError, match="does not exist"):
        FilesCorpus(tmp_path / "nope")


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BabelpruneError, match="no <lang>.txt files"):
        FilesCorpus(tmp_path)


def test_folder_of_blank_files_has_no_text(tmp_path: Path) -> None:
    (tmp_path / "en.txt").write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(BabelpruneError, match="holds no text"):
        FilesCorpus(tmp_path)


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "fr.txt").write_bytes("déjà vu".encode("latin-1"))
    with pytest.raises(BabelpruneError, match=r"fr\.txt is not valid UTF-8"):
        FilesCorpus(tmp_path)


def test_bad_json_line_gives_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"lang": "en", "text": "ok"}\n\n{"lang": "en", "text": \n', encoding="utf-8")
    with pytest.raises(BabelpruneError, match="line 3 is not valid JSON"):
        FilesCorpus(path)


def test_jsonl_line_without_lang_or_text(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "no language"}\n', encoding="utf-8")
    with pytest.raises(BabelpruneError, match='line 1 has no "lang"'):
        FilesCorpus(path)
    path.write_text('{"lang": "en", "text": "ok"}\n{"lang": "en", "text": 3}\n', encoding="utf-8")
    with pytest.raises(BabelpruneError, match='line 2 has no "text"'):
        FilesCorpus(path)


def test_jsonl_repeated_id_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text('{"lang": "en", "id": 1, "text": "a"}\n{"lang": "en", "id": 1, "text": "b"}\n', encoding="utf-8")
    with pytest.raises(BabelpruneError, match="line 2 repeats id '1'"):
        FilesCorpus(path)


def test_other_file_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("lang,text\n", encoding="utf-8")
    with pytest.raises(BabelpruneError, match="not a .jsonl file"):
        FilesCorpus(path)


def test_unknown_language_names_the_available_ones() -> None:
    corpus = FilesCorpus(FIXTURES / "tiny.jsonl")
    with pytest.raises(BabelpruneError, match="has no language 'de'; it has: en, fr"):
        corpus.segments("de")
