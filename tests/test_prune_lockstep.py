"""The one-pass order over micro-batches of windows (babelprune.prune.lockstep) gives the one-batch result."""

import pytest
import torch
from greenlet import greenlet

from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.config import PruneConfig, ReconstructConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune import lockstep
from babelprune.prune.lockstep import run_block_in_lockstep
from babelprune.prune.sequential import StatsCollector, batch_spans, capture_block_inputs
from tests.test_prune_engine import calibration, loaded, masks_of
from tests.tiny_models import TINY_FAMILIES


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: weight_matrix(linear).clone() for name, linear in named_linears(model, adapter_for(model)).items()}


def assert_same_pruning(whole, batched, atol: float = 0.0) -> None:
    whole_masks, batched_masks = masks_of(whole.model), masks_of(batched.model)
    assert whole_masks.keys() == batched_masks.keys()
    for name, mask in whole_masks.items():
        assert torch.equal(mask, batched_masks[name]), name
    batched_weights = weights_of(batched.model)
    for name, weight in weights_of(whole.model).items():
        assert torch.allclose(weight, batched_weights[name], rtol=1e-4, atol=atol), name


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_micro_batches_give_the_one_batch_masks(family):
    whole, batched = loaded(family), loaded(family)
    calib = calibration(whole.model, per_language=3)  # 9 windows
    prune(whole, PruneConfig(method="wanda", calib_batch=None), calib, progress=False)
    prune(batched, PruneConfig(method="wanda", calib_batch=4), calib, progress=False)  # 4 + 4 + 1
    assert_same_pruning(whole, batched)
    # The pruned weights differ from the dense ones: the comparison above compares something.
    assert any(bool(mask.any()) for mask in masks_of(batched.model).values())


@pytest.mark.parametrize(
    "config",
    [
        PruneConfig(method="mwanda", allocation="cwl"),  # per-language norms, activity of the down-projection's input
        PruneConfig(method="mwanda", mwanda={"activation_prob": True}),
        PruneConfig(method="sparsegpt"),  # Hessians, weight updates
        PruneConfig(method="mwanda", reconstruct=ReconstructConfig()),  # Hessians, refit
        PruneConfig(method="wanda", language_weights={"sw": 3.0}),  # per-language token scale
        PruneConfig(method="wanda", pattern="2:4"),
    ],
    ids=["mwanda-cwl", "mwanda-activity", "sparsegpt", "mwanda-refit", "weighted", "2:4"],
)
@pytest.mark.parametrize("family", ["llama", "gemma3", "opt"])
def test_micro_batches_give_the_one_batch_result_for_every_statistic(family, config):
    whole, batched = loaded(family), loaded(family)
    calib = calibration(whole.model)  # 6 windows
    whole_result = prune(whole, config.model_copy(update={"calib_batch": None}), calib, progress=False)
    batched_result = prune(batched, config.model_copy(update={"calib_batch": 2}), calib, progress=False)
    assert_same_pruning(whole, batched, atol=1e-5)
    assert whole_result.block_sparsity_targets == batched_result.block_sparsity_targets


def test_each_linear_sees_micro_batches_only_and_every_window():
    model = loaded("llama")
    calib = calibration(model.model)  # 6 windows of 8 tokens
    seen: list[int] = []
    linear = next(iter(named_linears(model.model, adapter_for(model.model)).values()))
    handle = linear.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        prune(model, PruneConfig(method="wanda", calib_batch=4), calib, progress=False)
    finally:
        handle.remove()
    assert seen == [4, 2]


def test_an_error_in_the_action_stops_every_micro_batch(monkeypatch):
    started = []

    class Recorded(greenlet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(lockstep, "greenlet", Recorded)
    model = loaded("llama").model
    adapter = adapter_for(model)
    calib = calibration(model)
    inputs = capture_block_inputs(model, adapter, calib.ids)
    collector = StatsCollector(calib.language_set, False, 0.01)
    calls = []

    def fail_on_second(name, linear, stats):
        calls.append(name)
        if len(calls) == 2:
            raise ValueError("stop here")

    block = adapter.get_blocks(model)[0]
    with pytest.raises(ValueError, match="stop here"):
        run_block_in_lockstep(block, adapter, inputs, 0, collector, calib.rows(), batch_spans(6, 2), fail_on_second)
    assert len(started) == 3 and all(glet.dead for glet in started)  # no micro-batch is left waiting
    linears = adapter.block_linears(block).values()
    assert all(not linear._forward_pre_hooks for linear in linears)
    # The block still runs normally afterwards.
    outputs = run_block_in_lockstep(block, adapter, inputs, 0, collector, calib.rows(), batch_spans(6, 2), lambda *a: None)
    assert outputs.shape == inputs.hidden.shape


def test_the_lockstep_output_is_the_block_output():
    model = loaded("gemma3").model
    adapter = adapter_for(model)
    calib = calibration(model)
    inputs = capture_block_inputs(model, adapter, calib.ids)
    block = adapter.get_blocks(model)[0]
    with torch.no_grad():
        expected = block(inputs.hidden, *inputs.args[0], **inputs.kwargs[0])
    expected = expected[0] if isinstance(expected, tuple) else expected
    collector = StatsCollector(calib.language_set, False, 0.01)
    names = []
    out = run_block_in_lockstep(
        block, adapter, inputs, 0, collector, calib.rows(), batch_spans(6, 4), lambda name, linear, stats: names.append(name)
    )
    assert torch.allclose(out, expected, atol=1e-5)
    assert names == list(adapter.block_linears(block))  # each linear once, in the order the block applies them
