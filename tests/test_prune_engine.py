"""The pruning engine on tiny random models of every adapter family."""

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import MWandaConfig, PruneConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune.methods import METHODS
from babelprune.prune.sequential import capture_block_inputs, run_block
from tests.method_matrix import MATRIX, calibration, loaded, masks_of  # noqa: F401 (re-exported to other tests)
from tests.tiny_models import TINY_FAMILIES, tiny_model

ALL_PARTS_OFF = MWandaConfig(language_aware=False, activation_prob=False)


def reference_wanda(model, calib: Calibration, sparsity: float) -> dict[str, torch.Tensor]:
    """Wanda as its reference code does it, written out independently: per block, gather every
    linear's input norm on the dense block, prune each row's lowest |W| * norm, run the block again."""
    adapter = adapter_for(model)
    inputs = capture_block_inputs(model, adapter, calib.ids)
    masks = {}
    with torch.no_grad():
        for index, block in enumerate(adapter.get_blocks(model)):
            linears = adapter.block_linears(block)
            norms = {}
            hooks = [
                linear.register_forward_pre_hook(
                    lambda mod, args, name=name: norms.__setitem__(name, args[0].reshape(-1, args[0].shape[-1]).double().norm(dim=0).float())
                )
                for name, linear in linears.items()
            ]
            run_block(block, adapter, inputs, index)
            for hook in hooks:
                hook.remove()
            for name, linear in linears.items():
                weight = weight_matrix(linear)
                scores = weight.abs() * norms[name].unsqueeze(0)
                k = int(sparsity * weight.shape[1])
                order = scores.argsort(dim=1, stable=True)[:, :k]
                weight.scatter_(1, order, 0.0)
                masks[f"{index}.{name}"] = weight == 0
            inputs.hidden = run_block(block, adapter, inputs, index)
    return masks


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_captured_inputs_reproduce_the_models_own_forward(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    ids = calibration(model).ids
    inputs = capture_block_inputs(model, adapter, ids)
    with torch.no_grad():
        for index, block in enumerate(adapter.get_blocks(model)):
            inputs.hidden = run_block(block, adapter, inputs, index)
        extra = {"use_cache": False} if adapter.decoder else {}
        expected = adapter.base_model(model)(input_ids=ids, output_hidden_states=True, **extra).hidden_states[-1]
    final_norm = adapter.get_final_norm(model)
    got = final_norm(inputs.hidden) if final_norm is not None else inputs.hidden
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_two_pass_wanda_gives_the_reference_mask(family):
    reference_model = tiny_model(family)
    calib = calibration(reference_model)
    expected = reference_wanda(reference_model, calib, 0.5)
    model = loaded(family)
    prune(model, PruneConfig(method="wanda", sparsity=0.5, order="two-pass"), calib, progress=False)
    got = masks_of(model.model)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "bert"])
def test_mwanda_with_every_part_off_is_exactly_wanda(family):
    wanda_model, mwanda_model = loaded(family), loaded(family)
    calib = calibration(wanda_model.model)
    prune(wanda_model, PruneConfig(method="wanda", sparsity=0.5), calib, progress=False)
    prune(mwanda_model, PruneConfig(method="mwanda", sparsity=0.5, allocation="uniform", mwanda=ALL_PARTS_OFF), calib, progress=False)
    for name, mask in masks_of(wanda_model.model).items():
        assert torch.equal(mask, masks_of(mwanda_model.model)[name]), name


# Every registered method, read from the registry: a method added to babelprune.prune.methods runs
# these without this file changing.
@pytest.mark.parametrize("check", MATRIX, ids=lambda check: check.__name__)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_passes_the_shared_matrix(method, check):
    check(method)


@pytest.mark.parametrize("allocation", ["owl", "cwl"])
def test_layerwise_allocation_has_mean_target_and_reaches_it(allocation):
    model = loaded("llama")
    result = prune(model, PruneConfig(method="wanda", sparsity=0.5, allocation=allocation, lam=0.1), calibration(model.model), progress=False)
    targets = result.block_sparsity_targets
    assert sum(targets) / len(targets) == pytest.approx(0.5, abs=1e-6)
    assert all(0.4 - 1e-9 <= t <= 0.6 + 1e-9 for t in targets)
    assert targets[0] != targets[1]  # the two blocks differ in their statistics


