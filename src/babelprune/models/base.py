"""The loaded-model record every other part of babelprune takes, and what kind of model a config describes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from babelprune.models.adapters import ModelKind, find_adapter

# Encoders babelprune loads and evaluates but has no adapter for (it cannot prune them). RoBERTa's
# config may say is_decoder or name a causal-LM head and still be a bidirectional encoder.
_ENCODERS_WITHOUT_ADAPTER = {"roberta"}


def model_kind(config) -> ModelKind:
    """'causal-lm' for decoder LMs, 'encoder' for BERT-style models.

    A model type in the adapter table (babelprune.models.adapters) is what
    its adapter says (`ArchAdapter.kind`), so the table is the one rule for
    the families babelprune prunes. Only other model types fall back to the
    config: RoBERTa is an encoder, and otherwise a config that says it is no
    decoder and names no causal-LM head is one.
    """
    adapter = find_adapter(config.model_type)
    if adapter is not None:
        return adapter.kind
    if config.model_type in _ENCODERS_WITHOUT_ADAPTER or getattr(config, "is_decoder", None) is False and not any(
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

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (its first parameter's device; every loader moves them together)."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the model's weights (its first floating parameter's)."""
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
