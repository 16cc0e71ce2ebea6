"""Refit after structured removal: the least squares against a hand-written solve, the errors, the bias, reloading."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.formats.structured import STRUCTURE_FILE, load_structured, save_structured
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import ADDED_BIAS_ATTR, layer_layouts
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import StructuredConfig
from babelprune.prune.structured import structured_prune
from babelprune.prune.structured.refit import InputMoments, refit_columns
from tests.tiny_models import model_output, tiny_inputs, tiny_model

TOKENS = np.array([
    [1.0, 2.0, 0.0, -1.0],
    [0.5, -1.0, 2.0, 1.0],
    [2.0, 0.0, 1.0, 0.0],
    [-1.0, 1.0, 1.0, 2.0],
    [0.0, 3.0, -2.0, 1.0],
    [1.0, 1.0, 1.0, 1.0],
])  # (T=6, in=4)
WEIGHT = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 2.0, -1.0], [2.0, 2.0, -1.0, 0.5]])  # (out=3, in=4)
KEEP = [0, 2]


def _moments(tokens: np.ndarray) -> InputMoments:
    moments = InputMoments(tokens.shape[1])
    moments.add(torch.tensor(tokens[:4], dtype=torch.float32))  # two batches: the sums add up
    moments.add(torch.tensor(tokens[4:], dtype=torch.float32))
    return moments


def _lstsq(tokens: np.ndarray, weight: np.ndarray, keep: list[int], lam: float, bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """min ||X W^T - X_S V^T - 1 b^T||^2 + lam ||V - W_S||^2 as one stacked least-squares problem."""
    target = tokens @ weight.T  # (T, out)
    design = tokens[:, keep]
    if bias:
        design = np.hstack([design, np.ones((len(tokens), 1))])
    k = len(keep)
    ridge = np.zeros((k, design.shape[1]))
    ridge[:, :k] = np.sqrt(lam) * np.eye(k)
    stacked = np.vstack([design, ridge])
    rhs = np.vstack([target, np.sqrt(lam) * weight[:, keep].T])
    theta = np.linalg.lstsq(stacked, rhs, rcond=None)[0]  # (k [+1], out)
    return theta[:k].T, (theta[k] if bias else None)


def _relative_error(tokens, weight, keep, refit, bias) -> float:
    target = tokens @ weight.T
    approx = tokens[:, keep] @ refit.T + (bias if bias is not None else 0.0)
    return float(np.square(target - approx).sum() / np.square(target).sum())


@pytest.mark.parametrize("with_bias", [True, False])
def test_refit_is_the_least_squares_solution_of_a_hand_written_solve(with_bias):
    damp = 0.01
    lam = damp * np.mean(np.diag(TOKENS.T @ TOKENS))  # damp times the mean diagonal of X^T X
    fit = refit_columns(torch.tensor(WEIGHT), torch.tensor(KEEP), _moments(TOKENS), damp, with_bias=with_bias)
    expected, bias = _lstsq(TOKENS, WEIGHT, KEEP, lam, with_bias)
    np.testing.assert_allclose(fit.weight.numpy(), expected, rtol=1e-6, atol=1e-8)
    if with_bias:
        np.testing.assert_allclose(fit.bias.numpy(), bias, rtol=1e-6, atol=1e-8)
    else:
        assert fit.bias is None
    # The errors the record keeps are the direct ones on the tokens.
    assert fit.error_before == pytest.approx(_relative_error(TOKENS, WEIGHT, KEEP, WEIGHT[:, KEEP], None), rel=1e-6)
    assert fit.error_after == pytest.approx(_relative_error(TOKENS, WEIGHT, KEEP, expected, bias), rel=1e-6)
    assert fit.error_after < fit.error_before


def test_with_the_kept_weights_held_the_bias_is_flaps_mean_output_of_the_removed_columns():
    # A very large damping holds V at W_S; the undamped bias is then mean over tokens of X_R W_R^T.
    fit = refit_columns(torch.tensor(WEIGHT), torch.tensor(KEEP), _moments(TOKENS), damp=1e9)
    removed = [1, 3]
    flap = (TOKENS[:, removed] @ WEIGHT[:, removed].T).mean(axis=0)
    np.testing.assert_allclose(fit.weight.numpy(), WEIGHT[:, KEEP], atol=1e-6)
    np.testing.assert_allclose(fit.bias.numpy(), flap, atol=1e-6)


def test_bad_refit_inputs_are_refused():
    with pytest.raises(BabelpruneError, match="damping"):
        refit_columns(torch.tensor(WEIGHT), torch.tensor(KEEP), _moments(TOKENS), damp=0.0)
    with pytest.raises(BabelpruneError, match="No calibration tokens"):
        refit_columns(torch.tensor(WEIGHT), torch.tensor(KEEP), InputMoments(4))


def _calibration(seed: int = 0) -> Calibration:
    ids = torch.randint(4, 128, (6, 12), generator=torch.Generator().manual_seed(seed))
    return Calibration(ids, ("en", "en", "en", "fr", "sw", "sw"), "toy")


def _loaded(family: str) -> LoadedModel:
    return LoadedModel(model=tiny_model(family).eval(), tokenizer=None, spec=family, path=None, kind="causal-lm")


def _down_inputs(model, calibration: Calibration, block: int) -> torch.Tensor:
    """The inputs (tokens, ffn) of one block's FFN down projection over the calibration windows."""
    adapter = adapter_for(model)
    captured = []
    down = adapter.ffn_linears(adapter.get_blocks(model)[block])["down"]
    handle = down.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        model(input_ids=calibration.ids, use_cache=False)
    handle.remove()
    return torch.cat(captured).double()


