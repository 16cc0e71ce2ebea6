"""--language-budget minimax: the weight update, the kept round, and refused inputs."""

import math

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.budget import next_weights, prune_with_language_budget
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears, prune
from tests.test_prune_engine import calibration, loaded


def test_the_weights_grow_with_the_loss_and_keep_a_mean_of_one():
    # a lost nothing, b lost most: b is multiplied by e, then both are divided by the mean (1 + e) / 2.
    got = next_weights({"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 0.3}, step=1.0)
    assert got == pytest.approx({"a": 2 / (1 + math.e), "b": 2 * math.e / (1 + math.e)})


def test_holdout_windows_are_each_languages_last_ones():
    calib = calibration(loaded("llama").model, per_language=3)
    fit, held = calib.split_holdout(1)
    assert fit.languages == ("en", "en", "fr", "fr", "sw", "sw")
    assert torch.equal(held.ids, calib.ids[[2, 5, 8]])
    with pytest.raises(BabelpruneError, match="too few to hold 3 out"):
        calib.split_holdout(3)


def test_the_kept_round_is_the_one_with_the_lowest_worst_loss_and_its_weights_are_the_models():
    subject = loaded("llama")
    fit, held = calibration(subject.model, per_language=3, seq_len=12).split_holdout(1)
    config = PruneConfig(method="sparsegpt", sparsity=0.6)
    result = prune_with_language_budget(subject, config, fit, held, rounds=3, progress=False)
    rounds = result.language_budget["rounds"]
    assert len(rounds) == 3 and rounds[0]["weights"] == {"en": 1.0, "fr": 1.0, "sw": 1.0}
    worst = [max(r["losses"].values()) for r in rounds]
    chosen = result.language_budget["chosen_round"]
    assert worst[chosen - 1] == min(worst)
    assert result.language_budget["unit"] == "bits per token"  # the tiny model has no tokenizer to count bytes
    # The model holds exactly what pruning the dense model with the kept round's weights gives.
    again = loaded("llama")
    prune(again, config.model_copy(update={"language_weights": rounds[chosen - 1]["weights"]}), fit, progress=False)
    for name, linear in named_linears(again.model, adapter_for(again.model)).items():
        other = named_linears(subject.model, adapter_for(subject.model))[name]
        assert torch.allclose(weight_matrix(linear), weight_matrix(other), atol=1e-4), name


def test_later_rounds_weigh_the_languages_that_lost_most_more():
    subject = loaded("qwen2")
    fit, held = calibration(subject.model, per_language=3, seq_len=12).split_holdout(1)
    result = prune_with_language_budget(subject, PruneConfig(method="wanda", sparsity=0.7), fit, held, rounds=2, progress=False)
    first, second = result.language_budget["rounds"]
    most, least = max(first["losses"], key=first["losses"].get), min(first["losses"], key=first["losses"].get)
    assert second["weights"][most] > second["weights"][least]


def test_a_budget_needs_two_languages_and_held_out_windows():
    subject = loaded("llama")
    one = calibration(subject.model, languages=("en",), per_language=3)
    fit, held = one.split_holdout(1)
    with pytest.raises(BabelpruneError, match="at least two"):
        prune_with_language_budget(subject, PruneConfig(), fit, held, progress=False)
    fit, held = calibration(subject.model, per_language=3).split_holdout(1)
    with pytest.raises(BabelpruneError, match="held-out"):
        prune_with_language_budget(subject, PruneConfig(), fit, None, progress=False)
    with pytest.raises(BabelpruneError, match="--setting shared"):
        prune_with_language_budget(subject, PruneConfig(setting="per-language"), fit, held, progress=False)
    with pytest.raises(BabelpruneError, match="magnitude pruning does not read"):
        prune_with_language_budget(subject, PruneConfig(method="magnitude"), fit, held, progress=False)
