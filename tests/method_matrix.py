"""Checks that every one-shot pruning method must pass, whatever its scores: the shared engine matrix.

tests/test_prune_engine.py runs `MATRIX` over every method in the registry
(`sorted(METHODS)`), so a method added to babelprune.prune.methods is checked
without a hand-written list to extend; tests/test_method_registry.py runs the
same functions on a method registered inside a test. Checks that need
hand-computed values for one method (Wanda's reference mask, M-Wanda with its
parts off) stay method-specific in the test files.

The tiny-model helpers (`loaded`, `calibration`, `masks_of`) live here so that
the matrix and the engine tests share them; tests/test_prune_engine.py
re-exports them for the tests that import them from there.
"""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune.methods import METHODS
from tests.tiny_models import tiny_model


def loaded(family: str, seed: int = 0) -> LoadedModel:
    model = tiny_model(family, seed=seed)
    return LoadedModel(model=model, tokenizer=None, spec=f"tiny-{family}", path=None, kind=adapter_for(model).kind)


def calibration(model, languages=("en", "fr", "sw"), per_language=2, seq_len=8, seed=0) -> Calibration:
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(4, vocab, (per_language * len(languages), seq_len), generator=generator)
    labels = tuple(lang for lang in languages for _ in range(per_language))
    return Calibration(ids, labels, "random-ids")


def masks_of(model) -> dict[str, torch.Tensor]:
    return {name: weight_matrix(linear) == 0 for name, linear in named_linears(model, adapter_for(model)).items()}


def _linears(model: LoadedModel) -> dict:
    return named_linears(model.model, adapter_for(model.model))


def each_layer_reaches_exactly_the_target_sparsity(method: str) -> None:
    model = loaded("llama")
    config = PruneConfig(method=method, sparsity=0.5, allocation="uniform")
    result = prune(model, config, calibration(model.model), progress=False)
    # Every row of every layer (widths 32 and 64) loses exactly half its weights.
    for name, linear in _linears(model).items():
        zeros_per_row = (weight_matrix(linear) == 0).sum(dim=1)
        assert torch.all(zeros_per_row == weight_matrix(linear).shape[1] // 2), name
    assert result.achieved_sparsity == pytest.approx(0.5)
    assert set(result.layer_sparsity.values()) == {0.5}


def two_four_pattern_keeps_two_of_every_four(method: str) -> None:
    model = loaded("qwen2")
    prune(model, PruneConfig(method=method, pattern="2:4"), calibration(model.model), progress=False)
    for name, linear in _linears(model).items():
        groups = (weight_matrix(linear) != 0).reshape(weight_matrix(linear).shape[0], -1, 4)
        assert torch.all(groups.sum(dim=-1) == 2), name


def same_data_give_the_same_masks(method: str) -> None:
    first, second = loaded("mistral"), loaded("mistral")
    calib = calibration(first.model)
    for model in (first, second):
        prune(model, PruneConfig(method=method, sparsity=0.6), calib, progress=False)
    for name, mask in masks_of(first.model).items():
        assert torch.equal(mask, masks_of(second.model)[name]), name


def calibration_is_required_exactly_when_the_method_says(method: str) -> None:
    # The registry's needs_calibration is what the engine and the CLI read to decide whether to
    # load calibration text; a method that reads statistics without declaring it would fail late.
    model = loaded("opt")
    config = PruneConfig(method=method, sparsity=0.25, allocation="uniform")
    if METHODS[method].needs_calibration:
        before = {name: weight_matrix(linear).clone() for name, linear in _linears(model).items()}
        with pytest.raises(BabelpruneError, match="calibration"):
            prune(model, config, None, progress=False)
        for name, linear in _linears(model).items():
            assert torch.equal(weight_matrix(linear), before[name]), name  # refused before any weight changed
    else:
        result = prune(model, config, None, progress=False)
        assert result.calibration is None and result.achieved_sparsity == pytest.approx(0.25)


def kept_weights_are_finite_and_the_model_still_runs(method: str) -> None:
    # A method may change the kept weights too (SparseGPT updates them): none may become inf or
    # NaN, and the pruned model still runs to finite outputs.
    model = loaded("gpt2")
    calib = calibration(model.model)
    prune(model, PruneConfig(method=method, sparsity=0.5, allocation="uniform"), calib, progress=False)
    for name, linear in _linears(model).items():
        assert torch.isfinite(weight_matrix(linear)).all(), name
    with torch.no_grad():
        logits = model.model(input_ids=calib.ids).logits
    assert torch.isfinite(logits).all()


MATRIX = (
    each_layer_reaches_exactly_the_target_sparsity,
    two_four_pattern_keeps_two_of_every_four,
    same_data_give_the_same_masks,
    calibration_is_required_exactly_when_the_method_says,
    kept_weights_are_finite_and_the_model_still_runs,
)
