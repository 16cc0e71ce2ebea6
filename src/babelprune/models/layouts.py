"""Which structural units a model has, what each costs, and their physical removal.

Units, per block:

* attention heads. With as many key/value heads as query heads (multi-head
  attention) one unit is a head: its q, k and v rows and its o columns
  ("head"). With grouped-query attention (fewer key/value heads) a unit is
  either a whole key/value group, a kv head and all the query heads that
  share it ("group"), or a single query head ("query"), removed evenly within
  groups so that every group keeps the same number of query heads.
* FFN neurons: one row of gate and up (gated FFNs) or of up, and one column of
  down ("neuron"); in a fused gate_up (Phi-3) neuron j is rows j and ffn + j.
* whole blocks.

Query head h belongs to key/value group h // r, r = query heads per kv head
(the layout `repeat_kv` expands). Removal builds smaller dense linears and
updates the attributes the attention and MLP modules cache (see
`StructureParts` in the adapters), then records every block's widths in
`config.babelprune_structure` so that a saved model can be rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import (
    ArchAdapter,
    StructureParts,
    fused_qkv_rows,
    weight_matrix,
)

HeadUnit = Literal["head", "group", "query"]
GqaMode = Literal["groups", "query"]
STRUCTURE_KEY = "babelprune_structure"  # config attribute holding per-block widths
# Set on a linear that was built without a bias and received one after pruning (a structured refit);
# `record_structure` lists such linears so that a reloaded model gets the bias parameter back.
ADDED_BIAS_ATTR = "babelprune_added_bias"
ADDED_BIAS_KEY = "added_bias"  # in the structure: {linear role ("o", "down"): [block indices]}
# unit map of one linear: (axis, unit index of each row (axis 0) or column (axis 1), -1 = in no unit)
UnitMap = dict[str, tuple[int, torch.Tensor]]


@dataclass(frozen=True)
class LayerLayout:
    """The widths of one block, read from its weights."""

    n_heads: int  # query heads
    n_kv_heads: int
    head_dim: int
    ffn: int  # FFN neurons

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    def head_unit(self, gqa: GqaMode) -> HeadUnit:
        """The head unit of this block: "head" without grouping, else the asked GQA unit."""
        if self.group_size == 1:
            return "head"
        return "group" if gqa == "groups" else "query"

    def n_head_units(self, gqa: GqaMode) -> int:
        return self.n_heads if self.head_unit(gqa) == "query" else self.n_kv_heads


def structure_of(adapter: ArchAdapter) -> StructureParts:
    if adapter.structure is None:
        raise BabelpruneError(f"Structured pruning does not support the {adapter.family} family; use unstructured pruning.")
    return adapter.structure


def check_head_removal(adapter: ArchAdapter) -> None:
    """Raise BabelpruneError when this family's heads cannot be removed."""
    blocker = structure_of(adapter).head_removal_blocker
    if blocker:
        raise BabelpruneError(f"Heads of {adapter.family} models cannot be removed because {blocker}; prune 'ffn' or 'blocks' only.")


def layer_layout(adapter: ArchAdapter, block: nn.Module, head_dim: int) -> LayerLayout:
    """The widths of one block, from the shapes of its linears."""
    attention = adapter.attention_linears(block)
    # o reads the query heads' outputs in every family: its columns are heads * head_dim.
    n_heads = weight_matrix(attention["o"]).shape[1] // head_dim
    if adapter.attention.is_fused:
        # The fused rows are q (H*d) then k and v (KV*d each), whatever their order.
        n_kv = (weight_matrix(attention["qkv"]).shape[0] - n_heads * head_dim) // (2 * head_dim)
    else:
        n_kv = weight_matrix(attention["k"]).shape[0] // head_dim
    ffn = weight_matrix(adapter.ffn_linears(block)["down"]).shape[1]
    return LayerLayout(n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, ffn=ffn)


def layer_layouts(model: nn.Module, adapter: ArchAdapter) -> list[LayerLayout]:
    head_dim = adapter.head_dim(model.config)
    return [layer_layout(adapter, block, head_dim) for block in adapter.get_blocks(model)]


# ----- unit maps: which rows/columns of which linear belong to which unit ------


