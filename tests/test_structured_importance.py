"""Importance scores of heads, neurons and blocks, checked by hand or by an independent computation."""

from __future__ import annotations

import math

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.calibration import Calibration
from babelprune.prune.structured.importance import (
    activation_importance,
    causal_lm_loss,
    gradient_importance,
    magnitude_importance,
    masked_token_loss,
)
from tests.tiny_models import tiny_model


def _calibration(rows_per_language: int = 2, seq_len: int = 12, languages=("en", "fr"), seed: int = 0) -> Calibration:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 128, (rows_per_language * len(languages), seq_len), generator=generator)
    return Calibration(ids, tuple(lang for lang in languages for _ in range(rows_per_language)), "toy")


def test_magnitude_of_heads_and_neurons_with_known_weights():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    block = adapter.get_blocks(model)[0]
    linears = adapter.block_linears(block)
    with torch.no_grad():
        # kv group 0 = query heads 0, 1 (q rows 0..15, o columns 0..15) and kv head 0 (k, v rows 0..7): all 0.5.
        weight_matrix(linears["q"])[:16] = 0.5
        weight_matrix(linears["k"])[:8] = 0.5
        weight_matrix(linears["v"])[:8] = 0.5
        weight_matrix(linears["o"])[:, :16] = 0.5
        # neuron 3: gate row 1, up row 2, down column 3.
        weight_matrix(linears["gate"])[3] = 1.0
        weight_matrix(linears["up"])[3] = 2.0
        weight_matrix(linears["down"])[:, 3] = 3.0
    groups = magnitude_importance(model, {"heads", "ffn"}, gqa="groups")
    assert groups.heads[0][0].item() == pytest.approx(0.5 * math.sqrt(1536))
    assert groups.neurons[0][3].item() == pytest.approx(math.sqrt(32 * (1 + 4 + 9)))
    query = magnitude_importance(model, {"heads"}, gqa="query")
    assert query.heads[0][1].item() == pytest.approx(0.5 * math.sqrt(512))  # q rows 8..15 and o columns 8..15
    assert query.neurons is None and len(query.heads[0]) == 4
    blocks = magnitude_importance(model, {"blocks"})
    all_weights = sum(weight_matrix(m).double().square().sum() for m in linears.values())
    assert blocks.blocks[0].item() == pytest.approx(math.sqrt(all_weights.item()))


def test_unknown_or_mixed_units_are_refused():
    model = tiny_model("llama")
    with pytest.raises(BabelpruneError, match="Unknown structured units"):
        magnitude_importance(model, {"layers"})
    with pytest.raises(BabelpruneError, match="run of their own"):
        magnitude_importance(model, {"blocks", "ffn"})


def test_gradient_importance_is_zero_for_a_head_that_does_not_reach_the_loss():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    with torch.no_grad():
        weight_matrix(adapter.attention_linears(adapter.get_blocks(model)[1])["o"])[:, 16:24] = 0  # query head 2 of block 1
    result = gradient_importance(model, _calibration(), {"heads", "ffn"}, gqa="query")
    assert set(result) == {"en", "fr"}
    for importance in result.values():
        assert importance.heads[1][2].item() == 0.0
        assert (importance.heads[1][[0, 1, 3]] > 0).all()
        for per_block in importance.heads:  # Michel et al.: L2-normalised within each block
            assert per_block.norm().item() == pytest.approx(1.0)


def _loss_with_head_scale(model, ids, o_linear, head: int, scale: float) -> float:
    weight = weight_matrix(o_linear)
    saved = weight[:, head * 8 : head * 8 + 8].clone()
    with torch.no_grad():
        weight[:, head * 8 : head * 8 + 8] *= scale
        loss = causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False})
        weight[:, head * 8 : head * 8 + 8] = saved
    return float(loss.sum())


def test_gradient_head_importance_matches_finite_differences():
    # Scaling a head's o columns by xi is the same as gating its output: dL/dxi by central differences.
    model = tiny_model("llama").double()
    adapter = adapter_for(model)
    calibration = _calibration(rows_per_language=1, languages=("en",))
    o_linear = adapter.attention_linears(adapter.get_blocks(model)[0])["o"]
    eps = 1e-3  # parts of the forward (rotary tables) stay float32, so smaller steps hit rounding noise
    slopes = torch.tensor([
        abs(_loss_with_head_scale(model, calibration.ids, o_linear, h, 1 + eps)
            - _loss_with_head_scale(model, calibration.ids, o_linear, h, 1 - eps)) / (2 * eps)
        for h in range(4)
    ], dtype=torch.float64)
    heads = gradient_importance(model, calibration, {"heads"}, gqa="query")["en"].heads[0]
    torch.testing.assert_close(heads, slopes / slopes.norm(), atol=1e-4, rtol=1e-4)


