"""Importance of heads, FFN neurons and blocks: magnitude, gradient, activation and balanced.

Every method reduces an elementwise score over the weights a unit owns (see
`units.head_unit_map` / `neuron_unit_map`):

* magnitude: sqrt(sum w^2), the L2 norm of all of a unit's weights.
* activation (Wanda): sum |w_ij| * ||X_j||_2, the input norm taken per
  language (`LanguageStats.per_language_norm`).
* balanced: activation's per-language scores with every language weighing
  the same. For language l, unit u and unit type t (heads, FFN neurons or
  blocks), a_l(u) = sum over u's weights of |w_ij| * n_j^l, where
  n_j^l = ||X_j^l||_2 / sqrt(T_l) is the root mean square of input j over
  language l's T_l calibration tokens (so a language with more tokens does
  not weigh more). Each language's scores are divided by their sum over all
  units of that type in the whole model, A_l = sum_u a_l(u), so that every
  language's scores add up to 1, whatever the scale of its activations; the
  importance is the mean over the L calibration languages:

      balanced(u) = (1 / L) * sum_l a_l(u) / A_l

  Dividing by the whole model's sum (not each block's) keeps the comparison
  across blocks that a global ranking makes. One ranking for all languages:
  per language it would rank exactly as activation does (a positive factor
  per language changes no order), so it serves the shared setting only.
  `activation` in the shared setting sums a_l(u) unnormalised, so there a
  language whose activations are larger counts more.
* gradient (Michel et al. 2019; Li et al. 2022): every head's output (its
  slice of the attention output projection's input) and every FFN neuron's
  activation (its column of the down projection's input) is multiplied by a
  gate xi = 1 through a forward pre-hook, one gate per sample. The importance
  of a unit is sum over samples of |dL_n/dxi_n|: the absolute value is taken
  per sample, so samples that push a unit in opposite directions do not
  cancel. Each block's head scores, and each block's neuron scores, are then
  divided by their L2 norm (every scored block has norm 1), which makes
  blocks comparable in a global ranking. Blocks take the first-order Taylor
  term |sum w * dL/dw| over their weights, summed over a language's samples.

The loss: decoders use the causal LM loss. Encoders use `loss_fn(model,
batch)` when given, else a masked-token proxy: 15% of the positions after
the first are replaced by the mask token (when the tokenizer has one) and
predicted from the final hidden states by a dot product with the input
embedding matrix, the tied decoder BERT's own MLM head ends with (an MLM
model's own logits are used when it has them). It needs no labels and
rewards units that keep token identity recoverable.

Data-driven methods return one `Importance` per language: the "shared"
setting sums them, "per-language" ranks each alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import ArchAdapter, adapter_for, weight_matrix
from babelprune.models.layouts import (
    GqaMode,
    LayerLayout,
    head_unit_map,
    layer_layouts,
    neuron_unit_map,
    reduce_to_units,
)
from babelprune.prune.calibration import Calibration
from babelprune.prune.stats import LanguageStats
from babelprune.prune.structured.selection import Importance

Units = set[str]
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
MatrixFn = Callable[[int, str, nn.Module], torch.Tensor]  # (block, linear name, linear) -> scores (out, in)
MASK_SHARE = 0.15
UNIT_TYPES = ("heads", "ffn", "blocks")


def check_units(units: Units) -> Units:
    units = set(units)
    if not units or not units <= set(UNIT_TYPES):
        raise BabelpruneError(f"Unknown structured units {sorted(units)}; choose from {', '.join(UNIT_TYPES)}.")
    if "blocks" in units and len(units) > 1:
        raise BabelpruneError("Remove blocks in a run of their own, then heads or FFN neurons in a second run.")
    return units


def _reduce(model: nn.Module, adapter: ArchAdapter, units: Units, gqa: GqaMode, matrix_fn: MatrixFn,
            finish: Callable[[torch.Tensor], torch.Tensor]) -> Importance:
    """Per-unit sums of elementwise scores, then `finish` (sqrt, abs, identity) on each sum."""
    layouts = layer_layouts(model, adapter)
    heads, neurons, blocks = [], [], []
    for i, block in enumerate(adapter.get_blocks(model)):
        # Scores are computed where the weights are; their per-unit sums are CPU bookkeeping.
        per_index, block_total = {}, torch.zeros((), dtype=torch.float64, device="cpu")
        for name, linear in adapter.block_linears(block).items():
            scores = matrix_fn(i, name, linear).double()  # (out, in)
            per_index[name] = (scores.sum(dim=1), scores.sum(dim=0))
            block_total += scores.sum().cpu()
        layout = layouts[i]
        if "heads" in units:
            kind = layout.head_unit(gqa)
            heads.append(finish(reduce_to_units(per_index, head_unit_map(adapter, layout, kind), layout.n_head_units(gqa))))
        if "ffn" in units:
            neurons.append(finish(reduce_to_units(per_index, neuron_unit_map(adapter, layout), layout.ffn)))
        blocks.append(finish(block_total))
    return Importance(
        heads=heads if "heads" in units else None,
        neurons=neurons if "ffn" in units else None,
        blocks=torch.stack(blocks) if "blocks" in units else None,
        gqa=gqa,
    )


# ----- magnitude -------------------------------------------------------------------


@torch.no_grad()
def magnitude_importance(model: nn.Module, units: Units, gqa: GqaMode = "groups") -> Importance:
    """L2 norm of each unit's weights (no data)."""
    units = check_units(units)
    return _reduce(model, adapter_for(model), units, gqa, lambda i, name, lin: weight_matrix(lin).double().square(), torch.sqrt)


