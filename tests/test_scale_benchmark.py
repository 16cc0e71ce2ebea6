"""benchmarks/scale.py --tiny runs end to end into $BENCHMARK_RESULTS_DIR and writes every section, with positive ratios."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import scale  # noqa: E402

SECTIONS = (
    "## Models",
    "## wanda: time and memory",
    "## The recommended configuration: time and memory",
    "## Calibration size: time against tokens, on the target model's first blocks",
    "## Depth: the same width with more blocks, wanda",
    "## Exponents: time against parameters",
    "## Targets",
)


def section(text: str, title: str) -> str:
    """The text from `title` to the next section."""
    body = text.split(title + "\n", 1)[1]
    return body.split("\n## ", 1)[0]


def table(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `text`, as header -> cell."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "")) == {"-"}, "the second line of a table separates its header"
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def measured(cell: str) -> float:
    """The number a cell starts with, checked finite and not negative.

    A tiny model's memory over its bytes, or its seconds printed to two places, may round to 0.00:
    its tensors fit in what the process had already allocated, and a forward pass takes milliseconds.
    """
    value = float(cell.split()[0])
    assert math.isfinite(value) and value >= 0, cell
    return value


def positive(cell: str) -> float:
    """The number a cell starts with (a cell may add "(...)" or a reuse mark), checked positive and finite."""
    value = float(cell.split()[0])
    assert math.isfinite(value) and value > 0, cell
    return value


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("results")
    env = dict(os.environ, BENCHMARK_RESULTS_DIR=str(out))
    done = subprocess.run([sys.executable, "benchmarks/scale.py", "--tiny"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return (out / "scale.md").read_text(encoding="utf-8")


def test_the_header_says_how_the_table_was_made(tiny_table):
    assert tiny_table.startswith("# One-shot pruning at growing model sizes")
    for field in ("- command: `python benchmarks/scale.py --tiny`", "- commit: ", "- machine: CPUs "):
        assert field in tiny_table, field
    assert "a check that the script runs, not a result" in tiny_table


def test_every_section_is_written_in_order(tiny_table):
    places = [tiny_table.index(title) for title in SECTIONS]
    assert places == sorted(places)


def test_every_tiny_model_is_described(tiny_table):
    rows = {row["model"]: row for row in table(section(tiny_table, "## Models"))}
    assert set(rows) == {spec.name for spec in scale.TINY_MODELS}
    for spec in scale.TINY_MODELS:
        assert int(rows[spec.name]["hidden"]) == spec.shape["hidden_size"]
        assert int(rows[spec.name]["blocks"]) == spec.shape["num_hidden_layers"]
        assert int(rows[spec.name]["vocabulary"]) == spec.shape["vocab_size"]


def test_wanda_time_and_memory_ratios_are_positive(tiny_table):
    rows = table(section(tiny_table, "## wanda: time and memory"))
    assert [row["model"] for row in rows] == [spec.name for spec in scale.TINY_MODELS]
    for row in rows:
        positive(row["wanda / forward"])  # a ratio of unrounded times
        for column in ("forward s", "wanda s", "memory, in memory (x model)", "memory, --offload disk (x model)",
                       "offloaded peak MB", "offloaded peak / that"):
            measured(row[column])
        assert row["rounds (warm-up + timed)"] == f"1 + {scale.MIN_REPEATS}"


def test_the_recommended_configuration_is_timed_whole_or_on_the_first_blocks(tiny_table):
    rows = {row["model"]: row for row in table(section(tiny_table, "## The recommended configuration: time and memory"))}
    for spec in scale.TINY_MODELS:
        row = rows[spec.name]
        positive(row["recommended / forward"])
        blocks = spec.shape["num_hidden_layers"]
        if spec.recommended_blocks:
            assert row["blocks pruned"] == f"{spec.recommended_blocks} of {blocks} (the first)"
            assert row["memory, in memory (x model)"] == "not measured (first blocks)"
        else:
            assert row["blocks pruned"] == f"{blocks} of {blocks}"
            measured(row["memory, in memory (x model)"])
            measured(row["memory, --offload disk (x model)"])


def test_the_calibration_series_times_both_configurations_at_growing_sizes(tiny_table):
    rows = table(section(tiny_table, "## Calibration size: time against tokens, on the target model's first blocks"))
    sizes = scale.calibration_series(scale.parse_args(["--tiny"]))
    assert [(int(row["calibration tokens"].replace(",", "")), row["configuration"]) for row in rows] == [
        (size.tokens, config) for size in sizes for config in scale.CONFIGS]
    for row, size in zip(rows[:: len(scale.CONFIGS)], sizes):
        langs, windows, tokens = (int(n) for n in row["languages x windows x tokens"].split(" x "))
        assert langs * windows * tokens == size.tokens
    for row in rows:
        positive(row["pruning / forward"])
        measured(row["forward s"])
        assert row["rounds (warm-up + timed)"] == f"1 + {scale.MIN_REPEATS}"
    assert [size.tokens for size in sizes] == sorted({size.tokens for size in sizes})


def test_the_real_series_ends_at_the_default_calibration_of_prune():
    from babelprune.api import DEFAULT_CALIBRATION_LANGUAGES

    sizes = scale.calibration_series(scale.parse_args([]))
    assert sizes[0].tokens == 4 * 4 * 128  # the table's own calibration comes first
    assert sizes[-1].langs.split(",") == list(DEFAULT_CALIBRATION_LANGUAGES)
    assert (sizes[-1].samples, sizes[-1].seq_len) == (8, 256)  # CalibrationSpec's defaults, as `babelprune prune` reads
    assert [size.tokens for size in sizes] == [2048, 8192, 16384]


def test_the_depth_series_holds_the_same_width_at_each_depth(tiny_table):
    rows = table(section(tiny_table, "## Depth: the same width with more blocks, wanda"))
    base = next(spec for spec in scale.TINY_MODELS if spec.depths)
    assert [int(row["blocks"]) for row in rows] == [*base.depths, base.shape["num_hidden_layers"]]
    for row in rows:
        measured(row["in memory: peak MB (x model)"].split("(")[1].rstrip(")"))
        measured(row["--offload disk: peak MB (x model)"].split("(")[1].rstrip(")"))


def test_the_fits_give_finite_exponents_for_whole_models_and_per_block(tiny_table):
    rows = table(section(tiny_table, "## Exponents: time against parameters"))
    quantities = {row["time of"] for row in rows}
    assert {"forward pass", "pruning, wanda", "pruning per block, wanda", "pruning per block, recommended"} <= quantities
    for row in rows:
        assert math.isfinite(float(row["exponent"]))


def test_the_targets_are_checked_on_the_target_model(tiny_table):
    rows = table(section(tiny_table, "## Targets"))
    target = next(spec for spec in scale.TINY_MODELS if spec.target)
    assert len(rows) == 3
    for row in rows:
        assert row["target"].startswith(target.name)
        ratio = measured(row["measured"].rstrip("x"))
        limit = scale.TARGET_OFFLOAD_MEMORY if "offload" in row["target"] else scale.TARGET_WANDA_TIME
        assert row["met / not met"] == ("met" if ratio <= limit else "not met")
    assert "whole model" in rows[0]["target"] and "first 2 blocks" in rows[1]["target"]
    assert str(scale.TARGET_WANDA_TIME) in rows[0]["target"] and str(scale.TARGET_OFFLOAD_MEMORY) in rows[2]["target"]


def test_a_log_log_fit_recovers_a_power_law():
    sizes = [1e8, 5e8, 1e9, 3e9]
    exponent, factor = scale.loglog_fit(sizes, [3.0 * size**1.5 for size in sizes])
    assert exponent == pytest.approx(1.5) and factor == pytest.approx(3.0)
    with pytest.raises(ValueError, match="two distinct sizes"):
        scale.loglog_fit([1e9, 1e9], [1.0, 2.0])


def test_a_cut_model_keeps_its_width_and_its_name_says_how_many_blocks():
    spec = next(spec for spec in scale.MODELS if spec.target)
    cut = spec.cut(2)
    assert cut.shape == {**spec.shape, "num_hidden_layers": 2}
    assert cut.name == f"{spec.name}, 2 blocks" and not cut.target and not cut.depths and cut.rounds == {}
    assert cut.dtype == spec.dtype and cut.tokenizer == spec.tokenizer
