"""The loaded-model record every other part of babelprune takes, and what kind of model a config describes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from transformers import PreTrainedModel, PreTrainedTokenizerBase

ModelKind = Literal["causal-lm", "encoder"]

_ENCODER_TYPES = {"bert", "xlm-roberta", "roberta"}


def model_kind(config) -> ModelKind:
    """'causal-lm' for decoder LMs, 'encoder' for BERT-style models."""
    if config.model_type in _ENCODER_TYPES or getattr(config, "is_decoder", None) is False and not any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in (config.architectures or [])
    ):
        return "encoder"
    return "causal-lm"


@dataclass
class LoadedModel:
    """A model, its tokenizer, and how it was asked for.

    `kind` decides how it is evaluated: a causal LM by perplexity and bits per
    byte, an encoder by tasks (retrieval, classification).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: str  # what the user asked for: an alias, a folder, a hub id
    path: Path | None  # the local HF folder the weights came from, when there is one
    kind: ModelKind
    # Set for folders written by `babelprune prune`: what was done to the dense parent, and,
    # in the per-language setting, one pruning mask per language over the dense weights
    # (language -> "<block>.<linear>" -> bool (out, in), True = zeroed).
    pruning: dict[str, Any] | None = None
    mask_bank: dict[str, dict[str, torch.Tensor]] | None = None

    @property
    def name(self) -> str:
        return self.spec
