"""`babelprune prune` with --reconstruct, --language-weights and --language-budget, on a tiny model folder."""

import json

import pytest

from tests.cli_runner import run_cli
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

CORPUS = "tests/fixtures/tiny.jsonl"
SMALL = ["--calib", CORPUS, "--calib-langs", "en,fr", "--seq-len", "4", "--format", "hf"]


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = char_tokenizer()
    tiny_model("llama").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _metadata(folder) -> dict:
    return json.loads((folder / "babelprune_pruning.json").read_text())


def test_weights_for_a_language_outside_the_calibration_end_in_one_sentence_and_write_nothing(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    out = tmp_path / "pruned"
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(out), *SMALL,
                           "--samples", "1", "--language-weights", "sw=2")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "'sw'" not in lines[0] and "sw, which the calibration does not have" in lines[0]
    assert not out.exists()


def test_a_reconstructed_budget_run_records_its_rounds_and_refit(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(out), *SMALL,
                                "--samples", "2", "--reconstruct", "--language-budget", "minimax", "--budget-rounds", "2",
                                "--holdout-samples", "1")
    assert code == 0, err
    assert "language budget" in stdout and "refit lowered the mean layer error" in stdout
    meta = _metadata(out)
    assert len(meta["language_budget"]["rounds"]) == 2
    assert meta["config"]["reconstruct"]["solver"] == "pcg"
    # --samples windows prune; the held-out ones are drawn on top of them, from the text after them.
    assert meta["calibration"]["samples_per_language"] == {"en": 2, "fr": 2}
    assert meta["language_budget"]["holdout"]["samples_per_language"] == {"en": 1, "fr": 1}