def test_neuron_gradient_takes_each_samples_magnitude_before_summing():
    # Block 1's FFN reads a hand-set activation X (2 samples, T, 64) and the loss of sample n is the sum over
    # positions of output channel 0 of its down projection: L_n = sum_t sum_j W[0, j] * xi_nj * X[n, t, j].
    # So dL_n/dxi_nj = W[0, j] * sum_t X[n, t, j]; only position 0 is non-zero.
    #   neuron 0: W = 1,  X = (+2, -2) -> (+2, -2): |.| summed 4 (the sum before |.| would give 0)
    #   neuron 1: W = 3,  X = (+1, +1) -> (+3, +3): 6
    #   neuron 2: W = -1, X = (+1, -3) -> (-1, +3): 4 (before: 2)
    # Per-block L2 normalisation divides by sqrt(16 + 36 + 16).
    model = tiny_model("llama").double()
    adapter = adapter_for(model)
    down = adapter.ffn_linears(adapter.get_blocks(model)[1])["down"]
    calibration = _calibration(rows_per_language=2, languages=("en",))
    activation = torch.zeros(2, calibration.ids.shape[1], 64, dtype=torch.float64)
    activation[:, 0, :3] = torch.tensor([[2.0, 1.0, 1.0], [-2.0, 1.0, -3.0]], dtype=torch.float64)
    with torch.no_grad():
        weight_matrix(down)[0, :3] = torch.tensor([1.0, 3.0, -1.0], dtype=torch.float64)
    outputs = []
    # Registered before the importance's own gate hook, so the gate multiplies the hand-set activation.
    handles = [down.register_forward_pre_hook(lambda module, args: (activation, *args[1:])),
               down.register_forward_hook(lambda module, args, output: outputs.append(output))]

    def channel_zero(model, batch):
        model(**batch)
        return outputs[-1][:, :, 0].sum(dim=1)  # (N,)

    try:
        neurons = gradient_importance(model, calibration, {"ffn"}, loss_fn=channel_zero, batch_size=2)["en"].neurons
    finally:
        for handle in handles:
            handle.remove()
    expected = torch.zeros(64, dtype=torch.float64)
    expected[:3] = torch.tensor([4.0, 6.0, 4.0], dtype=torch.float64) / math.sqrt(68.0)
    torch.testing.assert_close(neurons[1], expected, atol=1e-12, rtol=1e-9)
    assert torch.equal(neurons[0], torch.zeros(64, dtype=torch.float64))  # block 0 never reaches this loss


def _loss_per_sample_with_neuron_scale(model, ids, down, neuron: int, scale: float) -> torch.Tensor:
    column = weight_matrix(down)[:, neuron]
    saved = column.clone()
    with torch.no_grad():
        column *= scale
        loss = causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False})
        column.copy_(saved)
    return loss  # (N,)


def test_gradient_neuron_importance_matches_per_sample_finite_differences():
    # Scaling a neuron's down column by xi is the same as gating its activation: dL_n/dxi per sample
    # by central differences, |.| per sample, summed, then normalised over the block. GPT-2 (a Conv1D
    # down projection) runs wholly in float64, so the differences are exact to rounding.
    model = tiny_model("gpt2").double()
    adapter = adapter_for(model)
    calibration = _calibration(rows_per_language=2, languages=("en",))
    down = adapter.ffn_linears(adapter.get_blocks(model)[1])["down"]
    ffn = weight_matrix(down).shape[1]
    eps = 1e-4
    slopes = torch.stack([
        (_loss_per_sample_with_neuron_scale(model, calibration.ids, down, j, 1 + eps)
         - _loss_per_sample_with_neuron_scale(model, calibration.ids, down, j, 1 - eps)) / (2 * eps)
        for j in range(ffn)
    ])  # (ffn, 2)
    expected = slopes.abs().sum(dim=1).double()
    neurons = gradient_importance(model, calibration, {"ffn"}, batch_size=2)["en"].neurons[1]
    torch.testing.assert_close(neurons, expected / expected.norm(), atol=1e-6, rtol=1e-5)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # nothing left behind


