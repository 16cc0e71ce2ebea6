"""get_corpus: built-in names, paths, hf: specs and unknown specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelprune.data.files import FilesCorpus
from babelprune.data.hf import HFDatasetCorpus
from babelprune.data.registry import corpus_names, get_corpus
from babelprune.errors import BabelpruneError

FIXTURES = Path(__file__).parent / "fixtures"


def test_corpus_names() -> None:
    assert corpus_names() == ["bible", "udhr"]


def test_paths_become_files_corpora() -> None:
    assert isinstance(get_corpus(str(FIXTURES / "files_folder")), FilesCorpus)
    jsonl = get_corpus(str(FIXTURES / "tiny.jsonl"))
    assert isinstance(jsonl, FilesCorpus)
    assert jsonl.languages() == ["en", "fr"]


def test_hf_spec() -> None:
    corpus = get_corpus(f"hf:{FIXTURES / 'hf_tiny'}")
    assert isinstance(corpus, HFDatasetCorpus)
    assert corpus.languages() == ["en", "fr", "zh-Hant"]


def test_empty_hf_spec() -> None:
    with pytest.raises(BabelpruneError, match="Give a dataset after 'hf:'"):
        get_corpus("hf:")


def test_udhr_spec_without_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    with pytest.raises(BabelpruneError, match="not in the cache"):
        get_corpus("udhr")


def test_unknown_spec_lists_forms() -> None:
    with pytest.raises(BabelpruneError) as info:
        get_corpus("wikipedia")
    message = str(info.value)
    assert message.startswith("Unknown corpus 'wikipedia'")
    assert "bible, udhr" in message
    assert ".jsonl" in message and "hf:<dataset>" in message


def test_script_is_read_off_the_text():
    from babelprune.data.languages import guess_script

    assert guess_script("Kuyay wasi") == "Latn"
    assert guess_script("Все люди рождаются свободными, 1948") == "Cyrl"
    assert guess_script("ሁሉም ሰዎች") == "Ethi"
    assert guess_script("12 34 !") is None
