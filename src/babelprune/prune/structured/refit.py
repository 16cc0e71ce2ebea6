"""Refit after structured removal: the linear that reads the removed channels is fitted again on calibration inputs.

Removing FFN neurons drops columns of the FFN down projection; removing
attention heads drops columns of the attention output projection. For such a
linear y = W x (W: out x in) with calibration inputs X (T tokens x in), kept
columns S and removed columns R, the refit chooses new kept-column weights
V (out x |S|) and a bias b (out) by least squares:

    min  ||X W^T - X_S V^T - 1 b^T||^2 + lambda ||V - W_S||^2

The damping lambda = damp * mean(diag H), with H = X^T X over all inputs
(SparseGPT's convention, as in `babelprune.prune.reconstruct`; damp = 0.01),
pulls V towards the dense kept weights and keeps the system well posed; the
bias is not damped. With Z = [X_S, 1] the normal equations are

    (Z^T Z + diag(lambda, ..., lambda, 0)) [V^T; b^T] = Z^T X W^T + [lambda W_S^T; 0]

and need only H, the column sums s = X^T 1 and T: Z^T Z = [[H_SS, s_S], [s_S^T, T]],
Z^T X W^T = [[H_S: W^T], [s^T W^T]]. They are solved in float64 by Cholesky.
Holding V at W_S, the best bias is b = mean over tokens of X_R W_R^T, FLAP's
bias (An et al., 2024), which restores the mean output of the removed
channels; fitting V and b together finds the best of both. Where the linear
has no bias of its own, the fitted one is added as a new parameter
(`models.layouts.add_output_bias`) that the saved structure lists, so the
folder reloads with it.

The relative output error before (the removed columns simply gone, no bias)
and after the refit, ||X W^T - X_S V^T - 1 b^T||^2 / ||X W^T||^2, is read off
the same moments.

Sequential, block by block: the calibration windows' inputs of block 0 are
captured once (`prune.sequential`); for each block, its attention output
projection's inputs are gathered with the block as it is, the heads are
removed and the projection refitted; then the FFN down projection's inputs
are gathered with the pruned attention, the neurons removed and the down
projection refitted; the block then runs once more to give the next block
its inputs. Later blocks are therefore fitted on what the already pruned and
refitted blocks before them produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import ArchAdapter, adapter_for, weight_matrix
from babelprune.models.layouts import (
    add_output_bias,
    layer_layouts,
    record_structure,
    remove_heads,
    remove_neurons,
)
from babelprune.prune.calibration import Calibration
from babelprune.prune.sequential import BlockInputs, batch_spans, capture_block_inputs, run_block, slice_inputs, write_weight
from babelprune.prune.stats import gram
from babelprune.prune.structured.selection import Selection

REFIT_DAMP = 0.01  # lambda = REFIT_DAMP * mean(diag H)
REFIT_WINDOWS = 8  # calibration windows per forward while refitting


class InputMoments:
    """X^T X, the column sums X^T 1 and the token count of one linear's inputs, in float64."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        self.gram = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.total = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.tokens = 0

    def add(self, x: Tensor) -> None:
        """Add inputs x (..., in): every leading position is one token (float32 products, float64 sums)."""
        tokens = x.detach().reshape(-1, self.gram.shape[0]).float()
        self.gram += gram(tokens).double()
        self.total += tokens.sum(dim=0).double()
        self.tokens += tokens.shape[0]


@dataclass(frozen=True)
class ColumnRefit:
    """A refitted linear: the kept columns' weights, the bias, and the relative output errors."""

    weight: Tensor  # (out, |S|) float64
    bias: Tensor | None  # (out,) float64, None when fitted without one
    error_before: float  # ||X_R W_R^T||^2 / ||X W^T||^2: the removed columns gone, nothing refitted
    error_after: float  # ||X W^T - X_S V^T - 1 b^T||^2 / ||X W^T||^2


def _residual_energy(difference: Tensor, bias: Tensor | None, moments: InputMoments) -> float:
    """||X D^T - 1 b^T||^2 = tr(D H D^T) - 2 b^T D s + T ||b||^2, for D (out, in) and b (out,)."""
    energy = float(((difference @ moments.gram) * difference).sum())
    if bias is not None:
        energy += -2.0 * float(bias @ (difference @ moments.total)) + moments.tokens * float(bias @ bias)
    return max(energy, 0.0)


def refit_columns(weight: Tensor, keep: Tensor, moments: InputMoments, damp: float = REFIT_DAMP,
                  with_bias: bool = True) -> ColumnRefit:
    """Least-squares refit of the kept columns `keep` of `weight` (out, in), and a bias (see the module docstring)."""
    if not damp > 0:
        raise BabelpruneError(f"The refit damping {damp} must be positive, e.g. 0.01.")
    if moments.tokens == 0:
        raise BabelpruneError("No calibration tokens reached this layer; give calibration text for the refit.")
    w = weight.detach().double().to(moments.gram.device)
    keep = torch.as_tensor(keep, dtype=torch.long, device=moments.gram.device)
    h, s = moments.gram, moments.total
    k = len(keep)
    scale = float(torch.diagonal(h).mean())
    lam = damp * (scale if scale > 0 else 1.0)
    size = k + 1 if with_bias else k
    system = torch.zeros(size, size, dtype=torch.float64, device=h.device)
    system[:k, :k] = h[keep][:, keep] + lam * torch.eye(k, dtype=torch.float64, device=h.device)
    rhs = torch.zeros(size, w.shape[0], dtype=torch.float64, device=h.device)
    rhs[:k] = h[keep] @ w.T + lam * w[:, keep].T
    if with_bias:
        system[:k, k] = s[keep]
        system[k, :k] = s[keep]
        system[k, k] = moments.tokens
        rhs[k] = s @ w.T
    solution = torch.cholesky_solve(rhs, torch.linalg.cholesky(system))  # (size, out)
    refit = solution[:k].T.contiguous()  # (out, k)
    bias = solution[k].contiguous() if with_bias else None
    total = _residual_energy(w, None, moments)
    removed = w.clone()
    removed[:, keep] = 0.0  # W - [W_S, 0]: what the removed columns contributed
    after = w.clone()
    after[:, keep] -= refit
    before_error = _residual_energy(removed, None, moments)
    after_error = _residual_energy(after, bias, moments)
    return ColumnRefit(refit, bias, before_error / total if total > 0 else 0.0, after_error / total if total > 0 else 0.0)


