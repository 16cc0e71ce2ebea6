"""Structured pruning of the real e5-small: prune, save, reload, same embeddings."""

from __future__ import annotations

import pytest
import torch

from babelprune.models.layouts import model_params
from babelprune.formats.loading import load_model
from babelprune.formats.structured import load_structured, save_structured
from babelprune.prune.structured import structured_prune

pytestmark = pytest.mark.real

TEXTS = ["In the beginning was the Word.", "Au commencement était la Parole.", "В начале было Слово."]


def _embeddings(loaded) -> torch.Tensor:
    batch = loaded.tokenizer(["query: " + t for t in TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**batch).last_hidden_state


def test_e5_small_heads_and_ffn_by_magnitude(tmp_path):
    loaded = load_model("e5-small")
    dense_params = model_params(loaded.model)
    result = structured_prune(loaded, {"heads", "ffn"}, "magnitude", 0.3, progress=False)
    assert abs(result.achieved_sparsity - 0.3) <= 0.01
    # 12 blocks of 12 heads (32 wide) and 1536 neurons: 30% of 21.3M block parameters is ~6.4M fewer.
    assert result.params_before == 12 * (4 * (384 * 384 + 384) + 2 * 384 * 1536 + 1536 + 384)
    assert dense_params - model_params(loaded.model) == result.selection.removed_params
    assert any(w["heads"] < 12 for w in result.widths) and all(w["heads"] >= 1 and w["ffn"] >= 1 for w in result.widths)
    expected = _embeddings(loaded)
    save_structured(loaded.model, loaded.tokenizer, tmp_path / "e5-pruned", result.metadata())
    again = load_structured(tmp_path / "e5-pruned")
    assert model_params(again.model) == model_params(loaded.model) < dense_params
    assert torch.equal(_embeddings(again), expected)