def test_per_language_setting_keeps_dense_weights_and_a_mask_per_language():
    model = loaded("llama")
    dense = {name: weight_matrix(m).clone() for name, m in named_linears(model.model, adapter_for(model.model)).items()}
    result = prune(model, PruneConfig(method="wanda", sparsity=0.5, setting="per-language"), calibration(model.model), progress=False)
    assert list(result.mask_bank) == ["en", "fr", "sw", "pooled"]  # the pooled mask serves uncalibrated languages
    for name, linear in named_linears(model.model, adapter_for(model.model)).items():
        assert torch.equal(weight_matrix(linear), dense[name])  # weights restored
        for masks in result.mask_bank.values():
            assert float(masks[name].float().mean()) == pytest.approx(0.5)
    # Different calibration text gives different masks somewhere.
    assert any(not torch.equal(result.mask_bank["en"][n], result.mask_bank["sw"][n]) for n in dense)


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(method="wanda", pattern="3:5"), "divisible by 5"),
        (dict(method="sparsegpt", setting="per-language"), "sparsegpt"),
        # refused by the config itself now, before the engine sees it
        (dict(method="wanda", pattern="2:4", allocation="owl"), "fixes every block's sparsity"),
    ],
)
def test_bad_requests_fail_before_any_weight_changes(config, message):
    model = loaded("llama")
    before = {name: weight_matrix(m).clone() for name, m in named_linears(model.model, adapter_for(model.model)).items()}
    with pytest.raises(BabelpruneError, match=message):
        prune(model, PruneConfig(**config), calibration(model.model), progress=False)
    for name, linear in named_linears(model.model, adapter_for(model.model)).items():
        assert torch.equal(weight_matrix(linear), before[name])


def test_cwl_needs_two_languages():
    model = loaded("llama")
    with pytest.raises(BabelpruneError, match="two languages"):
        prune(model, PruneConfig(method="mwanda", allocation="cwl"), calibration(model.model, languages=("en",)), progress=False)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_two_pass_sparsegpt_in_small_batches_gives_the_same_weights(family):
    # Each batch's Hessian is counted once, however many batches there are.
    whole, batched = loaded(family), loaded(family)
    calib = calibration(whole.model)
    prune(whole, PruneConfig(method="sparsegpt", order="two-pass", calib_batch=None), calib, progress=False)
    prune(batched, PruneConfig(method="sparsegpt", order="two-pass", calib_batch=4), calib, progress=False)
    batched_linears = named_linears(batched.model, adapter_for(batched.model))
    for name, linear in named_linears(whole.model, adapter_for(whole.model)).items():
        assert torch.allclose(weight_matrix(linear), weight_matrix(batched_linears[name]), atol=1e-5), name


@pytest.mark.parametrize("family", ["llama", "gemma3", "bert", "opt", "bloom"])
def test_two_pass_in_small_batches_gives_the_same_masks(family):
    whole, batched = loaded(family), loaded(family)
    calib = calibration(whole.model)  # 6 windows
    prune(whole, PruneConfig(method="wanda", order="two-pass", calib_batch=None), calib, progress=False)
    prune(batched, PruneConfig(method="wanda", order="two-pass", calib_batch=4), calib, progress=False)  # 4 + 2
    for name, mask in masks_of(whole.model).items():
        assert torch.equal(mask, masks_of(batched.model)[name]), name




def test_zeros_are_counted_as_equality_with_zero_counts_them():
    from babelprune.prune.engine import zeros_in

    weight = torch.tensor([[0.0, -0.0, 1.0], [float("nan"), 2.0, 0.0]])
    assert zeros_in(weight) == int((weight == 0).sum()) == 3  # -0.0 is a zero, NaN is not
    assert zeros_in(weight.to(torch.bfloat16)) == 3


@pytest.mark.parametrize("method,refit", [("wanda", False), ("magnitude", False), ("sparsegpt", False), ("wanda", True)])
@pytest.mark.parametrize("zeros_first", [False, True])
def test_recorded_sparsity_is_the_share_of_zeros_left_in_each_layer(method, refit, zeros_first):
    # Mask-only methods on a weight without zeros take the count from the mask; every other case counts the weight.
    from tests.method_matrix import calibration, loaded

    model = loaded("llama")
    linears = named_linears(model.model, adapter_for(model.model))
    # At 25% a layer whose every third input is already zero keeps some of its zeros outside the mask.
    if zeros_first:  # an already sparse model: a third of one layer's weights, and a single entry of another
        first, second = list(linears.values())[:2]
        weight_matrix(first)[:, ::3] = 0
        weight_matrix(second)[0, 0] = 0
    starting = sum(int((weight_matrix(m) == 0).sum()) for m in linears.values()) / sum(
        weight_matrix(m).numel() for m in linears.values())
    config = PruneConfig(method=method, sparsity=0.25, allocation="uniform", reconstruct={} if refit else None)
    result = prune(model, config, calibration(model.model), progress=False)
    counted = {name: round(float((weight_matrix(m) == 0).sum()) / weight_matrix(m).numel(), 6) for name, m in linears.items()}
    assert result.layer_sparsity == counted
    assert result.starting_sparsity == pytest.approx(starting)
    total = sum(weight_matrix(m).numel() for m in linears.values())
    assert result.achieved_sparsity == pytest.approx(sum(int((weight_matrix(m) == 0).sum()) for m in linears.values()) / total)