def _head_to_unit(layout: LayerLayout, kind: HeadUnit) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit of each query head (H,), unit of each kv head (KV,), -1 when kv heads are in no unit)."""
    # Unit maps are index bookkeeping on the CPU, whatever the model's device (as are the importances they reduce to).
    heads = torch.arange(layout.n_heads, device="cpu")
    kv = torch.arange(layout.n_kv_heads, device="cpu")
    if kind == "query":
        return heads, torch.full_like(kv, -1)
    return heads // layout.group_size, kv


def head_unit_map(adapter: ArchAdapter, layout: LayerLayout, kind: HeadUnit) -> UnitMap:
    """Rows of q/k/v (or the fused qkv) and columns of o that each head unit owns."""
    d = layout.head_dim
    q_unit, kv_unit = _head_to_unit(layout, kind)
    q_rows = q_unit.repeat_interleave(d)  # (H*d,): unit of each query row, in head order
    kv_rows = kv_unit.repeat_interleave(d)  # (KV*d,)
    if adapter.attention.is_fused:
        rows = fused_qkv_rows(adapter.attention.fused_layout, layout.n_heads, layout.n_kv_heads, d)
        total = sum(len(r) for r in rows.values())
        fused = torch.full((total,), -1, dtype=torch.long, device="cpu")
        fused[rows["q"]], fused[rows["k"]], fused[rows["v"]] = q_rows, kv_rows, kv_rows
        return {"qkv": (0, fused), "o": (1, q_rows)}
    return {"q": (0, q_rows), "k": (0, kv_rows), "v": (0, kv_rows), "o": (1, q_rows)}


def ffn_rows(adapter: ArchAdapter, neurons: torch.Tensor, ffn: int) -> dict[str, torch.Tensor]:
    """Rows of the FFN input linears that hold the given neurons, in the order given.

    Separate gate and up: row j of each. A fused gate_up of 2 * ffn rows
    ([gate | up]): rows j and ffn + j, the gate half first so that it stays
    the first half the forward splits off.
    """
    parts = adapter.ffn
    if parts.is_fused:
        return {"gate_up": torch.cat([neurons, neurons + ffn])}
    return ({"gate": neurons} if parts.gate is not None else {}) | {"up": neurons}


def neuron_unit_map(adapter: ArchAdapter, layout: LayerLayout) -> UnitMap:
    """Rows of gate/up (or the fused gate_up) and columns of down, one neuron each."""
    neurons = torch.arange(layout.ffn, device="cpu")
    # Indexed by row, each input linear's rows name their neuron: for fused gate_up, j then j again.
    rows = {name: (0, index % layout.ffn) for name, index in ffn_rows(adapter, neurons, layout.ffn).items()}
    return rows | {"down": (1, neurons)}


def reduce_to_units(per_index: dict[str, tuple[torch.Tensor, torch.Tensor]], unit_map: UnitMap, n_units: int) -> torch.Tensor:
    """Sum, per unit, values given per row or column of each linear.

    per_index: name -> (per-row values (out,), per-column values (in,)); the
    axis the unit map names is read. Returns (n_units,) float64.
    """
    total = torch.zeros(n_units, dtype=torch.float64, device="cpu")
    for name, (axis, units) in unit_map.items():
        values = per_index[name][axis].double().cpu()  # a few numbers per unit, read by the selection on the CPU
        inside = units >= 0
        total.index_add_(0, units[inside], values[inside])
    return total


def linear_index_costs(linear: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameters freed by removing each row (weights + bias entry) and each column of a linear."""
    out_features, in_features = weight_matrix(linear).shape
    row_cost = in_features + (1 if getattr(linear, "bias", None) is not None else 0)
    return torch.full((out_features,), float(row_cost), device="cpu"), torch.full((in_features,), float(out_features), device="cpu")


def unit_costs(adapter: ArchAdapter, block: nn.Module, unit_map: UnitMap, n_units: int) -> torch.Tensor:
    """(n_units,) parameters each unit owns in this block."""
    linears = adapter.block_linears(block)
    per_index = {name: linear_index_costs(linears[name]) for name in unit_map}
    return reduce_to_units(per_index, unit_map, n_units)


def linear_params(linear: nn.Module) -> int:
    bias = getattr(linear, "bias", None)
    return weight_matrix(linear).numel() + (bias.numel() if bias is not None else 0)