def test_gradient_scores_have_unit_norm_in_every_block():
    for family in ("llama", "bert", "gpt2"):
        model = tiny_model(family)
        for importance in gradient_importance(model, _calibration(), {"heads", "ffn"}, gqa="query", mask_token_id=3).values():
            for heads, neurons in zip(importance.heads, importance.neurons, strict=True):
                assert heads.norm().item() == pytest.approx(1.0)
                assert neurons.norm().item() == pytest.approx(1.0)


def test_gradient_block_importance_is_first_order_taylor():
    model = tiny_model("llama").double()
    adapter = adapter_for(model)
    calibration = _calibration(rows_per_language=2, languages=("en",))
    ids = calibration.ids
    loss = causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}).sum()
    blocks = adapter.get_blocks(model)
    weights = [[lin.weight for lin in adapter.block_linears(block).values()] for block in blocks]
    grads = torch.autograd.grad(loss, [w for ws in weights for w in ws])
    per_block, start = [], 0
    for ws in weights:
        per_block.append(sum((w.detach() * g).sum() for w, g in zip(ws, grads[start : start + len(ws)])).abs())
        start += len(ws)
    scores = gradient_importance(model, calibration, {"blocks"}, batch_size=1)["en"].blocks
    torch.testing.assert_close(scores, torch.stack(per_block), atol=1e-8, rtol=1e-6)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_encoder_gradient_uses_the_masked_token_proxy_or_a_given_loss():
    model = tiny_model("bert")
    loss = masked_token_loss(mask_token_id=3)(model, {"input_ids": _calibration().ids[:2], "attention_mask": torch.ones(2, 12, dtype=torch.long)})
    assert loss.shape == (2,) and torch.isfinite(loss).all() and (loss > 0).all()
    proxy = gradient_importance(model, _calibration(), {"heads", "ffn"}, mask_token_id=3)
    assert all((imp.heads[0] > 0).all() for imp in proxy.values())

    def first_token_norm(model, batch):  # a task loss that only reads position 0
        return model(**batch).last_hidden_state[:, 0].norm(dim=-1)

    custom = gradient_importance(model, _calibration(), {"ffn"}, loss_fn=first_token_norm)
    assert not torch.equal(custom["en"].neurons[0], proxy["en"].neurons[0])


def _captured_inputs(model, calibration, lang, linear):
    """Inputs of one linear over a language's rows, flattened to (tokens, in)."""
    seen = []
    handle = linear.register_forward_pre_hook(lambda module, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    rows = calibration.rows()[lang]
    with torch.no_grad():
        model(input_ids=calibration.ids[rows], attention_mask=torch.ones_like(calibration.ids[rows]), use_cache=False)
    handle.remove()
    return torch.cat(seen).double()


def test_activation_importance_is_wanda_summed_over_a_unit():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    calibration = _calibration()
    result = activation_importance(model, calibration, {"heads", "ffn"}, gqa="query")
    block = adapter.get_blocks(model)[0]
    linears = adapter.block_linears(block)
    for lang in ("en", "fr"):
        x_up = _captured_inputs(model, calibration, lang, linears["up"])  # (T, 32)
        x_down = _captured_inputs(model, calibration, lang, linears["down"])  # (T, 64)
        norm_up = x_up.square().mean(dim=0).sqrt()  # ||X_j|| / sqrt(T), as the per-language statistics keep it
        norm_down = x_down.square().mean(dim=0).sqrt()
        n = 5
        expected = (
            (weight_matrix(linears["gate"])[n].double().abs() * norm_up).sum()
            + (weight_matrix(linears["up"])[n].double().abs() * norm_up).sum()
            + weight_matrix(linears["down"])[:, n].double().abs().sum() * norm_down[n]
        )
        assert result[lang].neurons[0][n].item() == pytest.approx(expected.item(), rel=1e-6)
        x_o = _captured_inputs(model, calibration, lang, linears["o"])
        norm_o = x_o.square().mean(dim=0).sqrt()
        norm_q = _captured_inputs(model, calibration, lang, linears["q"]).square().mean(dim=0).sqrt()
        q_part = (weight_matrix(linears["q"])[8:16].double().abs() * norm_q).sum()
        o_part = (weight_matrix(linears["o"])[:, 8:16].double().abs() * norm_o[8:16]).sum()
        assert result[lang].heads[0][1].item() == pytest.approx((q_part + o_part).item(), rel=1e-6)
    assert not torch.equal(result["en"].neurons[0], result["fr"].neurons[0])  # languages differ
