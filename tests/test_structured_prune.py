"""The public entry `structured_prune` on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import model_params
from babelprune.prune.calibration import Calibration
from babelprune.prune.structured import L0Settings, prune_copy, structured_prune
from tests.tiny_models import model_output, tiny_inputs, tiny_model


def _loaded(family: str) -> LoadedModel:
    kind = "encoder" if family in ("bert", "xlm-roberta") else "causal-lm"
    return LoadedModel(model=tiny_model(family), tokenizer=None, spec=family, path=None, kind=kind)


def _calibration() -> Calibration:
    ids = torch.randint(4, 128, (4, 12), generator=torch.Generator().manual_seed(1))
    return Calibration(ids, ("en", "en", "sw", "sw"), "toy")


def test_shared_magnitude_prunes_in_place_and_reports():
    loaded = _loaded("bert")
    dense_params = model_params(loaded.model)
    result = structured_prune(loaded, {"heads", "ffn"}, "magnitude", 0.3, progress=False)
    assert abs(result.achieved_sparsity - 0.3) <= 0.01
    assert result.params_after == result.params_before - result.selection.removed_params
    assert result.achieved_sparsity == pytest.approx(1 - result.params_after / result.params_before)
    assert result.model_params_before == dense_params and result.model_params_after == model_params(loaded.model) < dense_params
    assert [w["ffn"] for w in result.widths] == [len(k.neurons) for k in result.selection.layers]
    assert model_output(loaded.model, tiny_inputs(loaded.model)).shape == (2, 8, 32)
    metadata = json.loads(json.dumps(result.metadata()))
    assert metadata["method"] == "structured-magnitude" and metadata["kept"]["neurons"] == [w["ffn"] for w in result.widths]


def test_per_language_gradient_leaves_the_model_dense():
    loaded = _loaded("llama")
    dense = model_params(loaded.model)
    result = structured_prune(loaded, {"heads", "ffn"}, "gradient", 0.25, _calibration(), setting="per-language", progress=False)
    assert set(result.per_language) == {"en", "sw"} and result.selection is None
    assert model_params(loaded.model) == dense
    pruned = prune_copy(loaded, result.per_language["sw"])
    assert model_params(pruned.model) < dense and model_params(loaded.model) == dense
    assert result.metadata()["kept_per_language"]["en"]["sparsity"] == pytest.approx(result.per_language["en"].sparsity, abs=1e-6)
    # The sizes reported are the mean of the languages' pruned models, not the dense model left in memory.
    removed = {lang: s.removed_params for lang, s in result.per_language.items()}
    assert removed["en"] > 0 and removed["sw"] > 0
    assert result.params_after == result.params_before - round((removed["en"] + removed["sw"]) / 2)
    assert result.model_params_after == dense - round((removed["en"] + removed["sw"]) / 2)
    assert model_params(pruned.model) == dense - removed["sw"]


def test_l0_and_activation_and_blocks_run_end_to_end():
    l0 = structured_prune(_loaded("qwen2"), {"heads", "ffn"}, "l0", 0.3, _calibration(), progress=False, l0=L0Settings(steps=5))
    assert set(l0.l0_traces) == {"all"} and len(l0.l0_traces["all"].expected_sparsity) == 5
    activation = structured_prune(_loaded("opt"), {"ffn"}, "activation", 0.3, _calibration(), progress=False)
    assert abs(activation.achieved_sparsity - 0.3) <= 0.01
    blocks_loaded = _loaded("llama")
    blocks = structured_prune(blocks_loaded, {"blocks"}, "magnitude", 0.5, progress=False)
    assert blocks.achieved_sparsity == 0.5 and blocks_loaded.model.config.num_hidden_layers == 1


def test_errors_before_any_change():
    loaded = _loaded("bloom")
    with pytest.raises(BabelpruneError, match="ALiBi"):
        structured_prune(loaded, {"heads"}, "magnitude", 0.3, progress=False)
    with pytest.raises(BabelpruneError, match="per language"):
        structured_prune(_loaded("llama"), {"ffn"}, "magnitude", 0.3, _calibration(), setting="per-language", progress=False)
    with pytest.raises(BabelpruneError, match="calibration"):
        structured_prune(_loaded("llama"), {"ffn"}, "gradient", 0.3, progress=False)
    with pytest.raises(BabelpruneError, match="Unknown importance"):
        structured_prune(_loaded("llama"), {"ffn"}, "random", 0.3, progress=False)
    assert model_params(loaded.model) == model_params(tiny_model("bloom"))


@pytest.mark.parametrize("family", ["qwen3", "cohere", "phi3", "olmo2"])
def test_new_families_lose_units_and_blocks_and_reload(family, tmp_path):
    from babelprune.formats.structured import load_structured, save_structured

    units = {"ffn"} if family == "phi3" else {"heads", "ffn"}  # Phi-3 keeps its heads (refused below)
    loaded, inputs = _loaded(family), tiny_inputs(tiny_model(family))
    dense = model_params(loaded.model)
    result = structured_prune(loaded, units, "gradient", 0.3, _calibration(), progress=False)
    assert 0.25 < result.achieved_sparsity <= 0.3 and model_params(loaded.model) < dense
    if family != "phi3":
        assert sum(width["heads"] for width in result.widths) < 2 * 4
    logits = model_output(loaded.model, inputs)
    assert logits.shape == (2, 8, 128) and torch.isfinite(logits).all()
    save_structured(loaded.model, None, tmp_path / "narrow")
    assert torch.equal(model_output(load_structured(tmp_path / "narrow").model, inputs), logits)
    shallow = _loaded(family)  # blocks go in a run of their own, on the dense model: one of two blocks is half
    structured_prune(shallow, {"blocks"}, "magnitude", 0.5, progress=False)
    logits = model_output(shallow.model, inputs)
    assert len(shallow.model.model.layers) == 1 and logits.shape == (2, 8, 128)
    save_structured(shallow.model, None, tmp_path / "shallow")
    assert torch.equal(model_output(load_structured(tmp_path / "shallow").model, inputs), logits)
    if family == "phi3":
        with pytest.raises(BabelpruneError, match="fused qkv"):
            structured_prune(_loaded("phi3"), {"heads"}, "magnitude", 0.3, progress=False)
