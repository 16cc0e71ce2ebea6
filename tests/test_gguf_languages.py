"""benchmarks/gguf_languages.py: the files it makes, its cells and verdicts, its refusal without llama.cpp, and --tiny."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gguf_languages  # noqa: E402

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (pip install 'babelprune[llama]')")


def test_q8_0_reads_no_matrix_and_every_other_type_reads_three():
    assert gguf_languages.variants(["Q8_0", "Q4_K_M"]) == [
        ("f32", None, None),
        ("Q8_0", "Q8_0", "none"),
        ("Q4_K_M none", "Q4_K_M", "none"),
        ("Q4_K_M balanced", "Q4_K_M", "balanced"),
        ("Q4_K_M en", "Q4_K_M", "en"),
    ]


class FakeComparison:
    """What `cell` reads of a Comparison: changes with a language, their degradation and its interval."""

    def __init__(self, values: dict[str, tuple[float, tuple[float, float] | None]]) -> None:
        self.values = values
        self.changes = [SimpleNamespace(language=lang) for lang in values]

    def degradation(self, change) -> float:
        return self.values[change.language][0]

    def degradation_interval(self, change):
        return self.values[change.language][1]


def test_a_cell_gives_the_change_its_interval_and_not_resolved_where_the_interval_holds_zero():
    comparison = FakeComparison({"en": (0.0052, (0.001, 0.0106)), "sw": (0.001, (-0.002, 0.004)), "fr": (-0.02, None)})
    assert gguf_languages.cell(comparison, "en") == "+0.52% [+0.10, +1.06]"
    assert gguf_languages.cell(comparison, "sw") == "+0.10% [-0.20, +0.40] n.r."
    assert gguf_languages.cell(comparison, "fr") == "-2.00%"


def test_without_llama_cpp_it_stops_in_one_sentence_before_building_anything(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    with pytest.raises(SystemExit) as stopped:
        gguf_languages.main(["--tiny", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert "pip install 'babelprune[llama]'" in str(stopped.value) and "\n" not in str(stopped.value)
    assert list(tmp_path.iterdir()) == []


@needs_llama_cpp
@pytest.mark.real
def test_tiny_writes_every_table(tmp_path):
    path = gguf_languages.main(["--tiny", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    text = path.read_text(encoding="utf-8")
    for title in ("## The runtime", "## What each file costs", "## The importance matrices", "## Size and speed"):
        assert title in text
    assert "| sw (unseen) |" in text and "Q4_K_M none → Q4_K_M balanced" in text


def test_another_model_gets_its_own_table_and_the_default_keeps_its_name():
    assert gguf_languages.table_name("gemma3-270m") == "gguf_languages"
    assert gguf_languages.table_name("smollm2-135m") == "gguf_languages-smollm2-135m"
    assert gguf_languages.table_name("/models/My Model_v2/") == "gguf_languages-my-model-v2"
    assert gguf_languages.table_name("smollm2-135m", tiny=True) == "gguf_languages"
