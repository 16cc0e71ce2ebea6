"""Structured units (`babelprune.models.layouts`): counting, costs, and physical removal that keeps models consistent."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.layouts import (
    STRUCTURE_KEY,
    config_matches_weights,
    head_unit_map,
    layer_layouts,
    neuron_unit_map,
    record_structure,
    remove_blocks,
    remove_heads,
    remove_neurons,
    total_block_params,
    unit_costs,
)
from tests.tiny_models import ALL_TINY_FAMILIES, model_output, tiny_config, tiny_inputs, tiny_model

GQA_FAMILIES = ("llama", "qwen2", "mistral", "gemma3", "gemma", "gemma2", "gemma3-multimodal", "qwen3", "cohere")
# Heads are refused for BLOOM and Phi-3; OLMo 2's q/k norms span every head, so removing a
# zeroed head changes the kept heads' statistics: it has tests of its own below.
HEAD_FAMILIES = tuple(f for f in ALL_TINY_FAMILIES if f not in ("bloom", "phi3", "olmo2"))


def test_layouts_count_heads_and_neurons():
    # Tiny configs: 4 query heads; 2 kv heads for GQA families; head_dim 8 (16 for Gemma); FFN 64 (128 for GPT-2/BLOOM).
    expected = {"llama": (4, 2, 8, 64), "gemma3": (4, 2, 16, 64), "gpt2": (4, 4, 8, 128), "bloom": (4, 4, 8, 128),
                "opt": (4, 4, 8, 64), "bert": (4, 4, 8, 64)}
    for family, (heads, kv, d, ffn) in expected.items():
        model = tiny_model(family)
        layouts = layer_layouts(model, adapter_for(model))
        assert len(layouts) == 2
        assert {(lay.n_heads, lay.n_kv_heads, lay.head_dim, lay.ffn) for lay in layouts} == {(heads, kv, d, ffn)}


def test_unit_costs_by_hand():
    llama = tiny_model("llama")
    adapter = adapter_for(llama)
    block, layout = adapter.get_blocks(llama)[0], layer_layouts(llama, adapter)[0]
    # A kv group: 2 query heads (2*8 rows of 32) + k and v (8 rows of 32 each) + o (2*8 columns of 32), no biases.
    group = unit_costs(adapter, block, head_unit_map(adapter, layout, "group"), 2)
    assert group.tolist() == [2 * 8 * 32 + 8 * 32 + 8 * 32 + 2 * 8 * 32] * 2
    query = unit_costs(adapter, block, head_unit_map(adapter, layout, "query"), 4)
    assert query.tolist() == [8 * 32 + 8 * 32] * 4
    neurons = unit_costs(adapter, block, neuron_unit_map(adapter, layout), 64)
    assert set(neurons.tolist()) == {32 + 32 + 32}
    assert total_block_params(llama, adapter) == 2 * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 32 * 64)
    bert = tiny_model("bert")
    adapter = adapter_for(bert)
    block, layout = adapter.get_blocks(bert)[0], layer_layouts(bert, adapter)[0]
    # BERT has biases on q/k/v rows (o's bias is not per head, so it stays).
    assert unit_costs(adapter, block, head_unit_map(adapter, layout, "head"), 4).tolist() == [3 * 8 * 33 + 8 * 32] * 4
    assert set(unit_costs(adapter, block, neuron_unit_map(adapter, layout), 64).tolist()) == {33 + 32}


def _zero_units(model, family_units: dict[int, tuple[str, set[int], set[int]]]) -> None:
    """Zero the weights of some head units (by kind) and neurons in given blocks."""
    adapter = adapter_for(model)
    for index, (kind, heads, neurons) in family_units.items():
        block = adapter.get_blocks(model)[index]
        layout = layer_layouts(model, adapter)[index]
        linears = adapter.block_linears(block)
        maps = (head_unit_map(adapter, layout, kind), heads), (neuron_unit_map(adapter, layout), neurons)
        for unit_map, chosen in maps:
            for name, (axis, units) in unit_map.items():
                hit = torch.tensor([int(u) in chosen for u in units])
                weight = weight_matrix(linears[name])
                if axis == 0:
                    weight[hit] = 0
                else:
                    weight[:, hit] = 0


def _keep_lists(layout, kind: str, removed: set[int]) -> tuple[list[int], list[int]]:
    if kind == "query":
        return [h for h in range(layout.n_heads) if h not in removed], list(range(layout.n_kv_heads))
    kv = [g for g in range(layout.n_kv_heads) if g not in removed]
    return [h for h in range(layout.n_heads) if h // layout.group_size in kv], kv


# Without grouped-query attention both modes are the same, so "query" runs on the GQA families only.
@pytest.mark.parametrize(("family", "gqa"), [(f, "groups") for f in HEAD_FAMILIES] + [(f, "query") for f in GQA_FAMILIES])
def test_removing_zeroed_units_changes_no_output(family, gqa):
    model = tiny_model(family)
    adapter = adapter_for(model)
    layouts = layer_layouts(model, adapter)
    kind = layouts[0].head_unit(gqa)
    # Block 0 loses head unit 0 (query mode: one query head of each group), block 1 its last unit.
    removed = {0: {0, 3} if kind == "query" else {0}, 1: {1, 2} if kind == "query" else {layouts[1].n_head_units(gqa) - 1}}
    neurons = {0: {1, 5, 7}, 1: {0, 63}}
    inputs = tiny_inputs(model)
    with torch.no_grad():
        _zero_units(model, {i: (kind, removed[i], neurons[i]) for i in (0, 1)})
        before = model_output(model, inputs)
        for i, layout in enumerate(layouts):
            remove_heads(model, adapter, i, *_keep_lists(layout, kind, removed[i]))
            remove_neurons(model, adapter, i, [n for n in range(layout.ffn) if n not in neurons[i]])
    record_structure(model, adapter)
    after = model_output(model, inputs)
    assert after.shape == before.shape
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    new = layer_layouts(model, adapter)
    assert [lay.ffn for lay in new] == [layouts[0].ffn - 3, layouts[1].ffn - 2]
    expected_heads = layouts[0].n_heads - (2 if kind == "query" else layouts[0].group_size)
    assert [lay.n_heads for lay in new] == [expected_heads, expected_heads]
    assert config_matches_weights(model, adapter)
    o = adapter.attention_linears(adapter.get_blocks(model)[0])["o"]
    assert weight_matrix(o).shape == (adapter.hidden_size(model.config), expected_heads * layouts[0].head_dim)


@pytest.mark.parametrize(("family", "reason"), [("bloom", "ALiBi"), ("phi3", "splits the fused qkv output")])
def test_heads_are_refused_but_neurons_removed(family, reason):
    model = tiny_model(family)
    adapter = adapter_for(model)
    with pytest.raises(BabelpruneError, match=reason):
        remove_heads(model, adapter, 0, [0, 1, 2], [0, 1, 2])
    ffn = layer_layouts(model, adapter)[0].ffn
    inputs = tiny_inputs(model)
    with torch.no_grad():
        _zero_units(model, {0: ("head", set(), {3, 4})})
        before = model_output(model, inputs)
        remove_neurons(model, adapter, 0, [n for n in range(ffn) if n not in (3, 4)])
    torch.testing.assert_close(model_output(model, inputs), before, atol=1e-5, rtol=1e-5)
    assert layer_layouts(model, adapter)[0].ffn == ffn - 2


def test_phi3_neuron_removal_cuts_both_halves_of_gate_up():
    model = tiny_model("phi3")
    adapter = adapter_for(model)
    mlp = adapter.get_blocks(model)[0].mlp
    gate_up, down = mlp.gate_up_proj.weight.detach().clone(), mlp.down_proj.weight.detach().clone()
    remove_neurons(model, adapter, 0, [0, 5, 63])
    # Rows [gate 0, 5, 63 | up 0, 5, 63] of the (2 * 64, 32) weight, and the same columns of down, by hand.
    assert torch.equal(mlp.gate_up_proj.weight, gate_up[[0, 5, 63, 64, 69, 127]])
    assert torch.equal(mlp.down_proj.weight, down[:, [0, 5, 63]])
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        gate, up = x @ gate_up[[0, 5, 63]].T, x @ gate_up[[64, 69, 127]].T
        expected = (torch.nn.functional.silu(gate) * up) @ down[:, [0, 5, 63]].T
        torch.testing.assert_close(mlp(x), expected)


def _random_qk_norms(model) -> None:
    """q/k norm weights away from their initial ones, so a wrong slice shows in the outputs."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))


