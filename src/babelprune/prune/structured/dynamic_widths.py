"""Dynamic Sparsification, the widths: rank units once, order them, and mask or cut prefixes of every block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import reduce

import torch
import torch.nn.functional as F
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import ArchAdapter, adapter_for, fused_qkv_rows
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import (
    LayerLayout,
    layer_layouts,
    select_head_norms,
    select_neurons,
    shrink_linear,
    structure_of,
)
from babelprune.prune.calibration import Calibration
from babelprune.prune.structured.importance import (
    activation_importance,
    balanced_importance,
    gradient_importance,
    head_gates,
    magnitude_importance,
    neuron_gates,
)
from babelprune.prune.structured.selection import (
    DEFAULT_TOLERANCE,
    Importance,
    Selection,
    select_units,
)


Order = dict[str, list[int]]  # per block: "heads" / "neurons" -> original position of each new position


def unit_orders(importance: Importance, layouts: Sequence[LayerLayout]) -> list[Order]:
    """Per block, the original unit at each new position: most important first.

    Query heads (scores (n_heads,) per block) are sorted over the block when
    each has its own key/value head (which moves with it), else within their
    key/value group, which stays in place; neurons are sorted over the block.
    Unscored unit types keep their order; ties keep it too (stable sort).
    """
    orders = []
    for i, layout in enumerate(layouts):
        heads = list(range(layout.n_heads))
        if importance.heads is not None and layout.group_size == 1:  # a head moves with its own key/value head
            heads = torch.argsort(-importance.heads[i].double(), stable=True).tolist()
        elif importance.heads is not None:
            scores = importance.heads[i].double().view(layout.n_kv_heads, layout.group_size)  # (KV, r)
            within = torch.argsort(-scores, dim=1, stable=True)  # (KV, r): positions inside each group, best first
            heads = (within + torch.arange(layout.n_kv_heads).unsqueeze(1) * layout.group_size).reshape(-1).tolist()
        neurons = list(range(layout.ffn))
        if importance.neurons is not None:
            neurons = torch.argsort(-importance.neurons[i].double(), stable=True).tolist()
        orders.append({"heads": heads, "neurons": neurons})
    return orders


def _head_rows(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Row numbers of the given heads' slices, in the order given."""
    heads = torch.as_tensor(list(heads), dtype=torch.long)
    return (heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)


def _permute_heads(adapter: ArchAdapter, block: nn.Module, layout: LayerLayout, order: list[int]) -> None:
    parts, linears, d = adapter.attention, adapter.attention_linears(block), layout.head_dim
    # Without grouping every query head has its own key/value head, which moves with it;
    # with grouping heads move only inside their group, so key/value heads stay.
    kv_order = order if layout.group_size == 1 else list(range(layout.n_kv_heads))
    q_rows, kv_rows = _head_rows(order, d), _head_rows(kv_order, d)
    if parts.is_fused:
        rows = fused_qkv_rows(parts.fused_layout, layout.n_heads, layout.n_kv_heads, d)
        index = torch.empty(sum(len(r) for r in rows.values()), dtype=torch.long)
        for part, chosen in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
            index[rows[part]] = rows[part][chosen]  # each part stays where the layout puts it
        block.set_submodule(parts.fused_qkv, shrink_linear(linears["qkv"], rows=index))
    else:
        block.set_submodule(parts.q, shrink_linear(linears["q"], rows=q_rows))
        block.set_submodule(parts.k, shrink_linear(linears["k"], rows=kv_rows))
        block.set_submodule(parts.v, shrink_linear(linears["v"], rows=kv_rows))
    block.set_submodule(parts.o, shrink_linear(linears["o"], cols=q_rows))
    # Per-head norm slices (OLMo 2, Cohere's qk-norm) move with their heads.
    select_head_norms(structure_of(adapter), block, {"query": order, "kv": kv_order}, d)


def _permute_neurons(adapter: ArchAdapter, block: nn.Module, order: list[int]) -> None:
    select_neurons(adapter, block, torch.as_tensor(order, dtype=torch.long))


@torch.no_grad()
def permute_units(model: nn.Module, orders: Sequence[Order]) -> None:
    """Reorder every block's heads and neurons in place (same function, new positions)."""
    adapter = adapter_for(model)
    for block, layout, order in zip(adapter.get_blocks(model), layer_layouts(model, adapter), orders, strict=True):
        if order["heads"] != list(range(layout.n_heads)):
            _permute_heads(adapter, block, layout, order["heads"])
        if order["neurons"] != list(range(layout.ffn)):
            _permute_neurons(adapter, block, order["neurons"])


