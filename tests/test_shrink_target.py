"""benchmarks/shrink_target.py: the best plain quantization, the verdicts, the refusal without llama.cpp, and --tiny."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from babelprune.shrink import Candidate, LanguageCheck, ScoredCandidate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import shrink_target  # noqa: E402

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (pip install 'babelprune[llama]')")


def _scored(number: int, bytes_: int, passed: bool, **fields) -> ScoredCandidate:
    candidate = Candidate(**fields)
    return ScoredCandidate(number=number, label=candidate.label(), candidate=candidate, bytes=bytes_, passed=passed)


def test_the_best_plain_quantization_is_the_smallest_passing_one_without_trim_or_width():
    candidates = [
        _scored(0, 500, True, quant="Q8_0"),
        _scored(1, 300, False, quant="Q4_K_M"),  # smaller, but failed
        _scored(2, 100, True, min_count=1, quant="Q4_K_M"),  # trimmed: not plain
        _scored(3, 120, True, units=("ffn",), sparsity=0.1, quant="Q4_K_M"),  # structured: not plain
        _scored(4, 400, True, quant="Q6_K"),
        _scored(5, 50, True, min_count=2),  # not quantized
    ]
    assert shrink_target.best_plain(candidates).number == 4
    assert shrink_target.best_plain(candidates[1:4]) is None  # the only plain one failed


def test_equal_bytes_go_to_the_earlier_candidate():
    candidates = [_scored(7, 200, True, quant="Q5_K_M"), _scored(3, 200, True, quant="Q5_K_S")]
    assert shrink_target.best_plain(candidates).number == 3


def test_verdicts_from_hand_made_figures():
    # 250 / 100 bytes = 2.5x smaller; 30 / 20 tokens/s = 1.5x faster; the test half passed.
    assert shrink_target.verdicts(100, 250, 30.0, 20.0, True) == [
        ("2x smaller in bytes", "2.50x smaller", "met"),
        ("2x faster generation", "1.50x faster", "missed"),
        ("test half within the budget", "every language within", "met"),
    ]
    # exactly 2x is met; a language beyond the budget misses the third target
    assert [row[2] for row in shrink_target.verdicts(100, 200, 40.0, 20.0, False)] == ["met", "met", "missed"]
    # 190 / 100 = 1.9x: missed
    assert shrink_target.verdicts(100, 190, 40.0, 20.0, True)[0] == ("2x smaller in bytes", "1.90x smaller", "missed")


def test_verdicts_without_a_comparison_are_missed():
    assert shrink_target.verdicts(None, None, None, None, None) == [
        ("2x smaller in bytes", "no comparison", "missed"),
        ("2x faster generation", "no comparison", "missed"),
        ("test half within the budget", "not checked", "missed"),
    ]


def test_candidate_rows_show_bytes_the_worst_upper_end_and_failed_languages():
    check = dict(dense_bits_per_byte=1.0, bits_per_byte=1.01, relative=0.01)
    scored = _scored(2, 1_234_567, False, quant="Q4_K_M").model_copy(update={
        "languages": [LanguageCheck(language="en", interval=(0.001, 0.015), passed=True, **check),
                      LanguageCheck(language="sw", interval=(0.01, 0.031), passed=False, **check)],
        "failed_languages": ["sw"]})
    assert shrink_target.candidate_rows([scored], chosen=None) == [["Q4_K_M", "1,234,567", "1.2", "no", "+3.10%", "sw"]]
    assert shrink_target.candidate_rows([scored], chosen=2)[0][0] == "Q4_K_M (chosen)"


def test_without_llama_cpp_it_stops_in_one_sentence_before_building_anything(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    with pytest.raises(SystemExit) as stopped:
        shrink_target.main(["--tiny", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert "pip install 'babelprune[llama]'" in str(stopped.value) and "\n" not in str(stopped.value)
    assert list(tmp_path.iterdir()) == []


def _rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading)[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[1:]]


@needs_llama_cpp
@pytest.mark.real
def test_tiny_writes_every_table(tmp_path):
    path = shrink_target.main(["--tiny", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    text = path.read_text(encoding="utf-8")
    candidates = {row[0]: row for row in _rows(text, "## Every candidate")}
    # trims none and 1 with Q4_K_M alone: the plain quantization and the trimmed one
    assert set(candidates) == {"Q4_K_M", "trim min_count 1, Q4_K_M (chosen)"}
    for row in candidates.values():
        assert row[1].replace(",", "").isdigit() and row[3] in ("yes", "no")
    assert [row[0] for row in _rows(text, "## The chosen candidate on the test half")] == ["en", "sw"]
    speed = {row[0]: row for row in _rows(text, "## Bytes and speed")}
    assert set(speed) == {"chosen", "plain", "chosen / plain"} and speed["plain"][1] == "Q4_K_M"
    assert float(speed["chosen"][5]) > 0 and float(speed["plain"][5]) > 0
    verdicts = _rows(text, "## The target")
    assert [row[0] for row in verdicts] == ["2x smaller in bytes", "2x faster generation", "test half within the budget"]
    assert all(row[2] in ("met", "missed") for row in verdicts)
    # the trimmed vocabulary (two languages' pieces of gemma3's 262k) is far below the plain file's bytes
    assert verdicts[0][2] == "met"