def block_params(adapter: ArchAdapter, block: nn.Module) -> int:
    """Weights and biases of a block's attention and FFN linears (what sparsity is a share of)."""
    return sum(linear_params(linear) for linear in adapter.block_linears(block).values())


def total_block_params(model: nn.Module, adapter: ArchAdapter) -> int:
    return sum(block_params(adapter, block) for block in adapter.get_blocks(model))


def model_params(model: nn.Module) -> int:
    """Every parameter of the model, tied ones once."""
    return sum(p.numel() for p in model.parameters())


# ----- physical removal ----------------------------------------------------------


def shrink_linear(linear: nn.Module, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Module:
    """A new linear (same class, dtype, device) keeping the given output rows and input columns."""
    weight = weight_matrix(linear)  # (out, in)
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    bias = linear.bias.detach() if getattr(linear, "bias", None) is not None else None
    bias = bias[rows] if bias is not None and rows is not None else bias
    out_features, in_features = weight.shape
    grad = linear.weight.requires_grad
    with torch.device("meta"):  # no random initialisation of weights overwritten just below
        if isinstance(linear, Conv1D):
            new = Conv1D(out_features, in_features)
            new.weight = nn.Parameter(weight.t().contiguous().clone(), requires_grad=grad)
        else:
            new = nn.Linear(in_features, out_features, bias=bias is not None)
            new.weight = nn.Parameter(weight.contiguous().clone(), requires_grad=grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.contiguous().clone(), requires_grad=grad)
    if getattr(linear, ADDED_BIAS_ATTR, False):
        setattr(new, ADDED_BIAS_ATTR, True)
    return new.train(linear.training)


def add_output_bias(linear: nn.Module, bias: torch.Tensor) -> None:
    """Add `bias` (out,) to the linear's output: to its bias, or as a new bias marked as added (`ADDED_BIAS_ATTR`)."""
    weight = weight_matrix(linear)
    bias = bias.detach().to(dtype=weight.dtype, device=weight.device)
    if getattr(linear, "bias", None) is not None:
        with torch.no_grad():
            linear.bias.add_(bias)
        return
    linear.bias = nn.Parameter(bias.clone(), requires_grad=linear.weight.requires_grad)
    setattr(linear, ADDED_BIAS_ATTR, True)


def added_biases(model: nn.Module, adapter: ArchAdapter) -> dict[str, list[int]]:
    """{"o": [...], "down": [...]}: the blocks whose output projection or FFN down projection received an added bias."""
    found: dict[str, list[int]] = {}
    for i, block in enumerate(adapter.get_blocks(model)):
        for role, linear in (("o", adapter.attention_linears(block)["o"]), ("down", adapter.ffn_linears(block)["down"])):
            if getattr(linear, ADDED_BIAS_ATTR, False):
                found.setdefault(role, []).append(i)
    return found


def restore_added_biases(model: nn.Module, adapter: ArchAdapter, structure: dict) -> None:
    """Give the linears a structure lists under `ADDED_BIAS_KEY` a zero bias, to be overwritten by the saved one."""
    blocks = adapter.get_blocks(model)
    for role, indices in (structure.get(ADDED_BIAS_KEY) or {}).items():
        for i in indices:
            block = blocks[i]
            linear = adapter.attention_linears(block)["o"] if role == "o" else adapter.ffn_linears(block)["down"]
            add_output_bias(linear, torch.zeros(weight_matrix(linear).shape[0]))


def _rows_of_heads(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Row (or column) numbers of the given heads, in the order given."""
    # Index bookkeeping on the CPU whatever the model's device: torch indexes any device's weight with it.
    heads = torch.as_tensor(list(heads), dtype=torch.long, device="cpu")
    return (heads.unsqueeze(1) * head_dim + torch.arange(head_dim, device="cpu")).reshape(-1)


def check_head_keep(layout: LayerLayout, keep_q: Sequence[int], keep_kv: Sequence[int]) -> None:
    """Kept query heads must sit in kept kv groups, the same number in each, at least one."""
    groups: dict[int, int] = {g: 0 for g in keep_kv}
    for h in keep_q:
        group = h // layout.group_size
        if group not in groups:
            raise BabelpruneError(f"Query head {h} is kept but its key/value head {group} is removed; keep or remove them together.")
        groups[group] += 1
    counts = set(groups.values())
    if not keep_q or len(counts) != 1 or 0 in counts:
        raise BabelpruneError(
            "Every kept key/value group must keep the same number (at least one) of query heads; "
            "remove query heads evenly within groups."
        )


def remove_heads(model: nn.Module, adapter: ArchAdapter, index: int, keep_q: Sequence[int], keep_kv: Sequence[int]) -> None:
    """Keep only the listed query heads and kv heads of block `index` (ascending positions)."""
    check_head_removal(adapter)
    block = adapter.get_blocks(model)[index]
    layout = layer_layout(adapter, block, adapter.head_dim(model.config))
    keep_q, keep_kv = sorted(keep_q), sorted(keep_kv)
    check_head_keep(layout, keep_q, keep_kv)
    d, parts = layout.head_dim, adapter.attention
    linears = adapter.attention_linears(block)
    q_rows, kv_rows = _rows_of_heads(keep_q, d), _rows_of_heads(keep_kv, d)
    if parts.is_fused:
        rows = fused_qkv_rows(parts.fused_layout, layout.n_heads, layout.n_kv_heads, d)
        fused = torch.cat([rows["q"][q_rows], rows["k"][kv_rows], rows["v"][kv_rows]])
        block.set_submodule(parts.fused_qkv, shrink_linear(linears["qkv"], rows=fused))
    else:
        block.set_submodule(parts.q, shrink_linear(linears["q"], rows=q_rows))
        block.set_submodule(parts.k, shrink_linear(linears["k"], rows=kv_rows))
        block.set_submodule(parts.v, shrink_linear(linears["v"], rows=kv_rows))
    block.set_submodule(parts.o, shrink_linear(linears["o"], cols=q_rows))
    select_head_norms(structure_of(adapter), block, {"query": keep_q, "kv": keep_kv}, d)
    _set_head_attrs(structure_of(adapter), block, len(keep_q), len(keep_kv), d)


def select_head_norms(structure: StructureParts, block: nn.Module, heads: dict[str, Sequence[int]], head_dim: int) -> None:
    """Keep (or reorder) the per-head slices of the block's head norms: heads["query"] / heads["kv"], in order.

    OLMo 2's q_norm is an RMSNorm over the whole q projection width, so with
    fewer heads it normalizes over the kept heads only: the kept heads keep
    their own weight slices, but their statistics no longer include removed
    heads. That is how Olmo2Attention built with fewer heads computes, so the
    narrower model reloads as it runs; a reordering keeps the function exactly.
    """
    for norm in structure.head_norms:
        try:
            module = block.get_submodule(norm.path)
        except AttributeError:
            continue  # this model has the norm switched off (Cohere without use_qk_norm)
        weight, keep = module.weight, torch.as_tensor(list(heads[norm.heads]), dtype=torch.long, device="cpu")
        per_head = weight.detach().reshape(-1, head_dim)[keep]  # (kept, head_dim): (H*d,) and (H, d) alike
        shape = (len(keep), head_dim) if weight.dim() > 1 else (-1,)
        module.weight = nn.Parameter(per_head.reshape(shape).contiguous().clone(), requires_grad=weight.requires_grad)


def _set_head_attrs(structure: StructureParts, block: nn.Module, n_heads: int, n_kv: int, head_dim: int) -> None:
    attention = block.get_submodule(structure.attention_module)
    for name in structure.head_count_attrs:
        setattr(attention, name, n_heads)
    for name in structure.head_width_attrs:
        setattr(attention, name, n_heads * head_dim)
    if structure.kv_groups_attr:
        setattr(attention, structure.kv_groups_attr, n_heads // n_kv)


def remove_neurons(model: nn.Module, adapter: ArchAdapter, index: int, keep: Sequence[int] | torch.Tensor) -> None:
    """Keep only the listed FFN neurons of block `index`."""
    keep = torch.as_tensor(keep, dtype=torch.long, device="cpu").sort().values
    if keep.numel() == 0:
        raise BabelpruneError("A block must keep at least one FFN neuron; lower the sparsity or remove the block instead.")
    block = adapter.get_blocks(model)[index]
    select_neurons(adapter, block, keep)
    structure = structure_of(adapter)
    if structure.mlp_module:
        mlp = block.get_submodule(structure.mlp_module)
        for name in structure.ffn_width_attrs:
            setattr(mlp, name, int(keep.numel()))


def select_neurons(adapter: ArchAdapter, block: nn.Module, neurons: torch.Tensor) -> None:
    """Rebuild the block's FFN linears with only the given neurons, in the order given."""
    linears, parts = adapter.ffn_linears(block), adapter.ffn
    ffn = weight_matrix(linears["down"]).shape[1]
    paths = {"gate": parts.gate, "up": parts.up, "gate_up": parts.gate_up}
    for name, rows in ffn_rows(adapter, neurons, ffn).items():
        block.set_submodule(paths[name], shrink_linear(linears[name], rows=rows))
    block.set_submodule(parts.down, shrink_linear(linears["down"], cols=neurons))


def remove_blocks(model: nn.Module, adapter: ArchAdapter, keep: Sequence[int]) -> None:
    """Keep only the listed blocks; renumber them and cut every per-block config list."""
    blocks = adapter.get_blocks(model)
    keep = sorted(set(keep))
    if not keep:
        raise BabelpruneError("A model must keep at least one block; lower the sparsity.")
    if keep[-1] >= len(blocks):
        raise BabelpruneError(f"Block {keep[-1]} does not exist: the model has {len(blocks)} blocks.")
    for index in reversed(range(len(blocks))):
        if index not in keep:
            del blocks[index]
    for new_index, block in enumerate(blocks):
        for module in block.modules():  # caches index their layers by these numbers
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    text = adapter.text_config(model.config)
    for name in structure_of(adapter).per_layer_lists:
        values = getattr(text, name, None)
        if isinstance(values, list) and len(values) == text.num_hidden_layers:
            setattr(text, name, [values[i] for i in keep])
    text.num_hidden_layers = len(keep)


# ----- the config ------------------------------------------------------------------


def record_structure(model: nn.Module, adapter: ArchAdapter) -> dict:
    """Write every block's widths into `config.babelprune_structure`; uniform widths also into HF fields.

    Hugging Face configs state one head count and one FFN width for all
    blocks. When every block has the same widths and the family's config can
    say so, those fields are updated too, so plain `from_pretrained` loads
    the model; otherwise they keep the dense values and only
    `load_structured` can rebuild it.
    """
    layouts = layer_layouts(model, adapter)
    text = adapter.text_config(model.config)
    structure = {
        "head_dim": adapter.head_dim(model.config),
        "heads_per_layer": [layout.n_heads for layout in layouts],
        "kv_heads_per_layer": [layout.n_kv_heads for layout in layouts],
        "ffn_per_layer": [layout.ffn for layout in layouts],
    }
    heads = set(zip(structure["heads_per_layer"], structure["kv_heads_per_layer"]))
    if len(heads) == 1 and structure_of(adapter).heads_in_config:
        n_heads, n_kv = heads.pop()
        text.head_dim = structure["head_dim"]  # stated explicitly: it no longer follows hidden / heads
        text.num_attention_heads = n_heads
        if adapter.n_kv_heads_attr:
            setattr(text, adapter.n_kv_heads_attr, n_kv)
    widths = set(structure["ffn_per_layer"])
    if len(widths) == 1 and adapter.intermediate_attr:
        setattr(text, adapter.intermediate_attr, widths.pop())
    biases = added_biases(model, adapter)
    if biases:  # only then: the structure of a model without added biases stays what it was
        structure[ADDED_BIAS_KEY] = biases
    setattr(model.config, STRUCTURE_KEY, structure)
    return structure


def config_matches_weights(model: nn.Module, adapter: ArchAdapter) -> bool:
    """Whether the recorded structure (and the HF fields it set) agree with the weights."""
    structure = getattr(model.config, STRUCTURE_KEY, None)
    layouts = layer_layouts(model, adapter)
    if structure is None or adapter.num_layers(model.config) != len(layouts):
        return False
    return (
        structure["heads_per_layer"] == [lay.n_heads for lay in layouts]
        and structure["kv_heads_per_layer"] == [lay.n_kv_heads for lay in layouts]
        and structure["ffn_per_layer"] == [lay.ffn for lay in layouts]
    )
