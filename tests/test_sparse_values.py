"""Half-precision values in the sparse copy: bytes, rounding, reloading, and refusals."""

import json

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.formats.pruned import load_pruned, load_sparse, save_pruned, sparse_size_report
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.engine import named_linears
from tests.test_prune_storage import pruned_shared

WEIGHTS = 2 * 9216  # block linear weights of the tiny llama (see test_prune_storage)


@pytest.mark.parametrize("values", ["fp16", "bf16"])
def test_half_values_take_the_hand_computed_bytes(tmp_path, values):
    loaded, result = pruned_shared("llama")
    report = sparse_size_report(save_pruned(loaded, result, tmp_path / "out", format="sparse", values=values))
    # Half the values kept at 2 bytes, plus one bit of mask each: 1.125 bytes per weight.
    assert report["block_linear_sparse_bytes"] == WEIGHTS * 1.125
    # Embedding (128x32), lm_head (128x32) and 5 norms of 32 stay dense, at 2 bytes each.
    assert report["sparse_bytes"] == WEIGHTS * 1.125 + (2 * 128 * 32 + 5 * 32) * 2


def test_fp16_values_reload_as_the_rounded_fp32_weights_with_the_same_zeros(tmp_path):
    loaded, result = pruned_shared("llama")
    out = save_pruned(loaded, result, tmp_path / "out", format="sparse", values="fp16")
    model = load_pruned(out).model
    for name, linear in named_linears(loaded.model, adapter_for(loaded.model)).items():
        original = weight_matrix(linear)
        reloaded = weight_matrix(named_linears(model, adapter_for(model))[name])
        assert reloaded.dtype == torch.float32
        assert torch.equal(reloaded, original.half().float()), name  # exactly fp16 rounding, nothing else
        assert torch.equal(reloaded == 0, original == 0), name
    assert json.loads((out / "babelprune_pruning.json").read_text())["values"] == "fp16"


def test_bf16_values_can_be_used_as_they_are(tmp_path):
    loaded, result = pruned_shared("gemma3")
    out = save_pruned(loaded, result, tmp_path / "out", format="sparse", values="bf16")
    model = load_sparse(out, dtype=None)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied


def test_half_values_without_a_sparse_copy_are_refused_and_nothing_is_written(tmp_path):
    loaded, result = pruned_shared("llama")
    with pytest.raises(BabelpruneError, match="--format sparse or both"):
        save_pruned(loaded, result, tmp_path / "out", format="hf", values="fp16")
    assert not (tmp_path / "out").exists()
    with pytest.raises(BabelpruneError, match="Unknown value type 'fp8'"):
        save_pruned(loaded, result, tmp_path / "out", format="sparse", values="fp8")
    assert list(tmp_path.iterdir()) == []