def test_olmo2_head_removal_slices_q_and_k_norms_as_olmo2_builds_fewer_heads():
    model = tiny_model("olmo2")
    _random_qk_norms(model)
    dense = {name: value.clone() for name, value in model.state_dict().items()}
    adapter = adapter_for(model)
    for i in range(2):  # every block keeps kv group 1: kv head 1 and query heads 2 and 3
        remove_heads(model, adapter, i, [2, 3], [1])
    record_structure(model, adapter)
    # A fresh OLMo 2 of 2 query heads and 1 kv head, given the kept heads' rows sliced by hand (head_dim 8).
    q_rows, kv_rows = list(range(16, 32)), list(range(8, 16))
    sliced = {}
    for name, value in dense.items():
        if name.endswith(("q_proj.weight", "q_norm.weight")):
            value = value[q_rows]
        elif name.endswith(("k_proj.weight", "v_proj.weight", "k_norm.weight")):
            value = value[kv_rows]
        elif name.endswith("o_proj.weight"):
            value = value[:, q_rows]
        sliced[name] = value
    assert model.model.layers[0].self_attn.q_norm.weight.shape == (16,)
    assert model.model.layers[0].self_attn.k_norm.weight.shape == (8,)
    reference = type(model)(model.config).eval()
    reference.load_state_dict(sliced)
    inputs = tiny_inputs(model)
    torch.testing.assert_close(model_output(model, inputs), model_output(reference, inputs))


