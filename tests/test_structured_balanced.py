"""Balanced structured importance: each language's activation scores normalised to sum 1, then averaged.

Checked by hand on a two-input example, and on a tiny Llama against an
independent computation from the linears' inputs captured per language.
"""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import StructuredConfig
from babelprune.prune.stats import LanguageStats
from babelprune.prune.structured import structured_prune
from babelprune.prune.structured.importance import activation_importance, balance_languages, balanced_importance
from babelprune.prune.structured.selection import Importance
from babelprune.models.base import LoadedModel
from tests.tiny_models import tiny_model


def _scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Activation score of each output row of `weight` taken as a unit: sum_j |w_uj| n_j."""
    return (weight.abs().double() * norms.unsqueeze(0)).sum(dim=1)


def test_balanced_scores_by_hand_with_different_token_counts_and_scales():
    # Two units (rows of W), each reading one input. en: 4 tokens (1, 0); fr: 1 token (10, 20).
    weight = torch.eye(2)
    stats = LanguageStats(2, ["en", "fr"], track_activity=False)
    stats.update(torch.tensor([[1.0, 0.0]] * 4), "en")
    stats.update(torch.tensor([[10.0, 20.0]]), "fr")
    norms = stats.per_language_norm()  # rms per language: en (1, 0), fr (10, 20)
    assert norms.tolist() == [[1.0, 0.0], [10.0, 20.0]]
    per_language = {lang: Importance(neurons=[_scores(weight, norms[i])]) for i, lang in enumerate(["en", "fr"])}
    balanced = balance_languages(per_language).neurons[0]
    # en: (1, 0) / 1 = (1, 0); fr: (10, 20) / 30 = (1/3, 2/3); mean: (2/3, 1/3).
    assert balanced.tolist() == pytest.approx([2 / 3, 1 / 3])
    # The activation sum (shared setting) is (11, 20): fr's larger activations decide, and the order flips.
    summed = (per_language["en"] + per_language["fr"]).neurons[0]
    assert summed.tolist() == pytest.approx([11.0, 20.0])
    assert int(balanced.argmax()) == 0 and int(summed.argmax()) == 1
    # Pooling the 5 tokens (Wanda's norm over all tokens): sqrt(4 + 100) and sqrt(400), also unit 1 first.
    pooled = _scores(weight, stats.pooled_norm())
    assert pooled.tolist() == pytest.approx([104**0.5, 20.0])


def test_each_language_is_normalised_over_the_whole_model_not_per_block():
    en = Importance(neurons=[torch.tensor([1.0, 3.0]), torch.tensor([4.0, 2.0])])  # sum 10
    fr = Importance(neurons=[torch.tensor([5.0, 5.0]), torch.tensor([0.0, 10.0])])  # sum 20
    out = balance_languages({"en": en, "fr": fr})
    # (en / 10 + fr / 20) / 2
    assert out.neurons[0].tolist() == pytest.approx([(0.1 + 0.25) / 2, (0.3 + 0.25) / 2])
    assert out.neurons[1].tolist() == pytest.approx([(0.4 + 0.0) / 2, (0.2 + 0.5) / 2])
    assert float(sum(n.sum() for n in out.neurons)) == pytest.approx(1.0)
    heads = balance_languages({"en": Importance(heads=[torch.tensor([2.0, 6.0])]), "fr": Importance(heads=[torch.tensor([0.0, 0.0])])})
    assert heads.heads[0].tolist() == pytest.approx([0.125, 0.375])  # a language whose scores are all 0 adds 0
    with pytest.raises(BabelpruneError, match="at least one calibration language"):
        balance_languages({})


def _calibration() -> Calibration:
    # en 3 windows of varied tokens, fr 1 window repeating one token: different token counts and activation scales.
    ids = torch.randint(4, 128, (4, 10), generator=torch.Generator().manual_seed(3))
    ids[3] = 7
    return Calibration(ids, ("en", "en", "en", "fr"), "toy")


def _by_hand_neurons(model, calibration: Calibration) -> list[torch.Tensor]:
    """Balanced neuron scores from the gate, up and down inputs captured per language (independent of the library)."""
    adapter = adapter_for(model)
    blocks = adapter.get_blocks(model)
    per_language = {}
    for lang, rows in calibration.rows().items():
        inputs: dict[tuple[int, str], torch.Tensor] = {}
        handles = []
        for b, block in enumerate(blocks):
            for name, linear in adapter.ffn_linears(block).items():
                def hook(module, args, key=(b, name)):
                    inputs[key] = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                handles.append(linear.register_forward_pre_hook(hook))
        with torch.no_grad():
            model(input_ids=calibration.ids[rows], use_cache=False)
        for handle in handles:
            handle.remove()
        scores = []
        for b, block in enumerate(blocks):
            ffn = adapter.ffn_linears(block)
            rms = {name: inputs[b, name].square().mean(dim=0).sqrt() for name in ffn}  # mean over this language's tokens
            gate = (weight_matrix(ffn["gate"]).abs().double() * rms["gate"]).sum(dim=1)
            up = (weight_matrix(ffn["up"]).abs().double() * rms["up"]).sum(dim=1)
            down = (weight_matrix(ffn["down"]).abs().double() * rms["down"]).sum(dim=0)
            scores.append(gate + up + down)
        total = sum(s.sum() for s in scores)
        per_language[lang] = [s / total for s in scores]
    n = len(per_language)
    return [sum(per_language[lang][b] for lang in per_language) / n for b in range(len(blocks))]


def test_balanced_matches_an_independent_computation_on_a_tiny_llama():
    model = tiny_model("llama").eval()
    calibration = _calibration()
    got = balanced_importance(model, calibration, {"ffn"}, batch_size=1)
    expected = _by_hand_neurons(model, calibration)
    for mine, theirs in zip(got.neurons, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-9)
    # The shared activation ranking sums unnormalised per-language scores: not proportional to the balanced one.
    summed = activation_importance(model, calibration, {"ffn"}, batch_size=1)
    plain = torch.cat((summed["en"] + summed["fr"]).neurons)
    ratio = torch.cat(got.neurons) / plain
    assert float(ratio.max() / ratio.min()) > 1.001


def test_balanced_prunes_in_the_shared_setting_and_is_refused_per_language():
    loaded = LoadedModel(model=tiny_model("llama"), tokenizer=None, spec="llama", path=None, kind="causal-lm")
    result = structured_prune(loaded, {"ffn"}, "balanced", 0.25, _calibration(), progress=False)
    assert result.importance == "balanced" and result.achieved_sparsity == pytest.approx(0.25, abs=0.01)
    with pytest.raises(BabelpruneError, match="weighs the calibration languages equally in one shared ranking"):
        StructuredConfig(units=["ffn"], importance="balanced", setting="per-language")