def _gather(block: nn.Module, adapter: ArchAdapter, inputs: BlockInputs, index: int, linear: nn.Module,
            spans: list[tuple[int, int]]) -> InputMoments:
    """The moments of `linear`'s inputs while block `index` runs over every calibration window."""
    moments = InputMoments(weight_matrix(linear).shape[1], weight_matrix(linear).device)
    handle = linear.register_forward_pre_hook(lambda module, args: moments.add(args[0]))
    try:
        for start, end in spans:
            run_block(block, adapter, slice_inputs(inputs, start, end), index)
    finally:
        handle.remove()
    return moments


def _head_columns(heads: list[int], head_dim: int) -> Tensor:
    """The output projection's input columns of the given query heads, in the order given."""
    heads_t = torch.as_tensor(heads, dtype=torch.long, device="cpu")
    return (heads_t.unsqueeze(1) * head_dim + torch.arange(head_dim, device="cpu")).reshape(-1)


def _refit_linear(linear: nn.Module, old_weight: Tensor, keep: Tensor, moments: InputMoments, damp: float) -> ColumnRefit:
    fit = refit_columns(old_weight, keep, moments, damp)
    write_weight(linear, fit.weight.to(weight_matrix(linear).dtype))
    add_output_bias(linear, fit.bias)
    return fit


@torch.no_grad()
def apply_selection_with_refit(model: nn.Module, selection: Selection, calibration: Calibration,
                               damp: float = REFIT_DAMP, windows: int = REFIT_WINDOWS) -> dict:
    """Remove what `selection` does not keep, block by block, refitting each block's output and down projections.

    Returns the refit's record: the damping, whether biases were added or folded into existing ones, and
    per refitted linear its block, kept and original input widths and relative output error before and after.
    """
    adapter = adapter_for(model)
    layouts = layer_layouts(model, adapter)
    if len(layouts) != len(selection.layers):
        raise BabelpruneError(f"The selection covers {len(selection.layers)} blocks but the model has {len(layouts)}; select on this model.")
    if len(selection.blocks) != len(layouts):
        raise BabelpruneError("The refit rebuilds the linears that read removed heads or FFN neurons; removed blocks leave none, "
                              "so prune blocks without the refit.")
    was_training = model.training
    model.eval()
    inputs = capture_block_inputs(model, adapter, calibration.ids)
    spans = batch_spans(len(calibration.languages), windows)
    layers = []
    try:
        for i, (layout, keep) in enumerate(zip(layouts, selection.layers, strict=True)):
            block = adapter.get_blocks(model)[i]
            if len(keep.query_heads) != layout.n_heads or len(keep.kv_heads) != layout.n_kv_heads:
                o = adapter.attention_linears(block)["o"]
                moments = _gather(block, adapter, inputs, i, o, spans)
                had_bias, old = getattr(o, "bias", None) is not None, weight_matrix(o).detach().clone()
                remove_heads(model, adapter, i, keep.query_heads, keep.kv_heads)
                columns = _head_columns(sorted(keep.query_heads), layout.head_dim)
                fit = _refit_linear(adapter.attention_linears(block)["o"], old, columns, moments, damp)
                layers.append(_layer_record(i, "o", len(columns), layout.n_heads * layout.head_dim, fit, had_bias))
            if len(keep.neurons) != layout.ffn:
                down = adapter.ffn_linears(block)["down"]
                moments = _gather(block, adapter, inputs, i, down, spans)
                had_bias, old = getattr(down, "bias", None) is not None, weight_matrix(down).detach().clone()
                remove_neurons(model, adapter, i, keep.neurons)
                neurons = torch.as_tensor(sorted(keep.neurons), dtype=torch.long, device="cpu")
                fit = _refit_linear(adapter.ffn_linears(block)["down"], old, neurons, moments, damp)
                layers.append(_layer_record(i, "down", len(neurons), layout.ffn, fit, had_bias))
            outputs = [run_block(block, adapter, slice_inputs(inputs, start, end), i) for start, end in spans]
            inputs.hidden = torch.cat(outputs)
    finally:
        model.train(was_training)
    record_structure(model, adapter)
    return {"damp": damp, "windows": len(calibration.languages), "layers": layers}


def _layer_record(block: int, linear: str, kept: int, width: int, fit: ColumnRefit, had_bias: bool) -> dict:
    return {
        "block": block, "linear": linear, "kept_inputs": kept, "inputs": width,
        "error_before": round(fit.error_before, 8), "error_after": round(fit.error_after, 8),
        # A bias the architecture builds takes the fitted one added to it; otherwise a new bias is added and saved.
        "bias": "added to the existing bias" if had_bias else "new bias (saved; restored on reload)",
    }