def test_cohere_qk_norm_slices_move_with_their_heads():
    # Command R's optional qk-norm: a LayerNorm per head over head_dim, weight (heads, head_dim).
    config = tiny_config("cohere")
    config.use_qk_norm = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    _random_qk_norms(model)
    adapter = adapter_for(model)
    q_norm = adapter.get_blocks(model)[0].self_attn.q_norm.weight.detach().clone()
    inputs = tiny_inputs(model)
    with torch.no_grad():
        _zero_units(model, {0: ("query", {0, 3}, set())})
        before = model_output(model, inputs)
        remove_heads(model, adapter, 0, [1, 2], [0, 1])
    assert torch.equal(adapter.get_blocks(model)[0].self_attn.q_norm.weight, q_norm[[1, 2]])
    torch.testing.assert_close(model_output(model, inputs), before, atol=1e-5, rtol=1e-5)


def test_uneven_query_heads_per_group_are_refused():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    with pytest.raises(BabelpruneError, match="same number"):
        remove_heads(model, adapter, 0, [0, 1, 2], [0, 1])  # group 0 keeps 2, group 1 keeps 1
    with pytest.raises(BabelpruneError, match="key/value head"):
        remove_heads(model, adapter, 0, [0, 2], [0])  # head 2 needs kv head 1


