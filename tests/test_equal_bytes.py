"""benchmarks/equal_bytes.py: choosing under a target, the sparse copy's bytes, aligned FFN cuts, cells, the refusal, --tiny."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from babelprune.api import load_model, prune_structured, prune_to_folder
from babelprune.formats.pruned import sparse_size_report
from babelprune.models.adapters import adapter_for
from babelprune.models.layouts import layer_layouts
from babelprune.prune.config import PruneConfig, StructuredConfig
from babelprune.records.eval import LMScore
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import equal_bytes  # noqa: E402

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (pip install 'babelprune[llama]')")

# The tiny Llama of tests/tiny_models, by hand: per block attention 32*32 (q) + 2*16*32 (k, v) + 32*32 (o) = 3072
# and FFN 3*32*64 = 6144 parameters, 9216 in all; a neuron owns 3*32 = 96 (a row of gate and up, a column of down).
TINY_BLOCK, TINY_NEURON, TINY_WIDTH = 9216, 96, 64


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


# ----- choosing under a target


SIZES = [("Q8_0", 291_000_000), ("Q6_K", 224_000_000), ("Q4_K_M", 180_000_000), ("Q2_K", 121_000_000)]


def test_the_largest_size_not_above_the_target_is_chosen():
    assert equal_bytes.closest_under(SIZES, 250_000_000) == "Q6_K"
    assert equal_bytes.closest_under(SIZES, 179_999_999) == "Q2_K"
    assert equal_bytes.closest_under(SIZES, 1_000_000_000) == "Q8_0"


def test_a_size_equal_to_the_target_fits():
    assert equal_bytes.closest_under(SIZES, 224_000_000) == "Q6_K"


def test_nothing_fits_below_the_smallest_size():
    assert equal_bytes.closest_under(SIZES, 120_999_999) is None
    assert equal_bytes.closest_under([], 250_000_000) is None


def test_among_equal_sizes_the_first_listed_is_chosen_wherever_they_stand():
    assert equal_bytes.closest_under([("small", 5), ("a", 10), ("b", 10)], 12) == "a"
    assert equal_bytes.closest_under([("b", 10), ("a", 10), ("big", 20)], 12) == "b"


# ----- the sparse copy's bytes


def test_the_sparse_copy_counts_a_bitmask_and_float16_values_where_a_quarter_is_zero():
    tensors = [
        (32, 16, True),  # half zeros: bitmask ceil(32/8) = 4 bytes, 16 values * 2 = 32 bytes
        (12, 9, True),  # a quarter zeros exactly: bitmask ceil(12/8) = 2 bytes, 9 * 2 = 18 bytes
        (16, 15, True),  # 1 zero in 16: stored whole, 16 * 2 = 32 bytes
        (8, 4, False),  # not a block linear (a norm, the embedding): whole, 8 * 2 = 16 bytes
    ]
    assert equal_bytes.sparse_copy_bytes(tensors) == {"masks": 6, "values": 50, "dense": 48, "total": 104}


def test_the_value_width_is_a_parameter():
    assert equal_bytes.sparse_copy_bytes([(32, 16, True), (8, 8, False)], value_bytes=4) == {
        "masks": 4, "values": 64, "dense": 32, "total": 100}


def test_the_accounting_matches_the_tensor_bytes_of_a_saved_sparse_copy(tiny_folder, tmp_path):
    out = tmp_path / "sparse"
    prune_to_folder(str(tiny_folder), PruneConfig(method="magnitude", sparsity=0.5), out, save_format="sparse", values="fp16")
    accounted = equal_bytes.sparse_copy_bytes(equal_bytes.sparse_tensors(out))
    report = sparse_size_report(out)  # read from the file's own header
    assert accounted["total"] == report["sparse_bytes"]
    assert accounted["masks"] > 0 and accounted["masks"] + accounted["values"] == report["block_linear_sparse_bytes"]
    assert accounted["total"] < (out / "sparse" / "sparse.safetensors").stat().st_size


# ----- FFN cuts that llama.cpp's blocks divide


def test_shares_move_to_whole_k_quant_blocks_of_neurons_for_a_width_of_256s():
    # gemma3-270m: blocks of 640*1024 + 2*640*256 + 1024*640 + 3*640*2048 = 5,570,560 parameters, 1,920 per neuron.
    # 0.1 -> 290.1 neurons -> 1.13 blocks of 256 -> 256; 0.2 -> 580.3 -> 2.27 -> 512; 0.3 -> 870.4 -> 3.40 -> 768.
    assert equal_bytes.ffn_cuts([0.1, 0.2, 0.3], 5_570_560, 1920, 2048) == [256, 512, 768]


def test_other_widths_move_to_32s_at_least_one_step_and_repeats_go():
    # 0.3 * 9216 / 96 = 28.8 neurons -> 0.9 steps of 32 -> 32; 0.01 -> 0.96 neurons -> at least one step -> 32 again.
    assert equal_bytes.ffn_cuts([0.3, 0.01], TINY_BLOCK, TINY_NEURON, TINY_WIDTH) == [32]
    # 0.9 -> 86.4 neurons -> 2.7 steps -> 3, but a step must be kept: 64 / 32 - 1 = 1 step.
    assert equal_bytes.ffn_cuts([0.9], TINY_BLOCK, TINY_NEURON, TINY_WIDTH) == [32]


def test_the_sparsity_of_a_cut_holds_half_a_neuron_more():
    assert equal_bytes.ffn_sparsity(256, 5_570_560, 1920) == pytest.approx(256.5 * 1920 / 5_570_560)
    assert equal_bytes.ffn_sparsity(32, TINY_BLOCK, TINY_NEURON) == pytest.approx(3120 / 9216)


def test_per_layer_pruning_at_that_sparsity_removes_exactly_the_cut_from_every_block(tiny_folder):
    block, neuron, width = equal_bytes.ffn_shape(tiny_folder)
    assert (block, neuron, width) == (TINY_BLOCK, TINY_NEURON, TINY_WIDTH)
    loaded = load_model(str(tiny_folder))
    config = StructuredConfig(units=["ffn"], sparsity=equal_bytes.ffn_sparsity(32, block, neuron), importance="magnitude",
                              ranking="per-layer")
    prune_structured(loaded, config)
    assert [layout.ffn for layout in layer_layouts(loaded.model, adapter_for(loaded.model))] == [32, 32]


# ----- cells


class FakeComparison:
    """What the cells read of a Comparison: changes with a language, their degradation and interval, and the mean."""

    def __init__(self, values: dict[str, tuple[float, tuple[float, float] | None]], mean=(0.0, None)) -> None:
        self.values = values
        self.changes = [SimpleNamespace(language=lang) for lang in values]
        self.mean_degradation, self.mean_interval = mean

    def degradation(self, change) -> float:
        return self.values[change.language][0]

    def degradation_interval(self, change):
        return self.values[change.language][1]


def test_a_language_cell_gives_the_change_its_interval_and_not_resolved_where_it_holds_zero():
    comparison = FakeComparison({"en": (0.0052, (0.001, 0.0106)), "sw": (0.001, (-0.002, 0.004)), "fr": (-0.02, None),
                                 "hi": (-0.01, (-0.02, 0.0))})
    assert equal_bytes.language_cell(comparison, "en") == "+0.52% [+0.10, +1.06]"
    assert equal_bytes.language_cell(comparison, "sw") == "+0.10% [-0.20, +0.40] n.r."
    assert equal_bytes.language_cell(comparison, "fr") == "-2.00%"
    assert equal_bytes.language_cell(comparison, "hi") == "-1.00% [-2.00, +0.00] n.r."


def test_a_cell_resampled_apart_says_unpaired():
    comparison = FakeComparison({"ko": (2.5, (2.4, 2.6)), "tr": (0.01, (-0.01, 0.03))})
    assert equal_bytes.language_cell(comparison, "ko", paired=False) == "+250.00% [+240.00, +260.00] unpaired"
    assert equal_bytes.language_cell(comparison, "tr", paired=False) == "+1.00% [-1.00, +3.00] n.r. unpaired"


def test_the_mean_cell_marks_an_interval_holding_zero():
    assert equal_bytes.mean_cell(FakeComparison({}, (0.013, (0.004, 0.02)))) == "+1.30% [+0.40, +2.00]"
    assert equal_bytes.mean_cell(FakeComparison({}, (0.001, (-0.003, 0.005)))) == "+0.10% [-0.30, +0.50] n.r."
    assert equal_bytes.mean_cell(FakeComparison({}, (0.001, None))) == "+0.10%"


def test_languages_pair_on_windows_or_else_on_blocks():
    def score(lang, window_bytes, segment_bytes):
        return LMScore(language=lang, name=lang, script="Latn", resource="high", n_windows=len(window_bytes), n_tokens=100,
                       n_bytes=sum(window_bytes), nll_nats=1.0, window_nll=[0.5] * len(window_bytes), window_bytes=window_bytes,
                       segment_nll=[0.5] * len(segment_bytes), segment_bytes=segment_bytes)

    def result(*scores):
        return SimpleNamespace(scores=list(scores))

    blocks = [300, 280, 310, 290, 305]
    before = result(score("en", blocks, blocks), score("ko", [400, 420, 410, 430, 440], blocks), score("vi", blocks, blocks))
    after = result(score("en", blocks, blocks),  # the same windows
                   score("ko", [200, 200, 420, 410, 430, 440], blocks),  # other windows over the same blocks
                   score("vi", [200, 200, 280, 310, 290, 305], [200, 200, 280, 310, 290, 305]))  # other blocks too
    assert equal_bytes.paired(before, after, "en") and equal_bytes.paired(before, after, "ko")
    assert not equal_bytes.paired(before, after, "vi")


# ----- the whole script


def test_without_llama_cpp_it_stops_in_one_sentence_before_building_anything(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    with pytest.raises(SystemExit) as stopped:
        equal_bytes.main(["--tiny", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert "pip install 'babelprune[llama]'" in str(stopped.value) and "\n" not in str(stopped.value)
    assert list(tmp_path.iterdir()) == []


def _chosen_rows(text: str) -> dict[tuple[str, str], list[str]]:
    section = text.split("## Chosen at each target")[1].split("\n## ")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines() if re.match(r"\| [\d.]+ \|", line)]
    return {(row[0], row[1]): row for row in rows}


@needs_llama_cpp
@pytest.mark.real
def test_tiny_chooses_under_each_target_and_writes_every_table(tmp_path):
    path = equal_bytes.main(["--tiny", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    text = path.read_text(encoding="utf-8")
    rows = _chosen_rows(text)
    recipes = ["quantized", "trimmed + quantized", "trimmed + FFN pruned + quantized", "trimmed + 50% sparse, fp16"]
    assert set(rows) == {(target, recipe) for target in ("7", "3", "0.5") for recipe in recipes}
    for (target, _), row in rows.items():  # every chosen configuration fits its target
        assert row[2] == "none fits" or float(row[3]) <= float(target)
    # --tiny's sizes: the dense files 3.2 MB, the trimmed ones about 2.5, the sparse copy's folder (tokenizer.json
    # included) 6.4; nothing is as small as 0.5 MB. Q8_0 is the larger of the two types, so it is the one chosen.
    assert rows[("7", "quantized")][2] == "Q8_0" and rows[("3", "quantized")][2] == "none fits"
    assert rows[("3", "trimmed + quantized")][2] == "Q8_0"
    assert rows[("3", "trimmed + FFN pruned + quantized")][2].startswith("FFN 128→64") and rows[("3", "trimmed + FFN pruned + quantized")][2].endswith("Q8_0")
    assert rows[("7", "trimmed + 50% sparse, fp16")][2] == equal_bytes.SPARSE_LABEL
    assert rows[("3", "trimmed + 50% sparse, fp16")][2] == "none fits"
    assert all(rows[("0.5", recipe)][2] == "none fits" for recipe in recipes)
    assert rows[("7", "quantized")][6] and rows[("7", "trimmed + 50% sparse, fp16")][6] == ""  # only GGUF files are timed
    for title in ("## Per language at 7 MB", "## Per language at 3 MB", "## Per language at 0.5 MB", "## The runtime",
                  "## Every configuration built"):
        assert title in text
    per_language = text.split("## Per language at 3 MB")[1].split("\n## ")[0]
    korean = next(line for line in per_language.splitlines() if line.startswith("| ko (unseen) |"))
    # The trimmed vocabulary spells Korean in bytes: its blocks no longer fit one window each, but they are the same
    # blocks, so both trimmed cells are paired block by block, each with its interval.
    assert "unpaired" not in korean and korean.count("none fits") == 2 and korean.count(" [") == 2
    assert "| en |" in per_language and "| sw |" in per_language
