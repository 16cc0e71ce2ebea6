"""Saving and loading pruned models: HF folder, sparse format, per-language mask bank."""

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.formats import pruned as pruned_format
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.formats.pruned import (
    METADATA_FILE,
    apply_language_mask,
    jaccard,
    load_mask_bank,
    load_pruned,
    load_sparse,
    load_sparse_state_dict,
    mask_overlap,
    pack_bits,
    read_pruning_metadata,
    save_pruned,
    sparse_size_report,
    unpack_bits,
)
from tests.tiny_models import model_output, tiny_config, tiny_inputs, tiny_model
from tests.tiny_tokenizer import char_tokenizer

CORRUPT = "is corrupt or does not match the model"


def loaded_tiny(family: str, tokenizer=None) -> LoadedModel:
    model = tiny_model(family)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=f"tiny-{family}", path=None, kind=adapter_for(model).kind)


def calibration(model, languages=("en", "fr", "sw"), per_language=2, seq_len=8) -> Calibration:
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(4, vocab, (per_language * len(languages), seq_len), generator=generator)
    return Calibration(ids, tuple(lang for lang in languages for _ in range(per_language)), "random-ids")


def pruned_shared(family: str, tokenizer=None):
    """A tiny model with every row of every block linear half zeros (magnitude, 50%)."""
    loaded = loaded_tiny(family, tokenizer)
    return loaded, prune(loaded, PruneConfig(method="magnitude", sparsity=0.5), None, progress=False)


def pruned_per_language(family: str):
    loaded = loaded_tiny(family)
    config = PruneConfig(method="wanda", sparsity=0.5, setting="per-language")
    return loaded, prune(loaded, config, calibration(loaded.model), progress=False)


def dense_linears(model) -> dict[str, torch.Tensor]:
    return {name: weight_matrix(m).clone() for name, m in named_linears(model, adapter_for(model)).items()}


# ----- pure helpers ------------------------------------------------------------


def test_pack_bits_hand_case_and_round_trip():
    mask = torch.tensor([[True, False, True, True, False, False, False, False, True]])
    packed = pack_bits(mask)
    assert packed.tolist() == [0b10110000, 0b10000000]  # first entry in the high bit, last byte padded
    assert torch.equal(unpack_bits(packed, (1, 9)), mask)
    with pytest.raises(ValueError):
        unpack_bits(packed, (3, 9))  # 27 entries need 4 bytes


def test_jaccard_overlap_hand_case():
    bank = {
        "a": {"0.q": torch.tensor([[True, True, False, False]]), "0.k": torch.tensor([[True, False]])},
        "b": {"0.q": torch.tensor([[True, False, True, False]]), "0.k": torch.tensor([[True, True]])},
    }
    # Pooled (k then q): a = 1 0 1 1 0 0, b = 1 1 1 0 1 0 -> both in 2 places, either in 5.
    overlap = mask_overlap(bank)
    assert overlap["a"]["b"] == pytest.approx(0.4) and overlap["b"]["a"] == pytest.approx(0.4)
    assert overlap["a"]["a"] == 1.0 and overlap["b"]["b"] == 1.0
    assert jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0


