"""Saving and reloading structurally pruned models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for
from babelprune.formats.structured import (
    STRUCTURE_FILE,
    load_structured,
    save_structured,
)
from babelprune.models.layouts import (
    layer_layouts,
    model_params,
    remove_blocks,
    remove_heads,
    remove_neurons,
)
from tests.tiny_models import ALL_TINY_FAMILIES, model_output, tiny_inputs, tiny_model
from tests.tiny_tokenizer import char_tokenizer


def _prune_unevenly(model) -> None:
    """Block 0 loses a head unit and 10 neurons, block 1 only 3 neurons: widths differ per block."""
    adapter = adapter_for(model)
    layout = layer_layouts(model, adapter)[0]
    if adapter.structure.head_removal_blocker is None:  # BLOOM and Phi-3 keep their heads
        kept_kv = list(range(1, layout.n_kv_heads))
        remove_heads(model, adapter, 0, [h for h in range(layout.n_heads) if h // layout.group_size in kept_kv], kept_kv)
    remove_neurons(model, adapter, 0, range(10, layout.ffn))
    remove_neurons(model, adapter, 1, range(3, layout.ffn))


@pytest.mark.parametrize("family", ALL_TINY_FAMILIES)
def test_reload_gives_identical_outputs(tmp_path, family):
    model = tiny_model(family)
    _prune_unevenly(model)
    inputs = tiny_inputs(model)
    expected = model_output(model, inputs)
    save_structured(model, None, tmp_path / "out", {"note": "uneven"})
    loaded = load_structured(tmp_path / "out")
    assert torch.equal(model_output(loaded.model, inputs), expected)
    assert model_params(loaded.model) == model_params(model) < model_params(tiny_model(family))
    metadata = json.loads((tmp_path / "out" / STRUCTURE_FILE).read_text())
    assert metadata["note"] == "uneven" and metadata["hf_loadable"] is False
    ffn = layer_layouts(tiny_model(family), adapter_for(model))[0].ffn
    assert loaded.pruning["structure"]["ffn_per_layer"] == [ffn - 10, ffn - 3]


def test_uniform_widths_load_with_plain_from_pretrained(tmp_path):
    model = tiny_model("gemma3")
    adapter = adapter_for(model)
    for i in range(2):
        remove_heads(model, adapter, i, [0, 2], [0, 1])  # one query head per group
        remove_neurons(model, adapter, i, range(48))
    inputs = tiny_inputs(model)
    expected = model_output(model, inputs)
    save_structured(model, char_tokenizer(), tmp_path / "out")
    assert json.loads((tmp_path / "out" / STRUCTURE_FILE).read_text())["hf_loadable"] is True
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert torch.equal(model_output(plain, inputs), expected)
    assert (plain.config.num_attention_heads, plain.config.num_key_value_heads, plain.config.intermediate_size) == (2, 2, 48)
    loaded = load_structured(tmp_path / "out")
    assert loaded.tokenizer is not None and loaded.kind == "causal-lm"


def test_bert_ffn_only_loads_with_plain_from_pretrained(tmp_path):
    model = tiny_model("bert")
    adapter = adapter_for(model)
    for i in range(2):
        remove_neurons(model, adapter, i, range(0, 64, 2))
    expected = model_output(model, tiny_inputs(model))
    save_structured(model, None, tmp_path / "out")
    plain = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert plain.config.intermediate_size == 32
    assert torch.equal(model_output(plain, tiny_inputs(model)), expected)


def test_dropped_blocks_reload(tmp_path):
    model = tiny_model("gemma3")
    remove_blocks(model, adapter_for(model), [1])
    expected = model_output(model, tiny_inputs(model))
    save_structured(model, None, tmp_path / "out")
    loaded = load_structured(tmp_path / "out")
    assert loaded.model.config.num_hidden_layers == 1 and loaded.model.config.layer_types == ["full_attention"]
    assert torch.equal(model_output(loaded.model, tiny_inputs(model)), expected)


def test_errors(tmp_path):
    model = tiny_model("llama")
    save_structured(model, None, tmp_path / "out")
    with pytest.raises(BabelpruneError, match="exists"):
        save_structured(model, None, tmp_path / "out")
    with pytest.raises(BabelpruneError, match=STRUCTURE_FILE):
        load_structured(tmp_path)
    (tmp_path / "out" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(BabelpruneError, match="corrupt"):
        load_structured(tmp_path / "out")
