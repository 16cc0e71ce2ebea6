import math

import pytest

from babelprune.errors import BabelpruneError
from babelprune.report.compare import compare, spearman
from babelprune.report.records import EvalResult, LMScore, ModelInfo, PruningInfo

LANGS = {"en": ("English", "high"), "fr": ("French", "high"), "hi": ("Hindi", "medium"), "sw": ("Swahili", "low")}


def lm_result(bits: dict[str, float], method: str = "dense") -> EvalResult:
    """A result whose bits per byte are given: 8 bytes per language, nll = bpb * 8 * ln 2."""
    scores = [
        LMScore(language=lang, name=LANGS[lang][0], script="Latn", resource=LANGS[lang][1],
                n_windows=1, n_tokens=4, n_bytes=8, nll_nats=value * 8 * math.log(2))
        for lang, value in bits.items()
    ]
    return EvalResult(
        model=ModelInfo(spec="m", architecture="X", n_parameters=1, block_sparsity=0.0),
        pruning=PruningInfo(method=method, sparsity=0.5, setting="shared"), corpus="bible", split="eval", scores=scores,
    )


def test_relative_change_worst_language_and_resource_means():
    dense = lm_result({"en": 1.0, "fr": 2.0, "hi": 1.0, "sw": 2.0})
    pruned = lm_result({"en": 1.1, "fr": 2.4, "hi": 1.5, "sw": 3.0}, method="wanda")
    result = compare(dense, pruned)
    assert result.label == "wanda @ 50%"
    changes = {c.language: c.relative for c in result.changes}
    assert changes == pytest.approx({"en": 0.1, "fr": 0.2, "hi": 0.5, "sw": 0.5})
    assert result.mean_degradation == pytest.approx(0.325)
    assert result.worst.language == "hi"  # first of the two tied at +50%
    assert result.by_resource() == pytest.approx({"high": 0.15, "medium": 0.5, "low": 0.5})
    # Joshi classes en 5, fr 5, hi 4, sw 2 against degradations .1 .2 .5 .5: richer languages lose less.
    assert result.resource_correlation() < 0


def test_spearman_hand_cases():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks x: 1, 2.5, 2.5, 4; y: 1, 2, 3, 4 -> Pearson of ranks = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_results_without_common_languages_are_refused():
    with pytest.raises(BabelpruneError, match="share no language"):
        compare(lm_result({"en": 1.0}), lm_result({"sw": 1.0}))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"corpus": "udhr"}, "corpus bible vs udhr"),
        ({"split": "calib"}, "split eval vs calib"),
        ({"settings": {"seq_len": 128, "max_tokens": 2048}}, "seq_len 256 vs 128"),
        ({"settings": {"seq_len": 256, "max_tokens": 512}}, "max_tokens 2048 vs 512"),
    ],
)
def test_results_measured_differently_are_refused(change, named):
    settings = {"seq_len": 256, "max_tokens": 2048, "batch_size": 8}
    dense = lm_result({"en": 1.0, "fr": 2.0}).model_copy(update={"settings": settings})
    pruned = lm_result({"en": 1.1, "fr": 2.2}, method="wanda").model_copy(update={"settings": settings} | change)
    with pytest.raises(BabelpruneError, match="measured differently") as info:
        compare(dense, pruned)
    assert named in str(info.value)


def test_a_different_batch_size_is_still_comparable():
    dense = lm_result({"en": 1.0}).model_copy(update={"settings": {"seq_len": 256, "max_tokens": 64, "batch_size": 8}})
    pruned = lm_result({"en": 1.5}, method="wanda").model_copy(update={"settings": {"seq_len": 256, "max_tokens": 64, "batch_size": 1}})
    assert compare(dense, pruned).changes[0].relative == pytest.approx(0.5)


def test_languages_only_one_side_has_are_named():
    result = compare(lm_result({"en": 1.0, "fr": 2.0, "hi": 1.0}), lm_result({"en": 1.1, "sw": 2.0}, method="wanda"))
    assert [c.language for c in result.changes] == ["en"]
    assert result.only_dense == ["fr", "hi"] and result.only_pruned == ["sw"]
    note = result.dropped_note()
    assert "fr, hi (only in the dense result)" in note and "sw (only in the wanda @ 50% result)" in note


def test_compare_command_prints_the_dropped_languages(monkeypatch, capsys, tmp_path):
    import sys

    from babelprune import cli

    lm_result({"en": 1.0, "fr": 2.0}).save(tmp_path / "dense.json")
    lm_result({"en": 1.2}, method="wanda").save(tmp_path / "wanda.json")
    monkeypatch.setattr(sys, "argv", ["babelprune", "compare", str(tmp_path / "dense.json"), str(tmp_path / "wanda.json")])
    cli.main()
    captured = capsys.readouterr()
    assert "+20.0%" in captured.out
    assert "fr (only in the dense result)" in captured.err
