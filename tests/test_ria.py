"""RIA (relative importance and activations) and M-Wanda's RIA score. Expected values are worked out by hand."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from babelprune.errors import BabelpruneError
from babelprune.prune.config import MWandaConfig, PruneConfig
from babelprune.prune.kernels import (
    magnitude_scores,
    nm_mask,
    relative_importance,
    ria_scores,
    unstructured_mask,
)
from babelprune.prune.methods import METHODS, LayerTask
from babelprune.prune.mwanda import mwanda_scores
from babelprune.prune.stats import LanguageStats

T, F = True, False

# |W| = [[1, 3, 2], [1, 1, 6]]: row sums 6 and 8, column sums 2, 4 and 8.
W = torch.tensor([[1.0, -3.0, 2.0], [-1.0, 1.0, 6.0]])
# RI row 0: 1/6 + 1/2 = 2/3,  3/6 + 3/4 = 5/4,  2/6 + 2/8 = 7/12
# RI row 1: 1/8 + 1/2 = 5/8,  1/8 + 1/4 = 3/8,  6/8 + 6/8 = 3/2
RI = torch.tensor([[2 / 3, 5 / 4, 7 / 12], [5 / 8, 3 / 8, 3 / 2]])


def test_relative_importance_hand_case():
    assert torch.allclose(relative_importance(W), RI)


def test_ria_scores_raise_the_input_norm_to_a():
    # ||X|| = [1, 1, 9] -> sqrt = [1, 1, 3]: row 0 [2/3, 5/4, 7/4], row 1 [5/8, 3/8, 9/2].
    got = ria_scores(W, torch.tensor([1.0, 1.0, 9.0]))
    assert torch.allclose(got, torch.tensor([[2 / 3, 5 / 4, 7 / 4], [5 / 8, 3 / 8, 9 / 2]]))
    # a = 1 multiplies by the norm itself: row 0 [2/3, 5/4, 21/4].
    assert torch.allclose(ria_scores(W, torch.tensor([1.0, 1.0, 9.0]), exponent=1.0)[0], torch.tensor([2 / 3, 5 / 4, 21 / 4]))


def test_ria_mask_differs_from_magnitude_in_each_row():
    # One weight per row at s = 1/3. RIA with equal norms: row 0 drops 7/12 (column 2),
    # row 1 drops 3/8 (column 1). Magnitude drops column 0 in both rows (|1|, and the tie 1, 1 by index).
    ria_mask = unstructured_mask(ria_scores(W, torch.ones(3)), 1 / 3)
    assert torch.equal(ria_mask, torch.tensor([[F, F, T], [F, T, F]]))
    assert torch.equal(unstructured_mask(magnitude_scores(W), 1 / 3), torch.tensor([[T, F, F], [T, F, F]]))
    # With norms [1, 1, 9] column 2 weighs 3x: row 0 now drops 2/3 (column 0).
    assert torch.equal(unstructured_mask(ria_scores(W, torch.tensor([1.0, 1.0, 9.0])), 1 / 3), torch.tensor([[T, F, F], [F, T, F]]))


def test_ria_two_four_hand_case():
    # |W| = [[1, 2, 3, 4], [1, 4, 1, 2]]: row sums 10, 8; column sums 2, 6, 4, 6.
    # RI row 0: 0.1+0.5=0.6, 0.2+1/3=0.533, 0.3+0.75=1.05, 0.4+2/3=1.067 -> keep 2, 3.
    # RI row 1: 1/8+1/2=0.625, 1/2+2/3=1.167, 1/8+1/4=0.375, 1/4+1/3=0.583 -> keep 0, 1.
    # (Magnitude would prune columns 0 and 2 of row 1.)
    weight = torch.tensor([[1.0, 2.0, -3.0, 4.0], [1.0, -4.0, 1.0, 2.0]])
    expected = torch.tensor([[T, T, F, F], [F, F, T, T]])
    assert torch.equal(nm_mask(ria_scores(weight, torch.ones(4)), 2, 4), expected)
    # The registered method reaches the same mask from statistics: the identity's column norms are all 1.
    stats = LanguageStats(4, ["en"], track_activity=False)
    stats.update(torch.eye(4), "en")
    _, pruned = METHODS["ria"].fn(LayerTask(weight, stats, 0.5, PruneConfig(method="ria", pattern="2:4")))
    assert torch.equal(pruned, expected)


def test_ria_all_zero_row_and_column_score_zero():
    weight = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    # Row 0 and column 0 are zero; the one weight is all of its row and column: 1 + 1.
    assert torch.equal(relative_importance(weight), torch.tensor([[0.0, 0.0], [0.0, 2.0]]))


def test_ria_rejects_bad_exponent_and_width():
    with pytest.raises(BabelpruneError):
        ria_scores(W, torch.ones(3), exponent=-0.5)
    with pytest.raises(BabelpruneError):
        ria_scores(W, torch.ones(4))


def test_mwanda_ria_with_parts_off_is_ria():
    options = MWandaConfig(language_aware=False, score="ria")
    pooled = torch.tensor([1.0, 1.0, 9.0])
    assert torch.equal(mwanda_scores(W, pooled, None, None, options), ria_scores(W, pooled))
    # RIA's exponent is passed on (PruneConfig.ria_exponent): a = 1 gives RIA's a = 1 score, not a = 0.5's.
    with_a1 = mwanda_scores(W, pooled, None, None, options, exponent=1.0)
    assert torch.equal(with_a1, ria_scores(W, pooled, 1.0)) and not torch.equal(with_a1, ria_scores(W, pooled))


def test_mwanda_ria_uses_language_aware_norms_raised_to_a():
    # n^en = [1, 1, 3], n^fr = [1, 1, 1]: mu = [1, 1, 2], sigma = [0, 0, 1].
    # alpha = 2 -> f = [1, 1, 4], f^0.5 = [1, 1, 2]: row 0 [2/3, 5/4, 7/6], row 1 [5/8, 3/8, 3].
    per_language = torch.tensor([[1.0, 1.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    options = MWandaConfig(language_aware=True, alpha=2.0, score="ria")
    got = mwanda_scores(W, torch.ones(3), per_language, None, options)
    assert torch.allclose(got, torch.tensor([[2 / 3, 5 / 4, 7 / 6], [5 / 8, 3 / 8, 3.0]]))
    # Row 0 now drops column 0 (2/3), where plain RIA with equal norms dropped column 2.
    assert torch.equal(unstructured_mask(got, 1 / 3), torch.tensor([[T, F, F], [F, T, F]]))


def test_mwanda_method_reads_the_score_from_the_config():
    # Two languages fed one token each: n^en = [1, 1, 3], n^fr = [1, 1, 1] as above.
    stats = LanguageStats(3, ["en", "fr"])
    stats.update(torch.tensor([[1.0, 1.0, 3.0]]), "en")
    stats.update(torch.tensor([[1.0, 1.0, 1.0]]), "fr")
    config = PruneConfig(method="mwanda", sparsity=1 / 3, mwanda=MWandaConfig(alpha=2.0, score="ria"))
    _, pruned = METHODS["mwanda"].fn(LayerTask(W, stats, 1 / 3, config))
    assert torch.equal(pruned, torch.tensor([[T, F, F], [F, T, F]]))


def test_score_ria_needs_the_mwanda_method():
    with pytest.raises(BabelpruneError, match="M-Wanda's and has no effect with method=wanda; drop it, or use method=mwanda"):
        PruneConfig(method="wanda", mwanda=MWandaConfig(score="ria"))
    with pytest.raises(ValidationError, match="score"):
        MWandaConfig(score="sparsegpt")


# ----------------------------------------------------------------- through the engine and the command line


def test_ria_prunes_every_row_of_a_tiny_model_to_the_target():
    from babelprune.models.adapters import adapter_for, weight_matrix
    from babelprune.prune.engine import named_linears, prune
    from tests.test_prune_engine import calibration, loaded

    model = loaded("llama")
    prune(model, PruneConfig(method="ria", sparsity=0.5), calibration(model.model), progress=False)
    for name, linear in named_linears(model.model, adapter_for(model.model)).items():
        assert torch.all((weight_matrix(linear) == 0).sum(dim=1) == weight_matrix(linear).shape[1] // 2), name


def test_mwanda_score_ria_with_every_part_off_gives_ria_masks_on_a_tiny_model():
    from babelprune.models.adapters import adapter_for, weight_matrix
    from babelprune.prune.engine import named_linears, prune
    from tests.test_prune_engine import calibration, loaded

    def masks(config):
        model = loaded("qwen2")
        prune(model, config, calibration(model.model), progress=False)
        return {name: weight_matrix(m) == 0 for name, m in named_linears(model.model, adapter_for(model.model)).items()}

    off = MWandaConfig(language_aware=False, activation_prob=False, score="ria")
    # uniform: RIA's own allocation (mwanda's default, CWL, would move sparsity between blocks)
    ria_masks, mwanda_masks = masks(PruneConfig(method="ria")), masks(PruneConfig(method="mwanda", allocation="uniform", mwanda=off))
    wanda_masks = masks(PruneConfig(method="wanda"))
    assert all(torch.equal(ria_masks[name], mwanda_masks[name]) for name in ria_masks)
    assert any(not torch.equal(ria_masks[name], wanda_masks[name]) for name in ria_masks)  # RIA is not Wanda


def test_cli_refuses_score_ria_without_mwanda(monkeypatch, capsys, tmp_path):
    from tests.cli_runner import run_cli

    code, _, err = run_cli(monkeypatch, capsys, "prune", "--out", str(tmp_path / "out"), "--method", "wanda", "--score", "ria")
    assert code == 2
    assert "--method mwanda" in err and len(err.strip().splitlines()) == 1
