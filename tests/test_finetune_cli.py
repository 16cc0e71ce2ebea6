"""`babelprune finetune` and `finetune-sweep` on a tiny model: the schedule fits any run, choices are real choices."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertModel

from tests.tiny_models import tiny_config
from tests.tiny_tokenizer import char_tokenizer
from tests.cli_runner import run_cli

# A small slice of the real bible-genre task: 2 training verses per genre (14), 4 test verses, 2 languages.
TASK = ["--task", "bible-genre", "--task-option", "languages=en,sw", "--task-option", "max_per_label=2",
        "--task-option", "max_eval=4", "--max-eval", "4", "--perturbations", "chars"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    """A tiny random BERT with room for the CLI's 128-token inputs (Bible verses are long in characters)."""
    folder = tmp_path_factory.mktemp("tiny-bert-128")
    config = tiny_config("bert")
    config.max_position_embeddings = 128
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(
    ("length", "steps", "schedule"),
    [
        # One epoch of 14 verses in batches of 4 = 4 steps: start round(0.4) = 0, end round(2.8) = 3.
        ([], 4, (0, 3, 1)),
        # --max-steps 6: start round(0.6) = 1, end round(4.2) = 4.
        (["--max-steps", "6"], 6, (1, 4, 1)),
    ],
    ids=["epochs", "max-steps"],
)
def test_the_tour_command_fits_the_schedule_to_the_run(monkeypatch, capsys, tmp_path, tiny_folder, length, steps, schedule):
    out = tmp_path / "ft-70"
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--model", tiny_folder, *TASK, "--batch-size", "4",
                           "--gmp-final", "0.7", *length, "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == steps and result["sparsity"] == 0.7
    assert (result["gmp"]["start_step"], result["gmp"]["end_step"], result["gmp"]["interval"]) == schedule


def test_schedule_options_set_the_shares(monkeypatch, capsys, tmp_path, tiny_folder):
    out = tmp_path / "ft"
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--model", tiny_folder, *TASK, "--batch-size", "4",
                           "--max-steps", "10", "--gmp-final", "0.5", "--gmp-start", "0.2", "--gmp-end", "0.6",
                           "--gmp-interval", "3", "--gmp-scope", "global", "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert (result["gmp"]["start_step"], result["gmp"]["end_step"], result["gmp"]["interval"]) == (2, 6, 3)
    assert result["gmp"]["scope"] == "global"
    assert (result["config"]["gmp"]["start"], result["config"]["gmp"]["end"]) == (0.2, 0.6)


@pytest.mark.parametrize("command", ["finetune", "finetune-sweep"])
def test_a_schedule_ending_before_it_starts_is_one_line(monkeypatch, capsys, tmp_path, tiny_folder, command):
    out = tmp_path / "ft"
    code, _, err = run_cli(monkeypatch, capsys, command, "--model", tiny_folder, *TASK, "--gmp-start", "0.8",
                           "--gmp-end", "0.5", "--out", str(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert "starts at 0.8 of the run but ends at 0.5" in lines[0] and "--gmp-start" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("command", ["finetune", "finetune-sweep"])
def test_help_lists_the_modes_and_scopes(monkeypatch, capsys, command):
    monkeypatch.setenv("COLUMNS", "400")  # wide enough that no value is wrapped
    code, out, _ = run_cli(monkeypatch, capsys, command, "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "zero-shot|multilingual|monolingual" in text and "per-layer|global" in text
    assert "--gmp-start" in text and "--gmp-end" in text and "--gmp-interval" in text


def test_the_sweep_writes_its_experiment_store_and_report_and_skips_done_runs(monkeypatch, capsys, tmp_path, tiny_folder):
    from babelprune.sweep.store import ResultsStore

    out = tmp_path / "sweep"
    args = ["finetune-sweep", "--model", tiny_folder, *TASK, "--batch-size", "4", "--max-steps", "2",
            "--sparsities", "0,0.5", "--seeds", "0", "--out", str(out)]
    code, printed, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    # The work folder of the runs' checkpoints may stay behind, empty.
    assert {p.name for p in out.iterdir()} - {"results-work"} == {"experiment.yaml", "report", "results.sqlite"}
    with ResultsStore(out / "results.sqlite", create=False) as store:
        assert sorted((r.finetune.sparsity, r.finetune.seed) for r in store.records(state="done")) == [(0.0, 0), (0.5, 0)]
    report = out / "report" / "index.html"
    assert report.is_file()
    assert "2 runs: 2 done now, 0 done before, 0 failed; results in" in " ".join(printed.split())
    assert "report written to" in printed
    code, printed, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "2 runs: 0 done now, 2 done before, 0 failed" in " ".join(printed.split())
