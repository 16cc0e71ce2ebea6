"""benchmarks/structured_quality.py: --tiny end to end into a results folder, its grid, and its cells."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import structured_quality  # noqa: E402

INTERVAL = r"([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]( not resolved)?"


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]


def section(text: str, title: str) -> str:
    after = text.split(title + "\n", 1)[1]
    return re.split(r"\n#{2,3} ", after, maxsplit=1)[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> str:
    results, work = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("runs")
    env = pytest.MonkeyPatch()
    env.setenv("BENCHMARK_RESULTS_DIR", str(results))
    try:
        path = structured_quality.main(["--tiny", "--out", str(work)])
    finally:
        env.undo()
    assert path == results / "structured_quality.md"
    return path.read_text(encoding="utf-8")


def test_the_table_has_its_header_and_sections(tiny_run):
    for line in ("- command: `", "- commit: ", "- machine: CPUs ", "## bible", "### Summary, bible",
                 "### Per language, bible: increase of bits per byte over dense [95%]"):
        assert line in tiny_run


def test_every_configuration_is_a_summary_row_or_named_as_not_run(tiny_run):
    rows = table_rows(section(tiny_run, "### Summary, bible"))[1:]
    labels = [row[0] for row in rows]
    assert labels[0] == "wanda 50%"
    # The tiny grid: ffn, heads, both at 20% and 1 block; activation and balanced; refit off and on (not for blocks).
    expected = [f"{units} 20%, {imp}{refit}" for units in ("ffn", "both") for imp in ("activation", "balanced")
                for refit in ("", " + refit")] + ["1 block, activation", "1 block, balanced"]
    assert labels[1:] == expected
    # Heads alone cannot remove 20% of the tiny model's block parameters: named, with the reason.
    for imp in ("activation", "balanced"):
        for refit in ("", " + refit"):
            assert f"- heads 20%, {imp}{refit}: Sparsity 0.2 cannot be reached by removing whole heads" in tiny_run
    for row in rows:
        label, removed, refit, mean, worst, versus, verdict = row
        assert re.fullmatch(INTERVAL, mean), mean
        if "refit" in label:
            before, after = (float(x) for x in refit.split(" -> "))
            assert 0 <= after < before
        else:
            assert refit == ""
        if label == "wanda 50%":
            assert versus == "(reference)" and removed == "50.0%"
            continue
        match = re.fullmatch(INTERVAL, versus)
        assert match, versus
        low, high = float(match.group(2)), float(match.group(3))
        unresolved = low <= 0 <= high
        assert (match.group(4) is not None) == unresolved
        assert verdict == ("not resolved" if unresolved else ("structured better" if high < 0 else "wanda 50% better"))


def test_every_language_has_a_cell_per_configuration(tiny_run):
    rows = table_rows(section(tiny_run, "### Per language, bible: increase of bits per byte over dense [95%]"))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["language", "calibrated", "dense bpb [95%]"] and header[3] == "wanda 50%"
    assert sorted(row[0] for row in body) == ["en", "ru", "zh"]
    for row in body:
        assert len(row) == len(header)
        assert all(re.fullmatch(INTERVAL, value) for value in row[3:]), row


def test_cells_and_the_grid_by_hand():
    assert structured_quality.cell(0.1, (-0.1, 0.2)) == "+0.100 [-0.100, +0.200] not resolved"
    assert structured_quality.cell(-0.25, (-0.3, -0.2)) == "-0.250 [-0.300, -0.200]"
    args = structured_quality.parse_args(["--units", "ffn,blocks", "--budgets", "0.1", "--blocks", "2",
                                          "--importances", "balanced", "--refit", "off,on"])
    labels = [s.label for s in structured_quality.grid(args)]
    assert labels == ["ffn 10%, balanced", "ffn 10%, balanced + refit", "2 blocks, balanced"]  # blocks take no refit
    for bad in (["--units", "layers"], ["--importances", "fisher"], ["--refit", "maybe"], ["--budgets", "1.5"]):
        with pytest.raises(SystemExit):
            structured_quality.parse_args(bad)
