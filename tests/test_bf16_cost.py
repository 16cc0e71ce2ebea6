"""benchmarks/bf16_cost.py: --tiny end to end into a results folder, and its comparisons on hand-made data."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from babelprune.records.eval import EvalResult, LMScore, ModelInfo

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bf16_cost  # noqa: E402

SECTIONS = ("## Quality: bfloat16 against float32", "### Per language, bible", "## Masks and weights", "## Peak memory")
CELL = re.compile(r"^([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]( not resolved)?$")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every data row of the markdown tables in `text` (header rows included, separators left out)."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]


def section(text: str, title: str) -> str:
    """The text from `title` to the next heading."""
    after = text.split(title + "\n", 1)[1]
    return re.split(r"\n#{2,3} ", after, maxsplit=1)[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[str, Path]:
    results, work = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("runs")
    env = pytest.MonkeyPatch()
    env.setenv("BENCHMARK_RESULTS_DIR", str(results))
    try:
        path = bf16_cost.main(["--tiny", "--out", str(work)])
    finally:
        env.undo()
    assert path == results / "bf16_cost.md"
    return path.read_text(encoding="utf-8"), work


def test_the_table_has_its_header_and_every_section(tiny_run):
    text, _ = tiny_run
    for line in ("- command: `", "- commit: ", "- machine: CPUs "):
        assert line in text
    for title in SECTIONS:
        assert title + "\n" in text


def test_every_configuration_is_summarised_and_its_languages_counted_once(tiny_run):
    text, _ = tiny_run
    header, *rows = table_rows(section(text, SECTIONS[0]))
    assert header[0] == "configuration"
    assert [row[0] for row in rows] == ["dense", "wanda 50%", "mwanda + cwl + refit 50%"]
    for row in rows:
        languages, worse, better, unresolved = (int(cell) for cell in row[2:6])
        assert languages == len(bf16_cost.TINY_LANGUAGES) and worse + better + unresolved == languages
        assert row[8] in ("bf16 worse", "bf16 better", "not resolved")


def test_a_difference_is_marked_not_resolved_exactly_when_its_interval_holds_zero(tiny_run):
    text, _ = tiny_run
    header, *rows = table_rows(section(text, SECTIONS[1]))
    assert sorted(row[0] for row in rows) == sorted(bf16_cost.TINY_LANGUAGES)
    for row in rows:
        for fp32, bf16, cell in (row[2:5], row[5:8], row[8:11]):
            value, low, high, unresolved = CELL.match(cell).groups()
            assert float(value) == pytest.approx(float(bf16) - float(fp32), abs=2e-4)  # each printed to 4 places
            assert (unresolved is not None) == (float(low) <= 0 <= float(high)), cell


def test_masks_are_compared_over_every_block_weight_of_the_pruned_rows(tiny_run):
    text, work = tiny_run
    from babelprune.api import load_model

    model = load_model(str(work / "tiny-gemma3")).model
    entries = sum(weight.numel() for weight in bf16_cost.block_weights(model).values())
    header, *rows = table_rows(section(text, SECTIONS[2]))
    assert [row[0] for row in rows] == ["wanda 50%", "mwanda + cwl + refit 50%"]
    for row in rows:
        assert int(row[1].replace(",", "")) == entries
        assert int(row[2].split(" ")[0].replace(",", "")) <= entries
        difference, kept, rounding = (float(cell) for cell in row[7:10])
        assert 0 < rounding < 2.0**-8  # bfloat16 rounds each weight by at most 2^-9 of itself
        assert kept <= difference  # the kept entries are a part of the whole
    wanda_kept = float(rows[0][8])
    assert wanda_kept == pytest.approx(float(rows[0][9]), rel=0.05)  # wanda changes no kept weight: only its rounding


def test_memory_is_given_for_both_types_of_every_configuration(tiny_run):
    text, work = tiny_run
    header, *rows = table_rows(section(text, SECTIONS[3]))
    assert [(row[0], row[1]) for row in rows] == [(label, dtype) for label in ("dense", "wanda 50%", "mwanda + cwl + refit 50%")
                                                  for dtype in bf16_cost.DTYPES]
    for row in rows:
        assert float(row[2]) == {"float32": 1.0, "bfloat16": 0.5}[row[1]]  # the weights' bytes, in their own type
        assert float(row[5]) > 0 and float(row[3]) <= float(row[5])  # the run's peak covers loading
        assert (row[4] == "-") == (row[0] == "dense")
        assert (row[7] == "") == (row[1] == "float32")  # the ratio stands on the bfloat16 row
    for label in ("wanda", "recommended"):
        record = json.loads((work / f"{label}-bfloat16" / "run.json").read_text(encoding="utf-8"))
        assert record["dtype"] == "bfloat16" and record["pruning_peak"][0] <= record["run_peak"][0]
        assert set(record["cpu_seconds"]) == {"load", "calibrate", "prune", "evaluate"}


def test_each_phase_keeps_its_peak_and_the_file_backed_part_of_it(tmp_path):
    size = 64 << 20
    blob = tmp_path / "blob"
    blob.write_bytes(np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8).tobytes())
    with bf16_cost.Memory() as memory:
        memory.enter("anonymous")
        block = np.ones(size // 8)  # written, so resident: the process's own memory
        memory.enter("mapped")  # the last sample of "anonymous" still sees the block
        del block
        mapped = np.memmap(blob, mode="r")
        assert int(mapped[::4096].sum()) >= 0  # reads one byte of every page: each becomes resident, file-backed
        memory.enter("done")  # closes "mapped" while the pages are mapped
        del mapped
    anonymous, file_backed = memory.above_start(("anonymous",))
    assert anonymous >= 0.9 * size and file_backed < 0.1 * size
    assert memory.above_start(("mapped",))[1] >= 0.9 * size
    assert memory.above_start() >= memory.above_start(("mapped",))
    assert memory.above_start(("never",)) is None


def test_a_second_run_reuses_every_record_without_starting_a_process(tiny_run, tmp_path, monkeypatch):
    _, work = tiny_run

    # A run would start this interpreter again; with none there, starting one fails.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    monkeypatch.setenv("BENCHMARK_RESULTS_DIR", str(tmp_path))
    assert bf16_cost.main(["--tiny", "--out", str(work)]) == tmp_path / "bf16_cost.md"


# ----- the comparisons on hand-made data ----------------------------------------------


def test_the_cut_distance_is_relative_to_the_midpoint_of_the_row():
    scores = torch.arange(1.0, 9.0).repeat(2, 1)  # half pruned: 1..4 go, 5..8 stay; the cut is 4.5
    distance = bf16_cost.cut_distance(scores, 0.5, per_row=True)
    assert distance[0, 3] == pytest.approx(0.5 / 4.5) and distance[1, 7] == pytest.approx(3.5 / 4.5)
    assert torch.isinf(bf16_cost.cut_distance(scores, 0.0, per_row=True)).all()  # nothing pruned: nothing can flip


def _masks(folder: Path, pruned: np.ndarray, distance: np.ndarray | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"pruned": np.packbits(pruned.reshape(-1)), "shape": np.array(pruned.shape)}
    if distance is not None:
        arrays["distance"] = distance.astype(np.float16)
    np.savez(folder / "0.mlp.down_proj.npz", **arrays)
    return folder


def test_a_flip_near_the_cut_is_a_tie_and_one_far_from_it_is_not(tmp_path):
    pruned = np.array([[True, True, False, False]] * 2)
    distance = np.array([[0.5, 0.001, 0.002, 0.5]] * 2)
    flipped = pruned.copy()
    flipped[0, 1:3] = ~flipped[0, 1:3]  # swapped at the cut: a tie
    flipped[1, [0, 3]] = ~flipped[1, [0, 3]]  # swapped far from it
    got = bf16_cost.mask_difference(_masks(tmp_path / "a", pruned, distance), _masks(tmp_path / "b", flipped, None))
    assert (got.entries, got.differ, got.ties) == (8, 4, 2)
    assert got.largest == pytest.approx(0.5, rel=1e-3) and got.worst_share == pytest.approx(0.5)


def _result(bits: dict[str, list[float]]) -> dict:
    """An EvalResult, as the runs store it, with the given bits per byte for each window (100 bytes each)."""
    scores = [LMScore(language=lang, name=lang, script="Latn", resource="high", n_windows=len(values),
                      n_tokens=50 * len(values), n_bytes=100 * len(values), nll_nats=sum(values) * 100 * math.log(2),
                      window_nll=[v * 100 * math.log(2) for v in values], window_bytes=[100] * len(values))
              for lang, values in bits.items()]
    model = ModelInfo(spec="m", architecture="X", n_parameters=1, block_sparsity=0.0)
    return EvalResult(model=model, corpus="bible", split="eval", scores=scores).model_dump(mode="json")


def test_a_shift_of_every_window_is_resolved_and_noise_around_zero_is_not():
    windows = [1.0 + 0.1 * i for i in range(6)]
    fp32 = _result({"en": windows, "sw": windows})
    # en: every window 0.01 worse in bfloat16; sw: some windows better, some worse, no change on the whole.
    bf16 = _result({"en": [v + 0.01 for v in windows], "sw": [v + d for v, d in zip(windows, (0.02, -0.02, 0.01, -0.01, 0.03, -0.03))]})
    got = bf16_cost.dtype_difference(fp32, bf16)
    by_language = {row.language: row for row in got.languages}
    assert by_language["en"].difference == pytest.approx(0.01) and by_language["en"].interval == pytest.approx((0.01, 0.01))
    assert by_language["sw"].interval[0] < 0 < by_language["sw"].interval[1]
    assert (got.count("worse"), got.count("better"), got.count("not resolved")) == (1, 0, 1)
    assert got.mean == pytest.approx(0.005)


def test_runs_that_scored_different_windows_are_refused():
    fp32 = _result({"en": [1.0] * 6})
    other = EvalResult.model_validate(_result({"en": [1.0] * 6}))
    other.scores[0].window_bytes[0] = 99
    with pytest.raises(SystemExit, match="different windows"):
        bf16_cost.dtype_difference(fp32, other.model_dump(mode="json"))