# ----- activation (Wanda) -------------------------------------------------------------


def _batches(calibration: Calibration, lang: str, batch_size: int) -> Iterator[torch.Tensor]:
    rows = calibration.rows()[lang]
    for start in range(0, len(rows), batch_size):
        yield calibration.ids[rows[start : start + batch_size]]


def _model_inputs(ids: torch.Tensor, adapter: ArchAdapter, model: nn.Module) -> dict[str, torch.Tensor]:
    """A batch of calibration windows (kept on the CPU) as the model's inputs, on its device."""
    ids = ids.to(next(model.parameters()).device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return batch | ({"use_cache": False} if adapter.decoder else {})


@torch.no_grad()
def activation_importance(model: nn.Module, calibration: Calibration, units: Units, gqa: GqaMode = "groups",
                          batch_size: int = 4) -> dict[str, Importance]:
    """Wanda importance sum |w| * ||X_j||, one `Importance` per calibration language."""
    units = check_units(units)
    adapter = adapter_for(model)
    languages = calibration.language_set
    stats: dict[tuple[int, str], LanguageStats] = {}
    current = {"lang": languages[0]}
    handles = []
    for i, block in enumerate(adapter.get_blocks(model)):
        for name, linear in adapter.block_linears(block).items():
            stats[i, name] = LanguageStats(
                weight_matrix(linear).shape[1], languages, track_activity=False, device=weight_matrix(linear).device
            )

            def hook(module, args, key=(i, name)):
                stats[key].update(args[0], current["lang"])

            handles.append(linear.register_forward_pre_hook(hook))
    try:
        for lang in languages:
            current["lang"] = lang
            for ids in _batches(calibration, lang, batch_size):
                adapter.base_model(model)(**_model_inputs(ids, adapter, model))  # no LM head: its logits are not needed
    finally:
        for handle in handles:
            handle.remove()
    norms = {key: s.per_language_norm() for key, s in stats.items()}  # (L, in) each
    result = {}
    for li, lang in enumerate(languages):
        def wanda(i, name, linear, li=li):
            return weight_matrix(linear).double().abs() * norms[i, name][li].unsqueeze(0)

        result[lang] = _reduce(model, adapter, units, gqa, wanda, lambda x: x)
    return result


def balance_languages(per_language: dict[str, Importance]) -> Importance:
    """The mean over languages of each language's scores divided by their sum over the model (per unit type).

    A language whose scores of a type sum to 0 (no input reached those units) adds 0 for that type.
    """
    if not per_language:
        raise BabelpruneError("Balanced importance needs at least one calibration language.")
    n = len(per_language)

    def scaled(scores: list[torch.Tensor] | torch.Tensor | None):
        if scores is None:
            return None
        total = float(sum(s.double().sum() for s in scores)) if isinstance(scores, list) else float(scores.double().sum())
        factor = 1.0 / (n * total) if total > 0 else 0.0
        return [s.double() * factor for s in scores] if isinstance(scores, list) else scores.double() * factor

    values = [Importance(scaled(imp.heads), scaled(imp.neurons), scaled(imp.blocks), imp.gqa) for imp in per_language.values()]
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


@torch.no_grad()
def balanced_importance(model: nn.Module, calibration: Calibration, units: Units, gqa: GqaMode = "groups",
                        batch_size: int = 4) -> Importance:
    """Activation scores of each language, normalised per language and averaged (see the module docstring)."""
    return balance_languages(activation_importance(model, calibration, units, gqa, batch_size))


# ----- unit gates (gradient importance, L0 gates, dynamic width masks) ---------------

GateOf = Callable[[int], torch.Tensor | None]  # block index -> (G, units) gates, or None to leave the block alone


def query_head_units(layout: LayerLayout, gqa: GqaMode) -> torch.Tensor:
    """(n_heads,) the head unit of each query head of a block."""
    heads = torch.arange(layout.n_heads, device="cpu")  # an index into the gates, which are on the CPU too
    return heads if layout.head_unit(gqa) == "query" else heads // layout.group_size


@contextlib.contextmanager
def _input_gates(linears: list[nn.Module], unit_widths: list[int], gate_of: GateOf) -> Iterator[None]:
    """Multiply the input of linears[i], unit by unit, by gate_of(i) while inside.

    The input, (N, T, U*w) or flattened to (N*T, U*w) with the rows of a
    sample together, is read as U units of w consecutive columns
    (w = unit_widths[i]); gate_of(i) is (G, U) with G = 1 (one gate for every
    sample) or G = N (one gate per sample).
    """
    handles = []
    for i, (linear, width) in enumerate(zip(linears, unit_widths, strict=True)):

        def hook(module, args, i=i, width=width):
            gate = gate_of(i)
            if gate is None:
                return None
            x = args[0]
            n_samples, n_units = gate.shape
            scaled = x.reshape(n_samples, -1, n_units, width) * gate.to(x)[:, None, :, None]  # x's dtype and device
            return (scaled.reshape(x.shape), *args[1:])

        handles.append(linear.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def head_gates(model: nn.Module, gqa: GqaMode, gate_of: GateOf) -> contextlib.AbstractContextManager[None]:
    """Multiply each head's output by a gate while inside.

    gate_of(block index) returns (G, n_head_units) or None. The hook sits on
    the input of the attention output projection, (N, T, H*d), where head h
    owns columns h*d .. h*d + d - 1; a unit's gate goes to all its query heads.
    """
    adapter = adapter_for(model)
    layouts = layer_layouts(model, adapter)
    unit_of_head = [query_head_units(layout, gqa) for layout in layouts]

    def per_query_head(i: int) -> torch.Tensor | None:
        gate = gate_of(i)
        return None if gate is None else gate[:, unit_of_head[i]]  # (G, H)

    outputs = [adapter.attention_linears(block)["o"] for block in adapter.get_blocks(model)]
    return _input_gates(outputs, [layout.head_dim for layout in layouts], per_query_head)


def neuron_gates(model: nn.Module, gate_of: GateOf) -> contextlib.AbstractContextManager[None]:
    """Multiply each FFN neuron's activation by a gate while inside.

    gate_of(block index) returns (G, ffn) or None. The hook sits on the input
    of the FFN down projection, (N, T, ffn): neuron j is column j.
    """
    adapter = adapter_for(model)
    downs = [adapter.ffn_linears(block)["down"] for block in adapter.get_blocks(model)]
    return _input_gates(downs, [1] * len(downs), gate_of)


# ----- losses --------------------------------------------------------------------------


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast for the loss; float64 stays float64."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) mean next-token cross-entropy of each sample."""
    logits = _at_least_float32(model(**batch).logits[:, :-1])  # (N, T-1, V)
    targets = batch["input_ids"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (N, T-1)
    return losses.mean(dim=1)


def masked_token_loss(mask_token_id: int | None, seed: int = 0) -> LossFn:
    """The encoder proxy loss (see the module docstring), (N,) per sample; masking is seeded."""
    generator = torch.Generator().manual_seed(seed)

    def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        # Drawn on the CPU (the same positions on every device), then moved to the inputs.
        chosen = (torch.rand(ids.shape, generator=generator, device="cpu") < MASK_SHARE).to(ids.device)
        chosen[:, 0] = False  # the start token ([CLS]) is never predicted
        chosen[:, 1] |= ~chosen[:, 1:].any(dim=1)  # at least one position per sample
        inputs = ids.masked_fill(chosen, mask_token_id) if mask_token_id is not None else ids
        out = model(**{**batch, "input_ids": inputs})
        logits = getattr(out, "logits", None)
        if logits is None or logits.dim() != 3:
            embedding = adapter_for(model).get_embeddings(model).weight  # (V, H)
            logits = out.last_hidden_state @ embedding.t()
        per_token = torch.nn.functional.cross_entropy(_at_least_float32(logits).transpose(1, 2), ids, reduction="none")
        return (per_token * chosen).sum(dim=1) / chosen.sum(dim=1)

    return loss


def default_loss(model: nn.Module, mask_token_id: int | None = None) -> LossFn:
    return causal_lm_loss if adapter_for(model).decoder else masked_token_loss(mask_token_id)


# ----- gradient ----------------------------------------------------------------------------


@contextlib.contextmanager
def grads_only_on(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Only `params` require grad inside; the old flags and grads come back after."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None


def _grad_matrix(adapter: ArchAdapter, linear: nn.Module) -> torch.Tensor:
    grad = linear.weight.grad
    if grad is None:
        return torch.zeros_like(weight_matrix(linear))
    return grad.t() if adapter.transposed_linears else grad  # (out, in)


def _taylor(adapter: ArchAdapter, linear: nn.Module) -> torch.Tensor:
    """w * dL/dw, (out, in)."""
    return weight_matrix(linear).double() * _grad_matrix(adapter, linear).double()


def unit_norm_per_block(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each block's scores divided by their L2 norm (a block whose scores are all 0 stays 0)."""
    return [s / s.norm() if s.norm() > 0 else s for s in scores]


def gradient_importance(model: nn.Module, calibration: Calibration, units: Units, gqa: GqaMode = "groups",
                        loss_fn: LossFn | None = None, batch_size: int = 1, mask_token_id: int | None = None) -> dict[str, Importance]:
    """Gate gradients (heads, neurons) and Taylor scores (blocks), one `Importance` per language."""
    units = check_units(units)
    adapter = adapter_for(model)
    loss_fn = loss_fn or default_loss(model, mask_token_id)
    layouts = layer_layouts(model, adapter)
    gate_widths = {"heads": [lay.n_head_units(gqa) for lay in layouts], "ffn": [lay.ffn for lay in layouts]}
    gated = sorted(units & set(gate_widths))
    weights = [lin.weight for b in adapter.get_blocks(model) for lin in adapter.block_linears(b).values()] if "blocks" in units else []
    gates: dict[str, dict[int, torch.Tensor]] = {"heads": {}, "ffn": {}}  # empty for unit types not scored: no hook acts
    result = {}
    with (grads_only_on(model, weights), torch.enable_grad(),
          head_gates(model, gqa, lambda i: gates["heads"].get(i)), neuron_gates(model, lambda i: gates["ffn"].get(i))):
        for lang in calibration.language_set:
            # Gates and their gradient sums stay on the CPU: the forward hook moves each gate to the activations.
            sums = {kind: [torch.zeros(n, dtype=torch.float64, device="cpu") for n in gate_widths[kind]] for kind in gated}
            for ids in _batches(calibration, lang, batch_size):
                for kind in gated:  # (N, units) per block: gate n only scales sample n
                    gates[kind] = {i: torch.ones(ids.shape[0], n, device="cpu", requires_grad=True) for i, n in enumerate(gate_widths[kind])}
                # Per-sample losses summed: the gradient of sample n's gates is dL_n/dxi_n alone.
                loss_fn(model, _model_inputs(ids, adapter, model)).sum().backward()
                for kind in gated:
                    for i, gate in gates[kind].items():
                        if gate.grad is not None:  # None: the block does not reach the loss
                            sums[kind][i] += gate.grad.abs().sum(dim=0).double()  # |dL_n/dxi_n| summed over samples
            blocks = None
            if weights:  # |sum over a block's weights of w * dL/dw|, gradients summed over the language's samples
                blocks = _reduce(model, adapter, {"blocks"}, gqa, lambda i, name, lin: _taylor(adapter, lin), torch.abs).blocks
                for w in weights:
                    w.grad = None
            result[lang] = Importance(
                heads=unit_norm_per_block(sums["heads"]) if "heads" in sums else None,
                neurons=unit_norm_per_block(sums["ffn"]) if "ffn" in sums else None,
                blocks=blocks,
                gqa=gqa,
            )
    return result
