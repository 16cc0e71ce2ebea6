"""The pruning engine on tiny random models of every adapter family."""

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import MWandaConfig, PruneConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune.sequential import capture_block_inputs, run_block
from tests.tiny_models import TINY_FAMILIES, tiny_model

ALL_PARTS_OFF = MWandaConfig(language_aware=False, activation_prob=False)


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


@pytest.mark.parametrize("method", ["magnitude", "wanda", "mwanda", "sparsegpt"])
def test_each_layer_reaches_exactly_the_target_sparsity(method):
    model = loaded("llama")
    config = PruneConfig(method=method, sparsity=0.5, allocation="uniform")
    result = prune(model, config, calibration(model.model), progress=False)
    # Every row of every layer (widths 32 and 64) loses exactly half its weights.
    for name, linear in named_linears(model.model, adapter_for(model.model)).items():
        zeros_per_row = (weight_matrix(linear) == 0).sum(dim=1)
        assert torch.all(zeros_per_row == weight_matrix(linear).shape[1] // 2), name
    assert result.achieved_sparsity == pytest.approx(0.5)
    assert set(result.layer_sparsity.values()) == {0.5}


def test_two_four_pattern_keeps_two_of_every_four():
    model = loaded("qwen2")
    prune(model, PruneConfig(method="wanda", pattern="2:4"), calibration(model.model), progress=False)
    for name, linear in named_linears(model.model, adapter_for(model.model)).items():
        groups = (weight_matrix(linear) != 0).reshape(weight_matrix(linear).shape[0], -1, 4)
        assert torch.all(groups.sum(dim=-1) == 2), name


@pytest.mark.parametrize("allocation", ["owl", "cwl"])
def test_layerwise_allocation_has_mean_target_and_reaches_it(allocation):
    model = loaded("llama")
    result = prune(model, PruneConfig(method="wanda", sparsity=0.5, allocation=allocation, lam=0.1), calibration(model.model), progress=False)
    targets = result.block_sparsity_targets
    assert sum(targets) / len(targets) == pytest.approx(0.5, abs=1e-6)
    assert all(0.4 - 1e-9 <= t <= 0.6 + 1e-9 for t in targets)
    assert targets[0] != targets[1]  # the two blocks differ in their statistics


def test_same_seed_and_data_give_the_same_masks():
    first, second = loaded("mistral"), loaded("mistral")
    calib = calibration(first.model)
    for model in (first, second):
        prune(model, PruneConfig(method="mwanda", sparsity=0.6), calib, progress=False)
    for name, mask in masks_of(first.model).items():
        assert torch.equal(mask, masks_of(second.model)[name])


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


def test_magnitude_needs_no_calibration():
    model = loaded("opt")
    result = prune(model, PruneConfig(method="magnitude", sparsity=0.25), None, progress=False)
    assert result.calibration is None and result.achieved_sparsity == pytest.approx(0.25)


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


def test_wanda_without_calibration_is_refused():
    with pytest.raises(BabelpruneError, match="calibration"):
        prune(loaded("llama"), PruneConfig(method="wanda"), None, progress=False)


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


