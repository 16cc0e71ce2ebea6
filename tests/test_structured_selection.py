"""Selecting units for an exact parameter share, and applying the selection."""

from __future__ import annotations

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for
from babelprune.models.layouts import layer_layouts, total_block_params
from babelprune.prune.structured.selection import (
    Importance,
    apply_selection,
    select_units,
)
from tests.tiny_models import model_output, tiny_inputs, tiny_model

# Tiny Llama, by hand: per block attention 32*32 (q) + 2*16*32 (k, v) + 32*32 (o) = 3072 and
# FFN 3*32*64 = 6144 parameters; 2 blocks: 18432. A kv group costs 1536, a query head 512, a neuron 96.
TOTAL = 18432


def _neurons(block0: list[float], block1: list[float]) -> list[torch.Tensor]:
    return [torch.tensor(block0, dtype=torch.float64), torch.tensor(block1, dtype=torch.float64)]


def test_ffn_only_hits_the_parameter_share_exactly():
    model = tiny_model("llama")
    importance = Importance(neurons=_neurons(list(range(64)), list(range(100, 164))))
    selection = select_units(model, importance, 0.25)  # 0.25 * 18432 = 4608 = 48 neurons of 96
    assert selection.removed_params == 4608 and selection.sparsity == 0.25
    # Global ranking: block 0's neurons all score lower, so the 48 come from block 0 (0..47).
    assert selection.layers[0].neurons == list(range(48, 64))
    assert selection.layers[1].neurons == list(range(64))
    apply_selection(model, selection)
    assert total_block_params(model, adapter_for(model)) == TOTAL - 4608


def test_heads_take_their_share_and_ffn_absorbs_the_rest():
    model = tiny_model("llama")
    heads = [torch.tensor([0.5, 0.9]), torch.tensor([0.7, 0.1])]
    importance = Importance(heads=heads, neurons=_neurons([1.0] * 64, [2.0] * 64), gqa="groups")
    selection = select_units(model, importance, 0.25)
    # Heads: 0.25 * 6144 attention parameters = 1536 = one kv group: the least important, block 1 group 1.
    assert selection.layers[1].kv_heads == [0] and selection.layers[1].query_heads == [0, 1]
    assert selection.layers[0].kv_heads == [0, 1]
    # FFN: 4608 - 1536 = 3072 = 32 neurons, all from block 0 (lower scores; ties go to the lower index).
    assert selection.layers[0].neurons == list(range(32, 64)) and len(selection.layers[1].neurons) == 64
    assert selection.removed_params == 4608


def test_query_units_are_removed_evenly_within_groups():
    model = tiny_model("llama")
    # Block 0: group 0 = heads 0, 1; group 1 = heads 2, 3. The least important head of each group: 0 and 3.
    heads = [torch.tensor([0.1, 0.9, 0.8, 0.2]), torch.tensor([5.0, 6.0, 7.0, 8.0])]
    selection = select_units(model, Importance(heads=heads, gqa="query"), 1024 / TOTAL, tolerance=0.0)
    assert selection.layers[0].query_heads == [1, 2] and selection.layers[0].kv_heads == [0, 1]
    assert selection.layers[1].query_heads == [0, 1, 2, 3]
    inputs = tiny_inputs(model)
    apply_selection(model, selection)
    assert model_output(model, inputs).shape == (2, 8, 128)
    assert [lay.n_heads for lay in layer_layouts(model, adapter_for(model))] == [2, 4]


def test_every_block_keeps_a_neuron_and_a_head():
    model = tiny_model("llama")
    importance = Importance(neurons=_neurons([0.0] * 64, [1.0] * 64))
    selection = select_units(model, importance, 0.6)  # 11059 parameters: more than block 0's 63 removable neurons
    assert len(selection.layers[0].neurons) == 1
    assert len(selection.layers[1].neurons) == 64 - (115 - 63)
    heads_only = Importance(heads=[torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0])], gqa="groups")
    with pytest.raises(BabelpruneError, match="nearest valid sparsity is 0.1667"):
        select_units(model, heads_only, 0.3)  # at most one group per block: 2 * 1536 / 18432


def test_per_layer_ranking_prunes_every_block_alike():
    model = tiny_model("llama")
    importance = Importance(neurons=_neurons(list(range(64)), list(range(100, 164))))
    selection = select_units(model, importance, 0.25, ranking="per-layer")
    assert selection.layers[0].neurons == list(range(24, 64))
    assert selection.layers[1].neurons == list(range(24, 64))


def test_impossible_gqa_split_names_the_nearest_valid_sparsity():
    model = tiny_model("llama")
    importance = Importance(heads=[torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], gqa="groups")
    # One kv group is 1536 / 18432 = 0.0833 of the parameters; 0.1 is not reachable with whole groups.
    with pytest.raises(BabelpruneError, match="nearest valid sparsity is 0.0833"):
        select_units(model, importance, 0.1)
    assert select_units(model, importance, 1536 / TOTAL).layers[0].kv_heads == [1]


def test_blocks_are_selected_alone():
    model = tiny_model("llama")
    selection = select_units(model, Importance(blocks=torch.tensor([2.0, 1.0])), 0.5)
    assert selection.blocks == [0] and selection.removed_params == TOTAL // 2
    with pytest.raises(BabelpruneError, match="run of their own"):
        select_units(model, Importance(blocks=torch.tensor([2.0, 1.0]), neurons=_neurons([0.0] * 64, [0.0] * 64)), 0.5)
    apply_selection(model, selection)
    assert model.config.num_hidden_layers == 1


def test_bad_inputs_are_refused():
    model = tiny_model("llama")
    with pytest.raises(BabelpruneError, match="outside"):
        select_units(model, Importance(neurons=_neurons([0.0] * 64, [0.0] * 64)), 1.2)
    with pytest.raises(BabelpruneError, match="recompute"):
        select_units(model, Importance(neurons=_neurons([0.0] * 10, [0.0] * 64)), 0.2)


def test_importances_add_unit_by_unit():
    a = Importance(heads=[torch.tensor([1.0, 2.0])], neurons=None)
    b = Importance(heads=[torch.tensor([3.0, 5.0])], neurons=[torch.tensor([1.0])])
    total = a + b
    assert total.heads[0].tolist() == [4.0, 7.0] and total.neurons[0].tolist() == [1.0]