def test_query_pruning_updates_kv_groups_and_eager_attention_agrees():
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"
    adapter = adapter_for(model)
    with torch.no_grad():
        _zero_units(model, {0: ("query", {1, 2}, set())})
        before = model_output(model, tiny_inputs(model))
        remove_heads(model, adapter, 0, [0, 3], [0, 1])
    attention = adapter.get_blocks(model)[0].self_attn
    assert attention.num_key_value_groups == 1
    torch.testing.assert_close(model_output(model, tiny_inputs(model)), before, atol=1e-5, rtol=1e-5)


def test_uniform_widths_are_written_to_the_hf_config():
    model = tiny_model("qwen2")  # no head_dim in its config: it must be stated once heads change
    adapter = adapter_for(model)
    for i in range(2):
        remove_heads(model, adapter, i, [0, 1], [0])
        remove_neurons(model, adapter, i, range(40))
    structure = record_structure(model, adapter)
    assert structure == {"head_dim": 8, "heads_per_layer": [2, 2], "kv_heads_per_layer": [1, 1], "ffn_per_layer": [40, 40]}
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size, config.head_dim) == (2, 1, 40, 8)
    assert getattr(config, STRUCTURE_KEY) == structure


def test_non_uniform_or_inexpressible_widths_keep_the_dense_config():
    model = tiny_model("bert")  # BERT's head width is hidden / heads: fewer heads cannot be stated
    adapter = adapter_for(model)
    remove_heads(model, adapter, 0, [0, 1, 2], [0, 1, 2])
    remove_heads(model, adapter, 1, [0, 1, 2], [0, 1, 2])
    remove_neurons(model, adapter, 0, range(10))
    structure = record_structure(model, adapter)
    assert (model.config.num_attention_heads, model.config.intermediate_size) == (4, 64)
    assert structure["heads_per_layer"] == [3, 3] and structure["ffn_per_layer"] == [10, 64]
    attention = adapter.get_blocks(model)[0].attention.self
    assert (attention.num_attention_heads, attention.all_head_size) == (3, 24)


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen3", "cohere", "phi3", "olmo2"])
def test_removing_an_identity_block_changes_no_output(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    block = adapter.get_blocks(model)[0]
    # No attention output and no FFN output: a pre-norm block passes its input on, and so do OLMo 2's
    # post-norms (of zeros) and Cohere's parallel sum.
    with torch.no_grad():
        weight_matrix(adapter.attention_linears(block)["o"]).zero_()
        weight_matrix(adapter.ffn_linears(block)["down"]).zero_()
        before = model_output(model, tiny_inputs(model))
    remove_blocks(model, adapter, [1])
    record_structure(model, adapter)
    torch.testing.assert_close(model_output(model, tiny_inputs(model)), before, atol=1e-5, rtol=1e-5)
    assert model.config.num_hidden_layers == 1 and len(adapter.get_blocks(model)) == 1
    assert adapter.get_blocks(model)[0].self_attn.layer_idx == 0
    if family == "gemma3":
        assert model.config.layer_types == ["full_attention"]
    generated = model.generate(tiny_inputs(model)["input_ids"], max_new_tokens=3, do_sample=False)  # uses the cache
    assert generated.shape == (2, 11)
    assert config_matches_weights(model, adapter)


def test_block_removal_errors():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    with pytest.raises(BabelpruneError, match="at least one block"):
        remove_blocks(model, adapter, [])
    with pytest.raises(BabelpruneError, match="does not exist"):
        remove_blocks(model, adapter, [0, 5])
    with pytest.raises(BabelpruneError, match="at least one FFN neuron"):
        remove_neurons(model, adapter, 0, [])


def test_old_import_path_names_the_same_objects():
    # Code written against babelprune.prune.structured.units must get the layouts themselves, not copies.
    from babelprune.models import layouts
    from babelprune.prune.structured import units

    assert units.__all__
    for name in units.__all__:
        assert getattr(units, name) is getattr(layouts, name), name
    public = {name for name in vars(layouts) if not name.startswith("_") and getattr(getattr(layouts, name), "__module__", None) == layouts.__name__}
    assert public <= set(units.__all__)
