"""One-shot pruning of the real gemma3-270m on real Bible calibration text."""

import pytest
import torch

from babelprune.api import calibrate, evaluate, get_corpus, load_model, prune
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears
from babelprune.prune.storage import load_pruned, save_pruned

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def pruned_gemma():
    loaded = load_model("gemma3-270m")
    bible = get_corpus("bible")
    dense = evaluate(loaded, bible, ["en"], max_tokens=128, progress=False)
    calibration = calibrate(loaded, bible, ["en", "fr", "sw"], samples_per_language=2, seq_len=64)
    result = prune(loaded, PruneConfig(method="mwanda", sparsity=0.5, allocation="cwl"), calibration, progress=False)
    return loaded, result, dense, bible


def test_every_row_of_every_layer_is_half_pruned(pruned_gemma):
    loaded, result, _, _ = pruned_gemma
    linears = named_linears(loaded.model, adapter_for(loaded.model))
    assert len(linears) == 18 * 7
    for name, linear in linears.items():
        weight = weight_matrix(linear)
        block = int(name.split(".")[0])
        target = result.block_sparsity_targets[block]  # CWL: each block has its own target
        # At least the row quota is zero (the 4-bit source adds a few zeros of its own).
        assert torch.all((weight == 0).sum(dim=1) >= int(target * weight.shape[1])), name
    assert sum(result.block_sparsity_targets) / 18 == pytest.approx(0.5, abs=1e-6)
    # Per-block targets are floored per row, and the source's own zeros score lowest and go first.
    assert result.achieved_sparsity == pytest.approx(0.5, abs=0.002)
    assert result.starting_sparsity > 0.02


def test_pruned_model_is_worse_but_still_a_language_model(pruned_gemma):
    loaded, _, dense, bible = pruned_gemma
    pruned = evaluate(loaded, bible, ["en"], max_tokens=128, progress=False)
    assert pruned.pruning.method == "mwanda"
    assert dense.scores[0].bits_per_byte < pruned.scores[0].bits_per_byte < 4 * dense.scores[0].bits_per_byte


def test_saved_sparse_folder_reloads_identical_weights(pruned_gemma, tmp_path):
    loaded, result, _, _ = pruned_gemma
    out = save_pruned(loaded, result, tmp_path / "pruned", "sparse")
    back = load_pruned(out)
    original = dict(loaded.model.state_dict())
    for name, tensor in back.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert back.pruning["method"] == "mwanda" and back.pruning["calibration"]["languages"] == ["en", "fr", "sw"]
