"""Facts about a loaded model: parameter count and the share of zeros in its blocks."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from babelprune.models.adapters import adapter_for, weight_matrix


def count_parameters(model: PreTrainedModel) -> int:
    """Distinct parameters (a tied embedding/LM head counts once)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def block_sparsity(model: PreTrainedModel) -> float:
    """Share of exact zeros over all linear weights inside the transformer blocks."""
    adapter = adapter_for(model)
    zeros = total = 0
    for block in adapter.get_blocks(model):
        for module in adapter.block_linears(block).values():
            weight = weight_matrix(module)
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / total if total else 0.0
