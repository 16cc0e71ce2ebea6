"""Bad input on the command line: one sentence on stderr, exit status 2, nothing written."""

import json
import sys

import pytest

from babelprune import cli
from tests.cli_runner import run_cli


def test_unknown_model_lists_the_aliases(monkeypatch, capsys, tmp_path):
    out = tmp_path / "r.json"
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", "gemma9", "--corpus", "tests/fixtures/tiny.jsonl", "--out", str(out))
    assert code == 2
    assert "Unknown model 'gemma9'" in err
    assert all(alias in err for alias in ("gemma3-270m", "smollm2-135m", "e5-small"))
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_model_folder_is_named(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", str(tmp_path / "nowhere"), "--corpus", "tests/fixtures/tiny.jsonl")
    assert code == 2 and "nowhere" in err


def test_unknown_language_lists_what_the_corpus_has(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", "gemma3-270m", "--corpus", "tests/fixtures/tiny.jsonl", "--langs", "xx")
    assert code == 2
    assert "'xx'" in err and "it has:" in err


def test_unknown_corpus_is_refused(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "data", "list", "no-such-corpus")
    assert code == 2 and "no-such-corpus" in err


def test_fetch_of_an_unknown_corpus(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "data", "fetch", "bible")
    assert code == 2 and "only 'udhr'" in err


def test_data_list_prints_languages(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["babelprune", "data", "list", "tests/fixtures/tiny.jsonl"])
    cli.main()
    out = capsys.readouterr().out
    fixture_langs = {json.loads(line)["lang"] for line in open("tests/fixtures/tiny.jsonl", encoding="utf-8") if line.strip()}
    for lang in fixture_langs:
        assert lang in out