def rank_units(loaded: LoadedModel, units: Sequence[str], importance: str, calibration: Calibration | None) -> Importance:
    """One importance for the model, summed over calibration languages."""
    model, units = loaded.model, set(units)
    if importance == "magnitude":
        return magnitude_importance(model, units, "query")
    if calibration is None:
        raise BabelpruneError(f"Importance '{importance}' needs calibration text; give calibration windows or use 'magnitude'.")
    if importance == "balanced":  # already one importance for all languages
        return balanced_importance(model, calibration, units, "query")
    if importance == "activation":
        per_language = activation_importance(model, calibration, units, "query")
    else:
        mask_id = getattr(loaded.tokenizer, "mask_token_id", None)
        per_language = gradient_importance(model, calibration, units, "query", mask_token_id=mask_id)
    return reduce(lambda a, b: a + b, per_language.values())


# --------------------------------------------------------------------------- widths and masks


def level_selection(model: nn.Module, sparsity: float, units: Sequence[str], tolerance: float = DEFAULT_TOLERANCE) -> Selection:
    """The units a width keeps: in every block, the first units up to a share `sparsity` of its parameters.

    Scores that fall with the position make the structured selection remove
    units from the end of each block ("per-layer" ranking: every block gets
    the same target, heads the target share of attention, the FFN the rest).
    """
    layouts = layer_layouts(model, adapter_for(model))

    def by_position(n: int) -> torch.Tensor:
        return -torch.arange(n, dtype=torch.float64)  # earlier = more important

    importance = Importance(
        heads=[by_position(lay.n_heads) for lay in layouts] if "heads" in units else None,
        neurons=[by_position(lay.ffn) for lay in layouts] if "ffn" in units else None,
        gqa="query",
    )
    return select_units(model, importance, sparsity, "per-layer", tolerance)


@contextlib.contextmanager
def width_masks(model: nn.Module, selection: Selection) -> Iterator[None]:
    """Inside, units `selection` does not keep output zeros (the model keeps its full width).

    Heads: a 0/1 gate per query head on the input of the attention output
    projection, (N, T, H*d). Neurons: a 0/1 mask on the input of the FFN down
    projection, (N, T, ffn). Both equal removing the units: their rows feed
    nothing else.
    """
    head_masks: dict[int, torch.Tensor] = {}
    neuron_masks: dict[int, torch.Tensor] = {}
    # Where the weights are and in their type: a float32 mask would promote half-precision activations.
    weight = next(model.parameters())
    for i, (layout, keep) in enumerate(zip(layer_layouts(model, adapter_for(model)), selection.layers, strict=True)):
        if len(keep.query_heads) < layout.n_heads:
            head_masks[i] = _keep_mask(layout.n_heads, keep.query_heads, weight)  # (G=1, H): the same mask for every sample
        if len(keep.neurons) < layout.ffn:
            neuron_masks[i] = _keep_mask(layout.ffn, keep.neurons, weight)  # (G=1, ffn)
    with contextlib.ExitStack() as stack:
        if head_masks:
            stack.enter_context(head_gates(model, "query", head_masks.get))
        if neuron_masks:
            stack.enter_context(neuron_gates(model, neuron_masks.get))
        yield


def _keep_mask(width: int, kept: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """(1, width): 1 at the `kept` units, 0 elsewhere, on the device and in the dtype of `like`."""
    mask = torch.zeros(1, width, device=like.device, dtype=like.dtype)
    mask[0, list(kept)] = 1.0
    return mask


def sandwich_levels(levels: Sequence[float], samples: int, generator: torch.Generator) -> list[float]:
    """The widths of one step: the full model, the smallest width, then `samples` random levels in between."""
    middle = list(levels[1:-1])
    picked = torch.randperm(len(middle), generator=generator, device="cpu")[: min(samples, len(middle))].sort().values.tolist()
    return list(dict.fromkeys([levels[0], levels[-1], *(middle[i] for i in picked)]))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over positions.

    student, teacher: logits (..., C); valid: bool (...) positions to count (all when None).
    """
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    s = F.log_softmax(student.float() / temperature, dim=-1)
    per_position = (t.exp() * (t - s)).sum(dim=-1)  # (...)
    if valid is not None:
        per_position = per_position[valid]
    return per_position.mean() * temperature**2


# --------------------------------------------------------------------------- training


