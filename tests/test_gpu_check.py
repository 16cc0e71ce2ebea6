"""benchmarks/gpu_check.py --tiny runs end to end on the CPU and writes every section of its table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.tiny_models import TINY_FAMILIES

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402

SECTIONS = ("## 1. Agreement with the CPU", "## 2. Scale: blocks onloaded one at a time", "## 3. 2:4 semi-structured speed")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row of the markdown `text` (header and separator lines included)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("results")
    path = gpu_check.main(["--tiny", "--out", str(out)])
    assert path == out / "gpu_check.md"
    return path.read_text(encoding="utf-8")


def test_every_section_is_written(tiny_table):
    for section in SECTIONS:
        assert section in tiny_table


def test_every_tiny_family_agrees_with_itself_on_the_cpu(tiny_table):
    if torch.cuda.is_available():
        pytest.skip("with a GPU the comparison is cpu vs cuda, checked by the table's verdicts")
    rows = [row for row in table_rows(tiny_table) if len(row) == 8 and row[2] == "cpu vs cpu"]
    methods = {(row[0], row[1]) for row in rows}
    for family in TINY_FAMILIES:
        assert {(family, m) for m in ("wanda", "mwanda", "sparsegpt", "recommended", "wanda, onloaded")} <= methods, family
    for model, method, _, entries, differ, beyond, error, verdict in rows:
        if method in ("wanda", "mwanda", "wanda, onloaded"):
            assert int(entries) > 0 and (differ, beyond) == ("0", "0"), (model, method)
        else:
            assert float(error) == 0.0, (model, method)  # the same code on the same device: the same weights
        assert verdict == "ok"


def test_the_scale_rows_are_measured_and_the_sparse_section_says_why_it_is_skipped(tiny_table):
    scale = tiny_table.split(SECTIONS[1])[1].split(SECTIONS[2])[0]
    runs = {row[0]: row for row in table_rows(scale)}
    for run in ("wanda", "recommended", "wanda, --activation-memory 1/4"):
        assert float(runs[run][1]) > 0 and float(runs[run][2]) > 0
    if not torch.cuda.is_available():
        assert "needs CUDA (semi-structured kernels)" in tiny_table.split(SECTIONS[2])[1]


def test_mask_disagreements_far_from_the_cut_are_counted():
    # Scores 1..8 per row, half pruned: the cut is the 4th lowest score (4.0).
    scores = torch.arange(1.0, 9.0).repeat(2, 1)
    near = gpu_check.near_cut(scores, 0.5, per_row=True)
    assert near[:, 3].all() and int(near.sum()) == 2
    scores[0, 4] = 4.0 * (1 + gpu_check.TIE_RTOL / 2)  # a near-tie above the cut counts as a tie too
    assert gpu_check.near_cut(scores, 0.5, per_row=True)[0, 4]


def test_a_different_mask_on_the_other_device_is_reported(monkeypatch):
    from tests.tiny_models import tiny_model

    def pruned_pair_with_one_flip(model, config, calibration, device, record, onload=False):
        on_cpu, on_device, near = original(model, config, calibration, device, record, onload)
        weight = next(iter(gpu_check.block_weights(on_device).values()))
        # The largest weight is kept, far from the cut: pruning it on one side is a real disagreement.
        largest = torch.unravel_index(weight.abs().argmax(), weight.shape)
        weight[largest] = 0
        return on_cpu, on_device, near

    original = gpu_check.pruned_pair
    monkeypatch.setattr(gpu_check, "pruned_pair", pruned_pair_with_one_flip)
    model = tiny_model("llama")
    calibration = gpu_check.random_calibration(model.config.vocab_size, windows=2, seq_len=16)
    entries, differ, beyond = gpu_check.mask_agreement(model, "wanda", calibration, torch.device("cpu"))
    assert entries > 0 and differ == 1 and beyond == 1