# ----- HF folder ---------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "qwen3", "cohere", "phi3", "olmo2"])
def test_hf_folder_loads_with_plain_transformers_and_gives_identical_outputs(tmp_path, family):
    loaded, result = pruned_shared(family)
    out = save_pruned(loaded, result, tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    inputs = tiny_inputs(loaded.model)
    assert torch.equal(model_output(reloaded, inputs), model_output(loaded.model, inputs))
    assert float((weight_matrix(named_linears(reloaded, adapter_for(reloaded))["0.o"]) == 0).float().mean()) == 0.5


def test_load_pruned_of_an_encoder_with_tokenizer(tmp_path):
    loaded, result = pruned_shared("bert", tokenizer=char_tokenizer())
    out = save_pruned(loaded, result, tmp_path / "out")
    back = load_pruned(out)
    assert type(back.model).__name__ == "BertModel" and back.kind == "encoder"
    assert back.mask_bank is None and back.pruning["parent"] == "tiny-bert"
    assert back.tokenizer("abc")["input_ids"] == [4, 5, 6]  # char ids: 4 + alphabet position
    inputs = tiny_inputs(loaded.model)
    assert torch.equal(model_output(back.model, inputs), model_output(loaded.model, inputs))


def test_metadata_describes_the_run_and_lists_the_files(tmp_path):
    loaded, result = pruned_shared("llama")
    out = save_pruned(loaded, result, tmp_path / "out")
    metadata = read_pruning_metadata(out)
    assert metadata["format_version"] == 1 and metadata["parent"] == "tiny-llama"
    assert metadata["setting"] == "shared" and metadata["format"] == "both" and metadata["method"] == "magnitude"
    assert metadata["achieved_sparsity"] == pytest.approx(0.5)
    assert {"config.json", "model.safetensors", "sparse/sparse.safetensors", "sparse/config.json", METADATA_FILE} <= set(metadata["files"])
    assert all((out / name).is_file() for name in metadata["files"])
    assert read_pruning_metadata(tmp_path) is None


def test_save_pruned_reads_only_what_prune_outcome_names(tmp_path):
    # Formats sit below the pruning engine: a run reaches save_pruned through the PruneOutcome
    # fields (config.setting, mask_bank, metadata()), so any object with them writes the same folder.
    loaded, result = pruned_shared("llama")
    stand_in = SimpleNamespace(config=SimpleNamespace(setting="shared"), mask_bank=None, metadata=result.metadata)
    out = save_pruned(loaded, stand_in, tmp_path / "stand-in", format="hf")
    real = save_pruned(loaded, result, tmp_path / "real", format="hf")
    assert (out / "model.safetensors").read_bytes() == (real / "model.safetensors").read_bytes()
    assert read_pruning_metadata(out) == read_pruning_metadata(real)


# ----- sparse format -----------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "bert", "qwen3", "cohere", "phi3", "olmo2"])
def test_sparse_state_dict_is_bit_identical(tmp_path, family):
    loaded, result = pruned_shared(family)
    # A kept -0.0 must come back as -0.0, not as a pruned +0.0.
    weight_matrix(named_linears(loaded.model, adapter_for(loaded.model))["1.o"])[0, 0] = -0.0
    out = save_pruned(loaded, result, tmp_path / "out", format="sparse")
    expected = loaded.model.state_dict()
    got = load_sparse_state_dict(out)
    assert list(got) == list(expected)  # tied keys included, same order
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key
        assert torch.equal(torch.signbit(got[key]), torch.signbit(tensor)), key


@pytest.mark.parametrize("family", ["gemma3", "gpt2", "cohere"])
def test_sparse_only_folder_rebuilds_a_tied_model(tmp_path, family):
    loaded, result = pruned_shared(family)
    out = save_pruned(loaded, result, tmp_path / "out", format="sparse")
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    model = load_pruned(out).model
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied again, as built
    inputs = tiny_inputs(loaded.model)
    assert torch.equal(model_output(model, inputs), model_output(loaded.model, inputs))


def test_sparse_block_linears_take_the_hand_computed_bytes(tmp_path):
    loaded, result = pruned_shared("llama")
    report = sparse_size_report(save_pruned(loaded, result, tmp_path / "out"))
    # Per block: q 32x32, k 16x32, v 16x32, o 32x32, gate/up 64x32, down 32x64 = 9216 weights; 2 blocks.
    weights = 2 * 9216
    assert report["block_linear_dense_fp32_bytes"] == weights * 4
    # Half the values kept at 4 bytes, plus one bit of mask each: 2.125 bytes per weight.
    assert report["block_linear_sparse_bytes"] == weights * 2.125
    assert report["block_linear_ratio"] == 0.53125
    assert report["compressed_tensors"] == 14
    # Embedding (128x32), lm_head (128x32) and 5 norms of 32 stay dense.
    assert report["dense_fp32_bytes"] == weights * 4 + (2 * 128 * 32 + 5 * 32) * 4


def test_dense_weights_are_stored_as_they_are(tmp_path):
    loaded = loaded_tiny("llama")
    result = prune(loaded, PruneConfig(method="magnitude", sparsity=0.2), None, progress=False)
    report = sparse_size_report(save_pruned(loaded, result, tmp_path / "out", format="sparse"))
    assert report["compressed_tensors"] == 0  # 20% zeros is under the 25% threshold
    assert report["block_linear_ratio"] == 1.0


# ----- per-language mask bank ----------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_mask_bank_round_trip_and_masks_apply_and_undo_exactly(tmp_path, family):
    loaded, result = pruned_per_language(family)
    dense = dense_linears(loaded.model)
    out = save_pruned(loaded, result, tmp_path / "out")
    assert (out / "masks.safetensors").is_file() and not (out / "sparse").exists()
    back = load_pruned(out)
    metadata = back.pruning
    assert metadata["mask_bank_languages"] == ["en", "fr", "sw", "pooled"] and metadata["setting"] == "per-language"
    assert metadata["mask_overlap"]["fr"]["fr"] == 1.0
    assert metadata["mask_overlap"]["en"]["sw"] == metadata["mask_overlap"]["sw"]["en"] < 1.0
    model = back.model
    for name, weight in dense_linears(model).items():
        assert torch.equal(weight, dense[name]), name  # the HF folder holds the dense weights
    for lang, masks in result.mask_bank.items():
        for name, mask in masks.items():
            assert torch.equal(back.mask_bank[lang][name], mask), (lang, name)
    linears = named_linears(model, adapter_for(model))
    with apply_language_mask(model, back.mask_bank, "fr"):
        for name, mask in back.mask_bank["fr"].items():
            weight = weight_matrix(linears[name])
            assert torch.all(weight[mask] == 0) and torch.equal(weight[~mask], dense[name][~mask]), name
    for name, weight in dense_linears(model).items():
        assert torch.equal(weight, dense[name]), name


def test_mask_is_undone_when_the_block_raises():
    loaded, result = pruned_per_language("llama")
    dense = dense_linears(loaded.model)
    with pytest.raises(KeyboardInterrupt), apply_language_mask(loaded.model, result.mask_bank, "sw"):
        assert not torch.equal(dense_linears(loaded.model)["0.q"], dense["0.q"])
        raise KeyboardInterrupt
    for name, weight in dense_linears(loaded.model).items():
        assert torch.equal(weight, dense[name]), name
    with pytest.raises(BabelpruneError, match="no language 'de'"):
        with apply_language_mask(loaded.model, result.mask_bank, "de"):
            pass


# ----- errors and atomicity --------------------------------------------------------


def test_truncated_sparse_file_is_reported(tmp_path):
    loaded, result = pruned_shared("llama")
    out = save_pruned(loaded, result, tmp_path / "out", format="sparse")
    file = out / "sparse" / "sparse.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(BabelpruneError, match=CORRUPT):
        load_sparse(out)
    with pytest.raises(BabelpruneError, match=CORRUPT):
        load_pruned(out)


def test_truncated_or_mismatched_masks_are_reported(tmp_path):
    loaded, result = pruned_per_language("llama")
    out = save_pruned(loaded, result, tmp_path / "out")
    wider = tiny_config("llama")
    wider.intermediate_size = 96  # gate/up/down no longer match the stored masks
    with pytest.raises(BabelpruneError, match=CORRUPT):
        load_mask_bank(out, LlamaForCausalLM(wider))
    file = out / "masks.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(BabelpruneError, match=CORRUPT):
        load_pruned(out)


def test_unreadable_metadata_is_reported(tmp_path):
    (tmp_path / METADATA_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(BabelpruneError, match=CORRUPT):
        read_pruning_metadata(tmp_path)
    (tmp_path / METADATA_FILE).write_text(json.dumps({"format_version": 2}), encoding="utf-8")
    with pytest.raises(BabelpruneError, match="newer babelprune"):
        read_pruning_metadata(tmp_path)


def test_existing_output_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    loaded, result = pruned_shared("llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    monkeypatch.setattr(loaded.model, "save_pretrained", lambda *a, **k: pytest.fail("wrote before checking"))
    with pytest.raises(BabelpruneError, match="Output folder .* exists; choose another --out or remove it"):
        save_pruned(loaded, result, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    loaded, result = pruned_shared("llama")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    # The HF weights are written, then the sparse copy fails midway.
    monkeypatch.setattr(pruned_format, "save_sparse", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_pruned(loaded, result, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither `out` nor a .partial folder


def test_a_trimmed_model_keeps_its_vocabulary_record_through_pruning_saving_and_loading(tmp_path):
    from babelprune import api

    loaded = loaded_tiny("llama")
    record = {"kept_ids": list(range(loaded.model.config.vocab_size)), "original_size": 1000, "languages": ["en"]}
    loaded.pruning = {"vocabulary": record}
    result = api.prune(loaded, PruneConfig(method="magnitude", sparsity=0.5), None, progress=False)
    assert loaded.pruning["vocabulary"] == record and loaded.pruning["method"] == "magnitude"
    reloaded = load_pruned(save_pruned(loaded, result, tmp_path / "out"))
    assert reloaded.pruning["vocabulary"] == record
