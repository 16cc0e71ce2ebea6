"""--reconstruct in the pruning engine: the refit an independent computation gives, the mask kept, errors refused."""

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.config import PruneConfig, ReconstructConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune.sequential import capture_block_inputs
from tests.test_prune_engine import calibration, loaded, masks_of

EXACT = ReconstructConfig(solver="exact", damp=1e-8)


def _block0_q_inputs(model, calib) -> torch.Tensor:
    """(tokens, in): what block 0's q projection reads on the dense model, captured by a hook."""
    adapter = adapter_for(model)
    block = adapter.get_blocks(model)[0]
    seen = []
    q = adapter.block_linears(block)["q"]
    handle = q.register_forward_pre_hook(lambda module, args: seen.append(args[0].reshape(-1, args[0].shape[-1]).double()))
    try:
        inputs = capture_block_inputs(model, adapter, calib.ids)
        block(inputs.hidden, *inputs.args[0], **inputs.kwargs[0])
    finally:
        handle.remove()
    return seen[0]


def test_the_first_layer_is_refitted_to_the_least_squares_solution_on_its_support():
    subject = loaded("llama")
    calib = calibration(subject.model, per_language=2, seq_len=8)
    dense_q = weight_matrix(adapter_for(subject.model).block_linears(adapter_for(subject.model).get_blocks(subject.model)[0])["q"]).double().clone()
    x = _block0_q_inputs(subject.model, calib)  # (T, in), read before pruning
    result = prune(subject, PruneConfig(method="wanda", sparsity=0.5, reconstruct=EXACT), calib, progress=False)
    refitted = weight_matrix(named_linears(subject.model, adapter_for(subject.model))["0.q"]).double()
    for row in range(dense_q.shape[0]):
        support = (refitted[row] != 0).nonzero().squeeze(1)
        target = (x @ dense_q[row]).unsqueeze(1)  # (T, 1) dense outputs
        expected = torch.linalg.lstsq(x[:, support], target).solution.squeeze(1)
        assert torch.allclose(refitted[row, support], expected, atol=1e-3, rtol=1e-3)
    before, after = result.refit_errors["0.q"]
    assert after < before


def test_the_refit_keeps_the_methods_sparsity_and_lowers_every_layers_calibration_error():
    plain, refit = loaded("qwen2"), loaded("qwen2")
    calib = calibration(plain.model)
    prune(plain, PruneConfig(method="wanda", sparsity=0.5), calib, progress=False)
    result = prune(refit, PruneConfig(method="wanda", sparsity=0.5, reconstruct=ReconstructConfig()), calib, progress=False)
    first_plain, first_refit = masks_of(plain.model), masks_of(refit.model)
    assert {name: int(mask.sum()) for name, mask in first_refit.items()} == {name: int(mask.sum()) for name, mask in first_plain.items()}
    assert result.refit_errors.keys() == first_refit.keys()
    assert all(after < before for before, after in result.refit_errors.values())


def test_shrink_one_gives_back_the_plain_method_exactly():
    plain, refit = loaded("llama"), loaded("llama")
    calib = calibration(plain.model)
    prune(plain, PruneConfig(method="ria", sparsity=0.5), calib, progress=False)
    prune(refit, PruneConfig(method="ria", sparsity=0.5, reconstruct=ReconstructConfig(shrink=1.0)), calib, progress=False)
    for name, linear in named_linears(plain.model, adapter_for(plain.model)).items():
        other = named_linears(refit.model, adapter_for(refit.model))[name]
        assert torch.equal(weight_matrix(linear), weight_matrix(other)), name


def test_magnitude_with_reconstruct_reads_calibration_and_two_pass_works_too():
    subject = loaded("gemma3")
    calib = calibration(subject.model)
    result = prune(subject, PruneConfig(method="magnitude", sparsity=0.5, order="two-pass", reconstruct=ReconstructConfig()), calib, progress=False)
    assert result.calibration is not None and result.refit_errors
    with pytest.raises(BabelpruneError, match="calibration"):
        prune(loaded("gemma3"), PruneConfig(method="magnitude", reconstruct=ReconstructConfig()), None, progress=False)


def test_reconstruct_with_the_per_language_setting_is_refused_in_one_sentence():
    with pytest.raises(BabelpruneError, match="per-language setting keeps one set of dense weights"):
        PruneConfig(method="wanda", setting="per-language", reconstruct=ReconstructConfig())


def test_language_weights_for_an_uncalibrated_language_are_refused_before_any_weight_changes():
    subject = loaded("llama")
    before = {name: weight_matrix(m).clone() for name, m in named_linears(subject.model, adapter_for(subject.model)).items()}
    with pytest.raises(BabelpruneError, match="does not have"):
        prune(subject, PruneConfig(method="sparsegpt", language_weights={"zz": 2.0}), calibration(subject.model), progress=False)
    for name, m in named_linears(subject.model, adapter_for(subject.model)).items():
        assert torch.equal(weight_matrix(m), before[name])


def test_a_language_weight_changes_the_sparsegpt_result_and_is_recorded():
    equal, weighted = loaded("llama"), loaded("llama")
    calib = calibration(equal.model)
    prune(equal, PruneConfig(method="sparsegpt"), calib, progress=False)
    result = prune(weighted, PruneConfig(method="sparsegpt", language_weights={"sw": 4.0}), calib, progress=False)
    assert result.language_shares == pytest.approx({"en": 1 / 6, "fr": 1 / 6, "sw": 4 / 6})
    differs = [
        not torch.equal(weight_matrix(a), weight_matrix(b))
        for a, b in zip(named_linears(equal.model, adapter_for(equal.model)).values(), named_linears(weighted.model, adapter_for(weighted.model)).values())
    ]
    assert any(differs)