def _weight(linear) -> torch.Tensor:
    return weight_matrix(linear).detach().double()


def test_refit_lowers_every_refitted_layers_error_and_matches_a_direct_computation_in_block_0():
    calibration = _calibration()
    dense = _loaded("gemma3")
    plain, refitted = copy.deepcopy(dense), copy.deepcopy(dense)
    base = structured_prune(plain, {"ffn"}, "activation", 0.3, calibration, progress=False)
    result = structured_prune(refitted, {"ffn"}, "activation", 0.3, calibration, progress=False, refit=True)
    assert result.selection.layers == base.selection.layers  # the same units go; only the kept weights change
    layers = result.refit["layers"]
    assert [(layer["block"], layer["linear"]) for layer in layers] == [(0, "down"), (1, "down")]
    for layer in layers:
        assert 0 <= layer["error_after"] < layer["error_before"]
    # Block 0: the dense model's down inputs are the calibration inputs of the refit (nothing before it changed).
    x = _down_inputs(dense.model, calibration, 0)  # (tokens, ffn)
    adapter = adapter_for(dense.model)
    w = _weight(adapter.ffn_linears(adapter.get_blocks(dense.model)[0])["down"])
    keep = result.selection.layers[0].neurons
    target = x @ w.T
    kept_plain = _weight(adapter.ffn_linears(adapter.get_blocks(plain.model)[0])["down"])
    down = adapter.ffn_linears(adapter.get_blocks(refitted.model)[0])["down"]
    no_refit = (target - x[:, keep] @ kept_plain.T).square().sum() / target.square().sum()
    with_refit = (target - x[:, keep] @ _weight(down).T - down.bias.detach().double()).square().sum() / target.square().sum()
    assert float(no_refit) == pytest.approx(layers[0]["error_before"], rel=1e-4)
    assert float(with_refit) == pytest.approx(layers[0]["error_after"], rel=1e-3, abs=1e-7)
    assert float(with_refit) < float(no_refit)
    metadata = result.metadata()
    assert metadata["refit"]["layers"] == layers and "refit" not in base.metadata()


def test_heads_and_ffn_refit_saves_and_reloads_with_the_same_logits(tmp_path):
    calibration = _calibration(1)
    loaded = _loaded("gemma3")
    result = structured_prune(loaded, {"heads", "ffn"}, "balanced", 0.3, calibration, progress=False, refit=True)
    linears = sorted({layer["linear"] for layer in result.refit["layers"]})
    assert linears == ["down", "o"]
    for layer in result.refit["layers"]:
        assert layer["error_after"] < layer["error_before"]
        assert layer["bias"] == "new bias (saved; restored on reload)"  # Gemma 3 builds its projections without bias
    inputs = tiny_inputs(loaded.model)
    expected = model_output(loaded.model, inputs)
    save_structured(loaded.model, None, tmp_path / "out", result.metadata())
    again = load_structured(tmp_path / "out")
    assert torch.equal(model_output(again.model, inputs), expected)
    record = json.loads((tmp_path / "out" / STRUCTURE_FILE).read_text())
    assert record["hf_loadable"] is False and record["refit"]["layers"] == result.refit["layers"]
    refitted = {(layer["linear"], layer["block"]) for layer in result.refit["layers"]}
    assert {(role, i) for role, blocks in record["structure"]["added_bias"].items() for i in blocks} == refitted
    adapter = adapter_for(again.model)
    for role, i in refitted:
        block = adapter.get_blocks(again.model)[i]
        linear = adapter.attention_linears(block)["o"] if role == "o" else adapter.ffn_linears(block)["down"]
        assert getattr(linear, ADDED_BIAS_ATTR, False) and linear.bias is not None and bool(linear.bias.abs().sum() > 0)


