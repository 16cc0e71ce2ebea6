"""The architecture adapter table, checked against tiny real HF models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import T5Config
from transformers.pytorch_utils import Conv1D

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import (
    adapter_for,
    fused_qkv_rows,
    linear_in_features,
    linear_out_features,
    supported_families,
    weight_matrix,
)
from tests.tiny_models import ALL_TINY_FAMILIES, TINY_FAMILIES, model_output, tiny_config, tiny_inputs, tiny_model

# Hand-written from the tiny configs in tiny_models.py:
# (layers, hidden, heads, kv heads, head_dim, FFN width, vocab).
EXPECTED_SIZES = {
    "llama": (2, 32, 4, 2, 8, 64, 128),
    "qwen2": (2, 32, 4, 2, 8, 64, 128),
    "mistral": (2, 32, 4, 2, 8, 64, 128),
    "gemma": (2, 32, 4, 2, 16, 64, 128),
    "gemma2": (2, 32, 4, 2, 16, 64, 128),
    "gemma3": (2, 32, 4, 2, 16, 64, 128),
    "gemma3-multimodal": (2, 32, 4, 2, 16, 64, 128),
    "qwen3": (2, 32, 4, 2, 16, 64, 128),  # head_dim stated apart from 32 / 4
    "cohere": (2, 32, 4, 2, 8, 64, 128),
    "phi3": (2, 32, 4, 2, 8, 64, 128),
    "olmo2": (2, 32, 4, 2, 8, 64, 128),
    "gpt2": (2, 32, 4, 4, 8, 128, 128),  # FFN defaults to 4 * 32
    "bloom": (2, 32, 4, 4, 8, 128, 128),  # FFN is always 4 * 32
    "opt": (2, 32, 4, 4, 8, 64, 128),
    "bert": (2, 32, 4, 4, 8, 64, 128),
    "xlm-roberta": (2, 32, 4, 4, 8, 64, 128),
}

GATED = ("q", "k", "v", "o", "gate", "up", "down")
PLAIN = ("q", "k", "v", "o", "up", "down")
FUSED = ("qkv", "o", "up", "down")
FUSED_GATED = ("qkv", "o", "gate_up", "down")  # Phi-3: gate and up in one linear too
EXPECTED_LINEARS = {
    "llama": GATED, "qwen2": GATED, "mistral": GATED, "gemma": GATED, "gemma2": GATED,
    "gemma3": GATED, "gemma3-multimodal": GATED, "qwen3": GATED, "cohere": GATED, "olmo2": GATED,
    "gpt2": FUSED, "bloom": FUSED, "phi3": FUSED_GATED,
    "opt": PLAIN, "bert": PLAIN, "xlm-roberta": PLAIN,
}

# Whether the (default) LM head of the tiny model shares the embedding weight.
EXPECTED_TIED = {
    "llama": False, "qwen2": False, "mistral": False,
    "gemma": True, "gemma2": True, "gemma3": True, "gemma3-multimodal": True,
    "gpt2": True, "bloom": True, "opt": True,
    "qwen3": False, "cohere": True, "phi3": False, "olmo2": False,
}


@pytest.mark.parametrize("family", ALL_TINY_FAMILIES)
def test_config_sizes_match_the_tiny_configs(family):
    config = tiny_config(family)
    adapter = adapter_for(config)
    layers, hidden, heads, kv, head_dim, ffn, _ = EXPECTED_SIZES[family]
    assert adapter.family == family
    assert adapter.num_layers(config) == layers
    assert adapter.hidden_size(config) == hidden
    assert adapter.num_heads(config) == heads
    assert adapter.num_kv_heads(config) == kv
    assert adapter.head_dim(config) == head_dim
    assert adapter.intermediate_size(config) == ffn


@pytest.mark.parametrize("family", ALL_TINY_FAMILIES)
def test_blocks_are_found_and_expose_every_part(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    blocks = adapter.get_blocks(model)
    assert len(blocks) == EXPECTED_SIZES[family][0]
    for block in blocks:
        linears = adapter.block_linears(block)
        assert tuple(linears) == EXPECTED_LINEARS[family]
        assert adapter.linear_names() == EXPECTED_LINEARS[family]
        assert all(isinstance(m, (nn.Linear, Conv1D)) for m in linears.values())
    # The gate exists exactly for the gated families, fused with up or not.
    assert adapter.ffn.is_gated == bool({"gate", "gate_up"} & set(EXPECTED_LINEARS[family]))
    # Different blocks hold different modules.
    assert adapter.block_linears(blocks[0])["o"] is not adapter.block_linears(blocks[1])["o"]


@pytest.mark.parametrize("family", ALL_TINY_FAMILIES)
def test_weight_shapes_are_out_by_in_and_agree_with_the_config(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    _, hidden, heads, kv, head_dim, ffn, _ = EXPECTED_SIZES[family]
    for block in adapter.get_blocks(model):
        shapes = {name: tuple(weight_matrix(m).shape) for name, m in adapter.block_linears(block).items()}
        if "qkv" in shapes:
            assert shapes["qkv"] == ((heads + 2 * kv) * head_dim, hidden)
        else:
            assert shapes["q"] == (heads * head_dim, hidden)
            assert shapes["k"] == (kv * head_dim, hidden)
            assert shapes["v"] == (kv * head_dim, hidden)
        assert shapes["o"] == (hidden, heads * head_dim)
        if "gate_up" in shapes:
            assert shapes["gate_up"] == (2 * ffn, hidden)
        else:
            assert shapes["up"] == (ffn, hidden)
        assert shapes["down"] == (hidden, ffn)
        if "gate" in shapes:
            assert shapes["gate"] == (ffn, hidden)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_linear_widths_match_the_forward(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    block = adapter.get_blocks(model)[0]
    for name, module in adapter.block_linears(block).items():
        x = torch.randn(3, linear_in_features(module))
        with torch.no_grad():
            y = module(x)
        assert y.shape == (3, linear_out_features(module)), name
        # y = W x + b with W the (out, in) matrix.
        bias = module.bias if module.bias is not None else torch.zeros(y.shape[1])
        expected = x @ weight_matrix(module).T + bias
        assert torch.allclose(y, expected, atol=1e-6), name


@pytest.mark.parametrize("family", ALL_TINY_FAMILIES)
def test_zeroing_through_weight_matrix_changes_the_model_output(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    inputs = tiny_inputs(model)
    before = model_output(model, inputs)
    down = adapter.block_linears(adapter.get_blocks(model)[0])["down"]
    weight_matrix(down).zero_()
    after = model_output(model, inputs)
    assert down.weight.abs().sum() == 0
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_zeroing_a_column_disconnects_that_input_feature(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    linears = adapter.block_linears(adapter.get_blocks(model)[1])
    up = linears.get("up", linears.get("gate_up"))
    j = 5
    x = torch.randn(2, linear_in_features(up))
    x_moved = x.clone()
    x_moved[:, j] += 3.0
    with torch.no_grad():
        assert not torch.allclose(up(x), up(x_moved))
        weight_matrix(up)[:, j] = 0.0
        assert torch.equal(up(x), up(x_moved))


def test_conv1d_weight_matrix_is_the_transpose_by_hand():
    # Conv1D(nf=3 outputs, nx=2 inputs) stores weight as (in=2, out=3).
    conv = Conv1D(3, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        conv.bias.zero_()
    matrix = weight_matrix(conv)
    assert matrix.tolist() == [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
    assert (linear_in_features(conv), linear_out_features(conv)) == (2, 3)
    # Input [1, 0] reads out column 0 of the (out, in) matrix.
    assert conv(torch.tensor([[1.0, 0.0]])).tolist() == [[1.0, 2.0, 3.0]]
    # Zeroing column 1 of the view zeroes row 1 of the stored weight, so
    # input feature 1 no longer reaches any output.
    matrix[:, 1] = 0.0
    assert conv.weight.tolist() == [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    assert conv(torch.tensor([[0.0, 7.0]])).tolist() == [[0.0, 0.0, 0.0]]


def test_gpt2_conv1d_column_zero_kills_an_input_of_the_real_block():
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    assert adapter.transposed_linears
    c_attn = adapter.block_linears(adapter.get_blocks(model)[0])["qkv"]
    assert isinstance(c_attn, Conv1D)
    weight_matrix(c_attn)[:, 3] = 0.0
    assert c_attn.weight[3].abs().sum() == 0  # row 3 of the stored (in, out) weight
    assert c_attn.weight[4].abs().sum() > 0


@pytest.mark.parametrize("family", ALL_TINY_FAMILIES)
def test_embeddings_have_one_row_per_token(family):
    model = tiny_model(family)
    embedding = adapter_for(model).get_embeddings(model)
    _, hidden, *_, vocab = EXPECTED_SIZES[family]
    assert tuple(embedding.weight.shape) == (vocab, hidden)


@pytest.mark.parametrize("family", sorted(EXPECTED_TIED))
def test_lm_head_and_tying(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    head = adapter.get_lm_head(model)
    assert tuple(weight_matrix(head).shape) == (128, 32)  # (vocab, hidden)
    assert adapter.lm_head_is_tied(model) == EXPECTED_TIED[family]


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
def test_encoder_heads(family):
    bare = tiny_model(family)
    adapter = adapter_for(bare)
    assert not adapter.decoder and adapter.kind == "encoder"
    assert adapter.get_lm_head(bare) is None
    assert not adapter.lm_head_is_tied(bare)
    mlm = tiny_model(family, task="mlm")
    assert adapter.lm_head_is_tied(mlm)
    classifier = tiny_model(family, task="classify")
    assert adapter.get_lm_head(classifier) is None
    # The same paths work through any head: blocks found, with their parts.
    for model in (mlm, classifier):
        blocks = adapter_for(model).get_blocks(model)
        assert len(blocks) == 2
        assert tuple(adapter.block_linears(blocks[1])) == PLAIN


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "bloom", "opt"])
def test_bare_decoder_uses_the_same_paths(family):
    bare = tiny_model(family, task="base")
    lm = tiny_model(family)
    adapter = adapter_for(bare)
    assert adapter.decoder and adapter.kind == "causal-lm"
    assert len(adapter.get_blocks(bare)) == 2
    assert adapter.get_lm_head(bare) is None
    # Same seed, same construction order: the bare model's embedding matches
    # the one found inside the LM.
    assert torch.equal(adapter.get_embeddings(bare).weight, adapter.get_embeddings(lm).weight)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_final_norm(family):
    model = tiny_model(family)
    norm = adapter_for(model).get_final_norm(model)
    if family in ("bert", "xlm-roberta"):
        assert norm is None  # post-norm encoders end on a block's own norm
    else:
        assert tuple(norm.weight.shape) == (32,)


def test_fused_rows_by_hand():
    concat = fused_qkv_rows("concat", n_heads=2, n_kv_heads=2, head_dim=2)
    assert {k: v.tolist() for k, v in concat.items()} == {
        "q": [0, 1, 2, 3], "k": [4, 5, 6, 7], "v": [8, 9, 10, 11],
    }
    per_head = fused_qkv_rows("per_head", n_heads=2, n_kv_heads=2, head_dim=2)
    assert {k: v.tolist() for k, v in per_head.items()} == {
        "q": [0, 1, 6, 7], "k": [2, 3, 8, 9], "v": [4, 5, 10, 11],
    }
    gqa = fused_qkv_rows("concat", n_heads=4, n_kv_heads=1, head_dim=1)
    assert {k: v.tolist() for k, v in gqa.items()} == {"q": [0, 1, 2, 3], "k": [4], "v": [5]}
    with pytest.raises(ValueError):
        fused_qkv_rows("per_head", n_heads=4, n_kv_heads=2, head_dim=2)


def test_bloom_rows_match_its_own_qkv_split():
    model = tiny_model("bloom")
    adapter = adapter_for(model)
    attention = adapter.get_blocks(model)[0].self_attention
    rows = adapter.qkv_rows(model.config)
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        fused = attention.query_key_value(x)  # (1, 3, 96)
        query, key, value = attention._reshape(fused)  # each (1, heads, 3, head_dim)
    for name, split in (("q", query), ("k", key), ("v", value)):
        # (1, heads, seq, d) -> (1, seq, heads * d), heads in order.
        ours = fused[..., rows[name]]
        assert torch.equal(ours, split.transpose(1, 2).reshape(1, 3, 32)), name


def test_gpt2_rows_match_its_own_qkv_split():
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    c_attn = adapter.get_blocks(model)[0].attn.c_attn
    rows = adapter.qkv_rows(model.config)
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        fused = c_attn(x)
    query, key, value = fused.split(32, dim=2)  # GPT-2's own split
    assert torch.equal(fused[..., rows["q"]], query)
    assert torch.equal(fused[..., rows["k"]], key)
    assert torch.equal(fused[..., rows["v"]], value)
    assert adapter_for("llama").qkv_rows(tiny_config("llama")) is None


def test_lookup_accepts_model_config_and_type_string():
    assert adapter_for("gemma3_text").family == "gemma3"
    assert adapter_for("gemma3").family == "gemma3-multimodal"
    assert adapter_for(tiny_config("opt")).family == "opt"
    assert adapter_for(tiny_model("xlm-roberta")).family == "xlm-roberta"


def test_supported_families_cover_the_required_ones():
    families = supported_families()
    assert set(TINY_FAMILIES) <= set(families)
    assert len(families) == len(set(families))


@pytest.mark.parametrize("unsupported", [T5Config(d_model=16, num_layers=1), "mamba"])
def test_unsupported_model_type_names_it_and_lists_families(unsupported):
    expected_type = "t5" if isinstance(unsupported, T5Config) else "mamba"
    with pytest.raises(BabelpruneError) as raised:
        adapter_for(unsupported)
    message = str(raised.value)
    assert f"'{expected_type}'" in message
    for family in ("llama", "qwen2", "mistral", "gemma3", "gpt2", "bloom", "opt", "bert", "xlm-roberta"):
        assert family in message


def test_a_model_not_matching_its_layout_is_a_clear_error():
    model = tiny_model("llama")
    model.model.layers = nn.Identity()  # no longer a list of blocks
    with pytest.raises(BabelpruneError, match="llama"):
        adapter_for(model).get_blocks(model)
    del model.model.embed_tokens
    with pytest.raises(BabelpruneError, match="embed_tokens"):
        adapter_for(model).get_embeddings(model)
