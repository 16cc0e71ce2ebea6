"""Whether a config is an encoder or a decoder: the adapter table decides for the families it holds."""

from __future__ import annotations

import pytest
from transformers import BertConfig, ElectraConfig, GPTNeoXConfig, RobertaConfig

from babelprune.models.adapters import ADAPTERS
from babelprune.models.base import model_kind
from tests.tiny_models import tiny_config

# Written out, not read from the table: the table must agree with what each family is.
EXPECTED = {"llama": "causal-lm", "qwen2": "causal-lm", "gemma3": "causal-lm", "gpt2": "causal-lm",
            "bloom": "causal-lm", "opt": "causal-lm", "bert": "encoder", "xlm-roberta": "encoder"}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_tiny_models_of_each_family_have_their_kind(family):
    assert model_kind(tiny_config(family)) == EXPECTED[family]


def test_a_family_in_the_table_is_what_its_adapter_says_whatever_its_config_claims():
    # A BERT with a causal-LM head is still pruned and evaluated as the encoder its adapter describes.
    config = BertConfig(is_decoder=True, architectures=["BertLMHeadModel"])
    assert model_kind(config) == "encoder"
    for adapter in ADAPTERS:
        for model_type in adapter.model_types:
            config = type("Config", (), {"model_type": model_type, "architectures": None, "is_decoder": not adapter.decoder})()
            assert model_kind(config) == adapter.kind == ("causal-lm" if adapter.decoder else "encoder"), model_type


def test_model_types_without_an_adapter_fall_back_to_the_config():
    assert model_kind(RobertaConfig(is_decoder=True, architectures=["RobertaForCausalLM"])) == "encoder"
    assert model_kind(ElectraConfig()) == "encoder"  # no decoder, no causal-LM head
    assert model_kind(ElectraConfig(architectures=["ElectraForCausalLM"])) == "causal-lm"
    assert model_kind(GPTNeoXConfig(architectures=["GPTNeoXForCausalLM"])) == "causal-lm"