def test_an_existing_bias_takes_the_fitted_one(tmp_path):
    loaded = _loaded("gpt2")  # GPT-2's projections carry biases
    before = {i: block.mlp.c_proj.bias.detach().clone() for i, block in enumerate(adapter_for(loaded.model).get_blocks(loaded.model))}
    result = structured_prune(loaded, {"ffn"}, "magnitude", 0.3, _calibration(2), progress=False, refit=True)
    assert {layer["bias"] for layer in result.refit["layers"]} == {"added to the existing bias"}
    changed = [not torch.equal(block.mlp.c_proj.bias, before[i]) for i, block in enumerate(adapter_for(loaded.model).get_blocks(loaded.model))]
    assert all(changed)
    inputs = tiny_inputs(loaded.model)
    expected = model_output(loaded.model, inputs)
    save_structured(loaded.model, None, tmp_path / "out", result.metadata())
    again = load_structured(tmp_path / "out")
    assert torch.equal(model_output(again.model, inputs), expected)
    assert "added_bias" not in again.pruning["structure"]


def test_the_refit_is_refused_where_it_does_not_apply():
    loaded = _loaded("llama")
    with pytest.raises(BabelpruneError, match=r"^--refit fits the kept weights on calibration text; give --calib\.$"):
        structured_prune(loaded, {"ffn"}, "magnitude", 0.3, None, progress=False, refit=True)
    with pytest.raises(BabelpruneError, match="removed blocks leave none"):
        structured_prune(loaded, {"blocks"}, "magnitude", 0.5, _calibration(), progress=False, refit=True)
    with pytest.raises(BabelpruneError, match="per-language setting keeps one dense model"):
        structured_prune(loaded, {"ffn"}, "activation", 0.3, _calibration(), setting="per-language", progress=False, refit=True)
    with pytest.raises(BabelpruneError, match="removed blocks leave none"):
        StructuredConfig(units=["blocks"], refit=True)
    assert layer_layouts(loaded.model, adapter_for(loaded.model))[0].ffn == 64  # refused before any work


def test_the_refit_field_is_left_out_of_the_config_when_off():
    assert "refit" not in StructuredConfig(units=["ffn"]).to_dict()
    assert StructuredConfig(units=["ffn"], refit=True).to_dict()["refit"] is True
    assert StructuredConfig(units=["ffn"], importance="magnitude", refit=True).needs_calibration
    assert not StructuredConfig(units=["ffn"], importance="magnitude").needs_calibration


def _error_before(model, calibration: Calibration, block: int, weight: torch.Tensor, keep: list[int]) -> float:
    """||X_R W_R^T||^2 / ||X W^T||^2 on the down inputs X of `block` in `model`."""
    x = _down_inputs(model, calibration, block)
    removed = weight.clone()
    removed[:, keep] = 0.0
    return float((x @ removed.T).square().sum() / (x @ weight.T).square().sum())


def test_later_blocks_are_fitted_on_the_outputs_of_the_pruned_and_refitted_blocks_before_them():
    calibration = _calibration(4)
    dense = _loaded("gemma3")
    refitted = copy.deepcopy(dense)
    result = structured_prune(refitted, {"ffn"}, "activation", 0.3, calibration, progress=False, refit=True)
    recorded = {layer["block"]: layer["error_before"] for layer in result.refit["layers"]}
    adapter = adapter_for(dense.model)
    dense_block = adapter.get_blocks(dense.model)[1]
    weight = _weight(adapter.ffn_linears(dense_block)["down"])
    keep = result.selection.layers[1].neurons
    # Block 1 as it was when refitted: dense, behind the pruned and refitted block 0.
    hybrid = copy.deepcopy(refitted.model)
    adapter.get_blocks(hybrid)[1] = copy.deepcopy(dense_block)
    sequential = _error_before(hybrid, calibration, 1, weight, keep)
    behind_dense = _error_before(dense.model, calibration, 1, weight, keep)
    assert recorded[1] == pytest.approx(sequential, rel=1e-4)
    assert abs(sequential - behind_dense) > 1e-4 * behind_dense  # the dense prefix would have given other inputs
