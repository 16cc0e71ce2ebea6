"""Choosing which heads, neurons or blocks to remove for a parameter-share target.

Sparsity here is the share of the block parameters, the weights and biases
of every block's attention and FFN linears, that removal takes away
(embeddings, norms and heads outside the blocks are not counted).

Rules:

* Units are taken from the least important up while they fit in the budget;
  a unit too large for what is left is skipped and cheaper ones after it may
  still be taken, so the removed share never exceeds the target and lands
  within one unit of it.
* Heads and FFN neurons are ranked separately (their importances are on
  different scales). Heads get the target share of the attention
  parameters; the FFN then gets whatever is left of the total budget, so its
  fine grain absorbs the coarse grain of heads.
* "global" ranking compares units across blocks; "per-layer" gives every
  block the same target. Either way every block keeps at least one head (or
  one query head per kept group) and one neuron, and the model one block.
* Grouped-query "query" units are removed in slices: the j-th least
  important query head of every group of a block at once, so every group
  keeps the same number of query heads.
* If the achieved share is farther than `tolerance` from the target,
  BabelpruneError names the nearest sparsity that whole units can reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import ArchAdapter, adapter_for
from babelprune.models.layouts import (
    GqaMode,
    LayerLayout,
    block_params,
    head_unit_map,
    layer_layouts,
    linear_params,
    neuron_unit_map,
    record_structure,
    remove_blocks,
    remove_heads,
    remove_neurons,
    unit_costs,
)
from babelprune.prune.kernels import check_sparsity

Ranking = Literal["global", "per-layer"]
DEFAULT_TOLERANCE = 0.01


@dataclass
class Importance:
    """Importance of every unit (higher = more important); None for unit types not scored.

    heads: per block, (n_head_units,) for the block's head unit (see `LayerLayout.head_unit`);
    neurons: per block, (ffn,); blocks: (n_blocks,).
    """

    heads: list[torch.Tensor] | None = None
    neurons: list[torch.Tensor] | None = None
    blocks: torch.Tensor | None = None
    gqa: GqaMode = "groups"

    def __add__(self, other: Importance) -> Importance:
        """Unit-wise sum (used to pool languages)."""

        def add(a, b):
            if a is None or b is None:
                return a if b is None else b
            return [x + y for x, y in zip(a, b)] if isinstance(a, list) else a + b

        return Importance(add(self.heads, other.heads), add(self.neurons, other.neurons), add(self.blocks, other.blocks), self.gqa)


@dataclass
class LayerKeep:
    """Positions (in the block as it was) of what a block keeps."""

    query_heads: list[int]
    kv_heads: list[int]
    neurons: list[int]


@dataclass
class Selection:
    """What to keep: per block (as the model was) and which blocks."""

    layers: list[LayerKeep]
    blocks: list[int]
    removed_params: int
    total_params: int
    gqa: GqaMode = "groups"
    removed: dict[str, int] = field(default_factory=dict)  # units removed, by type

    @property
    def sparsity(self) -> float:
        return self.removed_params / self.total_params


@dataclass
class _Candidates:
    """Removable units of one type, flattened over blocks, in block order."""

    scores: list[float]
    costs: list[float]
    layers: list[int]
    members: list[tuple[int, ...]]  # unit indices removed together
    caps: dict[int, int]  # most candidates removable per block


def _head_candidates(adapter, blocks, layouts, heads, gqa, layer_ids) -> _Candidates:
    out = _Candidates([], [], [], [], {})
    for i in layer_ids:
        layout, kind = layouts[i], layouts[i].head_unit(gqa)
        n_units = layout.n_head_units(gqa)
        scores = heads[i].double()
        if scores.shape != (n_units,):
            raise BabelpruneError(f"Block {i} has {n_units} head units but the importance gives {tuple(scores.shape)}; recompute it on this model.")
        costs = unit_costs(adapter, blocks[i], head_unit_map(adapter, layout, kind), n_units)
        if kind == "query":  # slices: the j-th least important query head of every group
            order = scores.view(layout.n_kv_heads, layout.group_size).argsort(dim=1, stable=True)
            members = order + torch.arange(layout.n_kv_heads, device=order.device).unsqueeze(1) * layout.group_size  # (KV, r) head ids
            slices = [tuple(members[:, j].tolist()) for j in range(layout.group_size)]
            out.caps[i] = layout.group_size - 1
        else:
            slices = [(u,) for u in range(n_units)]
            out.caps[i] = n_units - 1
        for members_j in slices:
            out.scores.append(float(scores[list(members_j)].sum()))
            out.costs.append(float(costs[list(members_j)].sum()))
            out.layers.append(i)
            out.members.append(members_j)
    return out


def _neuron_candidates(adapter, blocks, layouts, neurons, layer_ids) -> _Candidates:
    out = _Candidates([], [], [], [], {})
    for i in layer_ids:
        layout = layouts[i]
        if neurons[i].shape != (layout.ffn,):
            raise BabelpruneError(f"Block {i} has {layout.ffn} neurons but the importance gives {tuple(neurons[i].shape)}; recompute it on this model.")
        costs = unit_costs(adapter, blocks[i], neuron_unit_map(adapter, layout), layout.ffn)
        out.scores += neurons[i].double().tolist()
        out.costs += costs.tolist()
        out.layers += [i] * layout.ffn
        out.members += [(n,) for n in range(layout.ffn)]
        out.caps[i] = layout.ffn - 1
    return out


def _greedy(c: _Candidates, budget: float) -> tuple[list[int], float, float | None]:
    """Take candidates by ascending score while they fit; (taken, removed, cheapest cost still takeable)."""
    order = torch.tensor(c.scores, dtype=torch.float64, device="cpu").argsort(stable=True).tolist() if c.scores else []
    taken, removed, count = [], 0.0, dict.fromkeys(c.caps, 0)
    skipped: float | None = None
    for k in order:
        layer, cost = c.layers[k], c.costs[k]
        if count[layer] >= c.caps[layer]:
            continue
        if removed + cost > budget + 1e-6:
            skipped = cost if skipped is None else min(skipped, cost)
            continue
        taken.append(k)
        removed += cost
        count[layer] += 1
    return taken, removed, skipped


def _check_tolerance(target: float, removed: float, total: float, next_cost: float | None, tolerance: float, what: str) -> None:
    achieved = removed / total
    if abs(achieved - target) <= tolerance + 1e-12:
        return
    options = [achieved] + ([(removed + next_cost) / total] if next_cost is not None else [])
    nearest = min(options, key=lambda s: abs(s - target))
    raise BabelpruneError(
        f"Sparsity {target} cannot be reached by removing whole {what} (at most one unit short of it, within "
        f"{tolerance}); the nearest valid sparsity is {nearest:.4f}."
    )


def _layers_keep(layouts: list[LayerLayout], gqa: GqaMode, removed_heads: dict[int, set], removed_neurons: dict[int, set]) -> list[LayerKeep]:
    keeps = []
    for i, layout in enumerate(layouts):
        gone = removed_heads.get(i, set())
        kind = layout.head_unit(gqa)
        if kind == "query":
            keep_q = [h for h in range(layout.n_heads) if h not in gone]
            keep_kv = list(range(layout.n_kv_heads))
        else:
            keep_kv = [g for g in range(layout.n_kv_heads) if g not in gone]
            keep_q = [h for h in range(layout.n_heads) if h // layout.group_size in keep_kv]
        dropped = removed_neurons.get(i, set())
        keeps.append(LayerKeep(keep_q, keep_kv, [n for n in range(layout.ffn) if n not in dropped]))
    return keeps


def _attention_params(adapter: ArchAdapter, block: nn.Module) -> int:
    return sum(linear_params(m) for m in adapter.attention_linears(block).values())


@dataclass
class _Removed:
    """Running tally of a selection: removed head units and neurons per block, parameters removed."""

    heads: dict[int, set] = field(default_factory=dict)
    neurons: dict[int, set] = field(default_factory=dict)
    params: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: {"heads": 0, "neurons": 0})


def _select_in(model_parts, importance: Importance, sparsity: float, layer_ids: list[int], removed: _Removed) -> tuple[float, float, float | None]:
    """Select among `layer_ids` (all blocks, or one); returns (parameters removed, their total, next unit's cost)."""
    adapter, blocks, layouts, sizes = model_parts
    group_total = float(sum(sizes[i] for i in layer_ids))
    budget = sparsity * group_total
    spent, next_cost = 0.0, None
    if importance.heads is not None:
        attention = sum(_attention_params(adapter, blocks[i]) for i in layer_ids)
        head_budget = budget if importance.neurons is None else sparsity * attention
        cands = _head_candidates(adapter, blocks, layouts, importance.heads, importance.gqa, layer_ids)
        taken, spent, next_cost = _greedy(cands, head_budget)
        for k in taken:
            removed.heads.setdefault(cands.layers[k], set()).update(cands.members[k])
            removed.counts["heads"] += len(cands.members[k])
    if importance.neurons is not None:  # the FFN gets what the heads left of the budget
        cands = _neuron_candidates(adapter, blocks, layouts, importance.neurons, layer_ids)
        taken, ffn_spent, next_cost = _greedy(cands, budget - spent)
        spent += ffn_spent
        for k in taken:
            removed.neurons.setdefault(cands.layers[k], set()).update(cands.members[k])
        removed.counts["neurons"] += len(taken)
    removed.params += spent
    return spent, group_total, next_cost


def select_units(
    model: nn.Module,
    importance: Importance,
    sparsity: float,
    ranking: Ranking = "global",
    tolerance: float = DEFAULT_TOLERANCE,
) -> Selection:
    """Which units to remove so that `sparsity` of the block parameters goes (see the module docstring)."""
    check_sparsity(sparsity)
    if ranking not in ("global", "per-layer"):
        raise BabelpruneError(f"Unknown ranking '{ranking}'; use 'global' or 'per-layer'.")
    adapter = adapter_for(model)
    blocks, layouts = list(adapter.get_blocks(model)), layer_layouts(model, adapter)
    sizes = [block_params(adapter, b) for b in blocks]
    if importance.blocks is not None:
        if importance.heads is not None or importance.neurons is not None:
            raise BabelpruneError("Remove blocks in a run of their own, then heads or FFN neurons in a second run.")
        if ranking != "global":
            raise BabelpruneError("Blocks can only be ranked globally; use ranking 'global'.")
        return _select_blocks(importance, sparsity, layouts, sizes, tolerance)
    groups = [list(range(len(blocks)))] if ranking == "global" else [[i] for i in range(len(blocks))]
    what = "heads" if importance.neurons is None else "units"
    removed = _Removed()
    for layer_ids in groups:
        spent, group_total, next_cost = _select_in((adapter, blocks, layouts, sizes), importance, sparsity, layer_ids, removed)
        where = what if ranking == "global" else f"{what} in block {layer_ids[0]}"
        _check_tolerance(sparsity, spent, group_total, next_cost, tolerance, where)
    return Selection(
        layers=_layers_keep(layouts, importance.gqa, removed.heads, removed.neurons),
        blocks=list(range(len(blocks))),
        removed_params=round(removed.params),
        total_params=sum(sizes),
        gqa=importance.gqa,
        removed=removed.counts,
    )


def _select_blocks(importance: Importance, sparsity: float, layouts: list[LayerLayout], sizes: list[int], tolerance: float) -> Selection:
    n = len(sizes)
    if importance.blocks.shape != (n,):
        raise BabelpruneError(f"The model has {n} blocks but the importance gives {tuple(importance.blocks.shape)}; recompute it on this model.")
    cands = _Candidates(importance.blocks.double().tolist(), [float(s) for s in sizes], [0] * n, [(i,) for i in range(n)], {0: n - 1})
    taken, spent, next_cost = _greedy(cands, sparsity * sum(sizes))
    _check_tolerance(sparsity, spent, float(sum(sizes)), next_cost, tolerance, "blocks")
    dropped = {cands.members[k][0] for k in taken}
    keeps = [LayerKeep(list(range(lay.n_heads)), list(range(lay.n_kv_heads)), list(range(lay.ffn))) for lay in layouts]
    return Selection(keeps, [i for i in range(n) if i not in dropped], int(spent), sum(sizes), importance.gqa, {"blocks": len(dropped)})


def apply_selection(model: nn.Module, selection: Selection) -> nn.Module:
    """Remove, physically and in place, everything `selection` does not keep; record the new widths.

    Heads and neurons first (positions refer to the blocks as they were), then blocks.
    """
    adapter = adapter_for(model)
    layouts = layer_layouts(model, adapter)
    if len(layouts) != len(selection.layers):
        raise BabelpruneError(f"The selection covers {len(selection.layers)} blocks but the model has {len(layouts)}; select on this model.")
    for i, (layout, keep) in enumerate(zip(layouts, selection.layers)):
        if len(keep.query_heads) != layout.n_heads or len(keep.kv_heads) != layout.n_kv_heads:
            remove_heads(model, adapter, i, keep.query_heads, keep.kv_heads)
        if len(keep.neurons) != layout.ffn:
            remove_neurons(model, adapter, i, keep.neurons)
    if len(selection.blocks) != len(layouts):
        remove_blocks(model, adapter, selection.blocks)
    record_structure(model, adapter)
    return model
