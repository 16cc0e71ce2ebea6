"""GGUF export: a causal LM and its tokenizer as one file for llama.cpp and transformers' GGUF loader.

    export_gguf(loaded, "model.gguf", dtype="f16")

The file follows llama.cpp's conventions, which transformers' loader
reverses when it reads a file back:

* tensors carry llama.cpp's names (`blk.N.attn_q.weight`...), from the
  `gguf` package's own HF -> GGUF name map;
* Llama's query and key rows are reordered for llama.cpp's rotary layout
  (pairs of adjacent dimensions instead of the two halves of each head);
* Gemma's RMSNorm scales by (1 + w), and llama.cpp stores that 1 + w;
* Phi-3's fused projections stay fused (llama.cpp's phi3 splits them as
  transformers does), and Cohere's logit scale is a metadata key;
* the tokenizer is a SentencePiece-style vocabulary: pieces with "▁" for
  spaces, a score per piece (llama.cpp merges the best-scoring pair first)
  and a type per piece (normal, control, user-defined, byte). The merge list
  is written too, so transformers rebuilds exactly the model's merges.

Only what the file can state is exported. llama.cpp and transformers derive
some settings from the architecture instead of reading them (Gemma 3: every
6th block global, local rope base 10000, attention scaled by 1/sqrt(head
dim); Cohere, Phi-3, OLMo 2: attention exactly as wide as the hidden state;
Cohere: per-head q/k norms exactly from 64 blocks on); a model whose config
departs from them, an encoder, another family, or a per-language mask bank
is refused with one sentence. f32 keeps the weights bit for bit, so pruned
zeros stay zeros; f16 halves the file, and norm weights stay f32 as
llama.cpp keeps them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from babelprune.cache import atomic_file
from babelprune.choices import GgufDtype
from babelprune.errors import BabelpruneError, refuse_existing_output
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import ADDED_BIAS_KEY, STRUCTURE_KEY

# GGUF token types (the numbers of SentencePiece's piece types).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# llama.cpp's converters give added and padding pieces this score; byte pieces score 0.
ADDED_SCORE = -1000.0
SPACE = "▁"  # SentencePiece's visible space
# The model the file was exported from (a folder's absolute path, an alias or a hub id): whose tokenizer
# spells the token ids of the file's vocabulary (babelprune eval --runtime llama.cpp reads it).
SOURCE_KEY = "babelprune.source"
GGUF_MAGIC = b"GGUF"
F16_MAX = 65504.0
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass(frozen=True)
class GgufExport:
    """What `export_gguf` wrote."""

    path: Path
    architecture: str  # the GGUF architecture: "llama", "gemma3", "qwen3", "command-r", "phi3" or "olmo2"
    tensor_count: int
    size_bytes: int
    dtype: GgufDtype
    vocab_size: int
    # Set when llama.cpp's quantizer wrote the file (babelprune.formats.gguf_quant).
    quant: str | None = None  # the mix: "Q4_K_M"...
    imatrix: str = "none"  # "none", "balanced" or the one language the importance matrix comes from
    imatrix_languages: tuple[str, ...] = ()
    # Tensors whose rows the mix's k-quant cannot take (width not a multiple of 256), -> the type llama.cpp gave them.
    fallbacks: dict[str, str] | None = None

    @property
    def megabytes(self) -> float:
        return self.size_bytes / 1e6


def export_gguf(loaded: LoadedModel, path: Path | str, dtype: GgufDtype = "f32",
                metadata: dict[str, object] | None = None) -> GgufExport:
    """Write `loaded` (a causal LM of a family in FAMILIES) and its tokenizer to the new GGUF file `path`.

    `metadata`: more keys to state (strings, integers or lists of strings), e.g. babelprune.quantize.*.
    """
    path = Path(path)
    if dtype not in ("f32", "f16"):
        raise BabelpruneError(f"GGUF dtype '{dtype}' is not supported; choose f32 or f16.")
    refuse_existing_output(path)
    family = family_of(loaded)
    config = loaded.model.config
    family.check(config, loaded.spec)
    added = (getattr(config, STRUCTURE_KEY, None) or {}).get(ADDED_BIAS_KEY)
    if added:
        raise BabelpruneError(
            f"{loaded.spec} carries output biases its architecture is built without (added by a structured --refit), "
            "which GGUF readers of this family do not load; export a model pruned without --refit."
        )
    rows = loaded.model.get_input_embeddings().weight.shape[0]
    vocab = describe_tokenizer(loaded.tokenizer, rows, loaded.spec, config)
    tensors = list(gguf_tensors(loaded.model, family, dtype, loaded.spec))
    name = Path(str(loaded.spec).rstrip("/")).name or family.arch
    metadata = {SOURCE_KEY: source_spec(loaded.spec), **(metadata or {})}
    write_atomically(path, lambda file: write_file(file, family, config, vocab, tensors, dtype, name, metadata))
    return GgufExport(path, family.arch, len(tensors), path.stat().st_size, dtype, len(vocab.tokens))


def source_spec(spec: str) -> str:
    """The model a file is exported from, as a later command can name it again: a local folder as its absolute
    path (the command may run elsewhere), an alias or a hub id as given."""
    folder = Path(str(spec)).expanduser()
    try:
        return str(folder.resolve()) if folder.is_dir() else str(spec)
    except OSError:
        return str(spec)


# ------------------------------------------------------------------ families


@dataclass(frozen=True)
class Family:
    """How one transformers model type becomes a GGUF architecture."""

    arch: str  # GGUF architecture name, also the prefix of its metadata keys
    settings: Callable[[object], list[tuple[str, object, object]]]  # (setting, model's value, value GGUF readers assume)
    add_hparams: Callable[[object, object], None]  # (writer, config): the architecture's metadata
    transform: Callable[[str, torch.Tensor, object], torch.Tensor]  # (GGUF name, tensor, config) -> stored tensor
    # (config) -> block tensor shapes that differ from _expected_shapes' (fused projections, wide q/k norms)
    shapes: Callable[[object], dict[str, tuple[int, ...]]] | None = None

    def check(self, config, spec: str) -> None:
        """Refuse a config that sets something the file cannot state (GGUF readers would assume otherwise)."""
        for setting, value, assumed in self.settings(config):
            if value != assumed:
                raise BabelpruneError(
                    f"{spec} is a {self.arch} model with {setting} = {value!r}, but GGUF readers assume {assumed!r} "
                    f"for {self.arch} and the file cannot say otherwise; GGUF export supports {_SUPPORTED} models "
                    "with their standard settings."
                )


def _rope(config, layer_type: str | None = None) -> dict:
    """A config's rope parameters (transformers 5 keeps one dict per attention type for Gemma 3)."""
    rope = dict(getattr(config, "rope_parameters", None) or {})
    return dict(rope.get(layer_type) or {}) if layer_type else rope


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _size_hparams(writer, config) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)


def _common_hparams(writer, config) -> None:
    _size_hparams(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)


def _llama_settings(config) -> list[tuple[str, object, object]]:
    return [
        ("hidden_act", config.hidden_act, "silu"),
        ("attention_bias", config.attention_bias, False),
        ("mlp_bias", getattr(config, "mlp_bias", False), False),
        ("rope_type", _rope(config).get("rope_type", "default"), "default"),
        ("pretraining_tp", getattr(config, "pretraining_tp", 1), 1),
    ]


def _llama_hparams(writer, config) -> None:
    _common_hparams(writer, config)
    # transformers reads the head width from rope.dimension_count; llama.cpp from key_length when given.
    writer.add_rope_dimension_count(_head_dim(config))
    if _head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(_head_dim(config))
        writer.add_value_length(_head_dim(config))
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))


def rotary_permute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Query/key rows from transformers' rotary layout to llama.cpp's.

    transformers rotates the two halves of each head (rows i and i + d/2 pair
    up); llama.cpp rotates adjacent rows (2i, 2i + 1). weight: (n_heads * d, hidden).
    """
    rows, cols = weight.shape
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, cols).transpose(1, 2).reshape(rows, cols)


def _llama_transform(name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    if name.endswith("attn_q.weight"):
        return rotary_permute(tensor, config.num_attention_heads)
    if name.endswith("attn_k.weight"):
        return rotary_permute(tensor, config.num_key_value_heads)
    return tensor


# llama.cpp (and transformers' default) for Gemma 3: every 6th block global, the others local.
GEMMA3_PATTERN = 6
GEMMA3_LOCAL_ROPE_BASE = 10_000.0


def gemma3_layer_types(n_layers: int) -> list[str]:
    return ["full_attention" if (i + 1) % GEMMA3_PATTERN == 0 else "sliding_attention" for i in range(n_layers)]


def _gemma3_settings(config) -> list[tuple[str, object, object]]:
    settings = [
        ("hidden_activation", config.hidden_activation, "gelu_pytorch_tanh"),
        # llama.cpp scales attention by 1/sqrt(head_dim); transformers' reader assumes 256.
        ("query_pre_attn_scalar", config.query_pre_attn_scalar, _head_dim(config)),
        ("final_logit_softcapping", config.final_logit_softcapping, None),
        ("attn_logit_softcapping", config.attn_logit_softcapping, None),
        ("attention_bias", config.attention_bias, False),
        ("use_bidirectional_attention", bool(getattr(config, "use_bidirectional_attention", False)), False),
        ("rope_type", _rope(config, "full_attention").get("rope_type", "default"), "default"),
        ("local rope_type", _rope(config, "sliding_attention").get("rope_type", "default"), "default"),
        ("local rope_theta", float(_rope(config, "sliding_attention").get("rope_theta", 0)), GEMMA3_LOCAL_ROPE_BASE),
    ]
    if config.sliding_window:
        settings.append(("layer_types", list(config.layer_types), gemma3_layer_types(config.num_hidden_layers)))
    return settings


def _gemma3_hparams(writer, config) -> None:
    _common_hparams(writer, config)
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    writer.add_rope_freq_base(float(_rope(config, "full_attention")["rope_theta"]))
    if config.sliding_window:
        writer.add_sliding_window(config.sliding_window)


def _gemma3_transform(name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    # Every Gemma RMSNorm computes x * (1 + w): llama.cpp stores 1 + w and multiplies.
    return tensor + 1.0 if name.endswith("norm.weight") else tensor


# transformers' GGUF reader does not read Qwen3's head width (attention.key_length): it keeps Qwen3Config's default.
QWEN3_HEAD_DIM = 128


def _qwen3_settings(config) -> list[tuple[str, object, object]]:
    return [
        ("hidden_act", config.hidden_act, "silu"),
        ("attention_bias", config.attention_bias, False),
        ("rope_type", _rope(config).get("rope_type", "default"), "default"),
        ("head_dim", _head_dim(config), QWEN3_HEAD_DIM),
        ("use_sliding_window", bool(getattr(config, "use_sliding_window", False)), False),
    ]


def _qwen3_hparams(writer, config) -> None:
    _common_hparams(writer, config)
    # llama.cpp reads the head width from key_length (Qwen3's is not hidden / heads).
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))


def _unchanged(name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    # Qwen3 rotates the two halves of each head in llama.cpp too (NeoX style): no row reordering.
    return tensor


def _full_width_attention(config) -> tuple[str, object, object]:
    """llama.cpp's command-r, phi3 and olmo2 size the query and output projections (and OLMo 2's query norm)
    hidden x hidden, so heads x head width must equal the hidden width; key_length cannot say otherwise."""
    return ("num_attention_heads x head_dim", config.num_attention_heads * _head_dim(config), config.hidden_size)


# llama.cpp's command-r loads per-head q/k norms exactly when a model has this many blocks or more
# (Command R+ has 64, Aya 23 and Aya Expanse fewer and no qk-norm): the file cannot say otherwise.
COMMAND_R_QK_NORM_BLOCKS = 64


def _cohere_settings(config) -> list[tuple[str, object, object]]:
    blocks = config.num_hidden_layers
    return [
        ("hidden_act", config.hidden_act, "silu"),
        ("attention_bias", config.attention_bias, False),
        ("rope_type", _rope(config).get("rope_type", "default"), "default"),
        # llama.cpp's command-r has no output matrix: its LM head is always the token embedding.
        ("tie_word_embeddings", bool(config.tie_word_embeddings), True),
        (f"use_qk_norm at {blocks} blocks", bool(config.use_qk_norm), blocks >= COMMAND_R_QK_NORM_BLOCKS),
        _full_width_attention(config),
    ]


def _cohere_hparams(writer, config) -> None:
    import gguf

    _size_hparams(writer, config)
    # Cohere's norms are LayerNorms without bias (mean subtracted): layer_norm_epsilon, not the RMS key.
    writer.add_layer_norm_eps(config.layer_norm_eps)
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    writer.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    writer.add_logit_scale(float(config.logit_scale))  # command-r.logit_scale: logits = (embedding @ h) * scale


def _cohere_shapes(config) -> dict[str, tuple[int, ...]]:
    # Cohere's optional qk-norm is a LayerNorm per head: (heads, head width), as llama.cpp's command-r reads it.
    head = _head_dim(config)
    return {"attn_q_norm": (config.num_attention_heads, head), "attn_k_norm": (config.num_key_value_heads, head)}


def _phi3_settings(config) -> list[tuple[str, object, object]]:
    # Long-context Phi-3 (rope_type "longrope") needs per-frequency factor tensors that transformers' reader
    # does not read and that llama.cpp switches by context size, not by sequence length: it is refused here.
    return [
        ("hidden_act", config.hidden_act, "silu"),
        ("rope_type", _rope(config).get("rope_type", "default"), "default"),
        # llama.cpp reads a partial rotary width (rope.dimension_count); transformers' reader does not.
        ("partial_rotary_factor", float(_rope(config).get("partial_rotary_factor", 1.0)), 1.0),
        _full_width_attention(config),
    ]


def _phi3_hparams(writer, config) -> None:
    _common_hparams(writer, config)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    if getattr(config, "original_max_position_embeddings", None):
        writer.add_rope_scaling_orig_ctx_len(config.original_max_position_embeddings)
    if getattr(config, "sliding_window", None):
        # Stated as llama.cpp's own converter states it; llama.cpp's phi3 currently attends past it (and warns).
        writer.add_sliding_window(config.sliding_window)


def _phi3_shapes(config) -> dict[str, tuple[int, ...]]:
    # qkv_proj: (q + k + v rows, hidden), in that order, which llama.cpp's phi3 views at the same offsets;
    # gate_up_proj: (2 * ffn, hidden), gate rows first: llama.cpp's SwiGLU applies SiLU to the first half too.
    head = _head_dim(config)
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    return {"attn_qkv": (q + 2 * kv, config.hidden_size), "ffn_up": (2 * config.intermediate_size, config.hidden_size)}


def _olmo2_settings(config) -> list[tuple[str, object, object]]:
    return [
        ("hidden_act", config.hidden_act, "silu"),
        ("attention_bias", config.attention_bias, False),
        ("rope_type", _rope(config).get("rope_type", "default"), "default"),
        # llama.cpp's olmo2 requires an output matrix of its own; a tied head has none to write.
        ("tie_word_embeddings", bool(config.tie_word_embeddings), False),
        _full_width_attention(config),
    ]


def _olmo2_hparams(writer, config) -> None:
    _common_hparams(writer, config)
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))


def _olmo2_shapes(config) -> dict[str, tuple[int, ...]]:
    # OLMo 2 normalises the whole query / key projection before splitting it into heads: (q,) and (kv,).
    head = _head_dim(config)
    return {"attn_q_norm": (config.num_attention_heads * head,), "attn_k_norm": (config.num_key_value_heads * head,)}


# transformers model_type -> family
FAMILIES: dict[str, Family] = {
    "llama": Family("llama", _llama_settings, _llama_hparams, _llama_transform),
    "gemma3_text": Family("gemma3", _gemma3_settings, _gemma3_hparams, _gemma3_transform),
    "qwen3": Family("qwen3", _qwen3_settings, _qwen3_hparams, _unchanged),
    # Cohere rotates adjacent pairs, as llama.cpp's command-r does (rope type NORM); OLMo 2 and Phi-3 rotate
    # the two halves of each head, as llama.cpp's olmo2 and phi3 do (NEOX): no row reordering for any of them.
    "cohere": Family("command-r", _cohere_settings, _cohere_hparams, _unchanged, _cohere_shapes),
    "phi3": Family("phi3", _phi3_settings, _phi3_hparams, _unchanged, _phi3_shapes),
    "olmo2": Family("olmo2", _olmo2_settings, _olmo2_hparams, _unchanged, _olmo2_shapes),
}
_SUPPORTED = (
    "llama (LlamaForCausalLM), gemma3 (Gemma3ForCausalLM), qwen3 (Qwen3ForCausalLM), "
    "command-r (CohereForCausalLM), phi3 (Phi3ForCausalLM) and olmo2 (Olmo2ForCausalLM)"
)


def family_of(loaded: LoadedModel) -> Family:
    """The family of a model GGUF export can write; any other model is refused in one sentence."""
    config = loaded.model.config
    architecture = (config.architectures or [type(loaded.model).__name__])[0]
    if loaded.kind == "encoder":
        raise BabelpruneError(
            f"{loaded.spec} is an encoder ({architecture}); GGUF export writes causal LMs: {_SUPPORTED}."
        )
    if loaded.mask_bank:
        raise BabelpruneError(
            f"{loaded.spec} was pruned per language: it has one mask per language over dense weights, not one "
            "set of weights; prune it with --setting shared to export it."
        )
    family = FAMILIES.get(config.model_type)
    if family is None or loaded.model.get_output_embeddings() is None:
        raise BabelpruneError(
            f"{loaded.spec} is a {config.model_type} model ({architecture}), which GGUF export cannot write; "
            f"it supports {_SUPPORTED}."
        )
    return family


# ------------------------------------------------------------------ tensors


def _expected_shapes(config, family: Family | None = None) -> dict[str, tuple[int, ...]]:
    """GGUF tensor kind -> the (out, in) shape the config states, the same for every block."""
    hidden, ffn, head = config.hidden_size, config.intermediate_size, _head_dim(config)
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    shapes = {
        "attn_q": (q, hidden), "attn_k": (kv, hidden), "attn_v": (kv, hidden), "attn_output": (hidden, q),
        "attn_q_norm": (head,), "attn_k_norm": (head,),
        "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn),
    }
    if family is not None and family.shapes is not None:
        shapes.update(family.shapes(config))
    return shapes


def _check_block_shape(name: str, tensor: torch.Tensor, expected: dict, spec: str) -> None:
    """A block tensor whose shape the config does not state (a block narrowed on its own) cannot be written."""
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if match and match.group(2) in expected and tuple(tensor.shape) != expected[match.group(2)]:
        raise BabelpruneError(
            f"{spec} has blocks of different widths (block {match.group(1)}'s {match.group(2)} is "
            f"{tuple(tensor.shape)}, its config states {expected[match.group(2)]}); GGUF states one width for "
            "every block, so export a model whose blocks share their widths."
        )


def _stored(tensor: torch.Tensor, dtype: GgufDtype, name: str, spec: str) -> np.ndarray:
    """The array written for one tensor: float32, or float16 for matrices in f16.

    1-D tensors and norm weights stay float32, as llama.cpp's converter keeps
    them (Cohere's per-head q/k norms are (heads, head width) matrices).
    """
    tensor = tensor.detach().to(torch.float32).cpu()
    if dtype == "f16" and tensor.dim() > 1 and not name.endswith("_norm.weight"):
        if tensor.abs().max() > F16_MAX:
            raise BabelpruneError(f"{spec}'s {name} has values beyond float16's range; export it with --dtype f32.")
        tensor = tensor.to(torch.float16)
    return np.ascontiguousarray(tensor.numpy())


def gguf_tensors(model, family: Family, dtype: GgufDtype, spec: str) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, array) for every weight, in llama.cpp's layout; a tied LM head is left out (GGUF ties by omission)."""
    import gguf

    config = model.config
    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == family.arch)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    expected = _expected_shapes(config, family)
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    tied = head.data_ptr() == embedding.data_ptr()
    for key, tensor in model.state_dict().items():
        if tied and tensor.data_ptr() == head.data_ptr() and key.endswith("lm_head.weight"):
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise BabelpruneError(f"{spec} has a weight GGUF has no name for ({key}); GGUF export supports {_SUPPORTED}.")
        _check_block_shape(name, tensor, expected, spec)
        yield name, _stored(family.transform(name, tensor.to(torch.float32), config), dtype, name, spec)


def linear_gguf_names(loaded: LoadedModel) -> dict[str, str]:
    """Module name of each weight matrix the file holds -> its GGUF tensor name ("model.layers.0.self_attn.q_proj"
    -> "blk.0.attn_q.weight"); a tied LM head, which the file leaves out, is left out here too."""
    import gguf

    model = loaded.model
    family = family_of(loaded)
    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == family.arch)
    names = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    out = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if module.weight.data_ptr() == embedding.data_ptr() and head.data_ptr() == embedding.data_ptr():
            continue  # tied: GGUF ties by omission
        name = names.get_name(f"{module_name}.weight", try_suffixes=(".weight", ".bias"))
        if name is not None:
            out[module_name] = name
    return out


# ------------------------------------------------------------------ tokenizer


@dataclass(frozen=True)
class GgufVocabulary:
    """The tokenizer fields of the file, one entry per embedding row."""

    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    merges: list[str] | None  # "left right", best first; None when a piece holds a space
    special_ids: dict[str, int]  # bos / eos / unk / pad -> id
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None
    # tokenizer.ggml.model and .pre: "llama" (SentencePiece-style BPE, merges by piece score) and "default", or
    # "gpt2" (byte-level BPE, merges by rank) with the pre-tokenizer llama.cpp names for its splitting rule.
    model: str = "llama"
    pre: str = "default"


def _backend_state(tokenizer, spec: str) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise BabelpruneError(f"{spec}'s tokenizer is not a fast (tokenizers) tokenizer, which GGUF export reads.")
    return json.loads(backend.to_str())


def _components(part: dict | None) -> list[dict]:
    """A normalizer or pre-tokenizer as its list of steps (a Sequence flattened, None empty)."""
    if not part:
        return []
    inner = part.get("normalizers") or part.get("pretokenizers")
    return [step for item in inner for step in _components(item)] if part["type"] == "Sequence" else [part]


def space_prefix(state: dict, spec: str) -> bool:
    """Whether the tokenizer adds "▁" before the text; refuses tokenizers that do not write spaces as "▁".

    SentencePiece-style tokenizers in `tokenizers` either replace spaces in
    the normalizer (Gemma: Replace, Llama 2 of old: Prepend + Replace) or in
    a Metaspace pre-tokenizer (Llama 2 today).
    """
    normalizer = [(step["type"], step.get("pattern", {}).get("String"), step.get("content"), step.get("prepend"))
                  for step in _components(state.get("normalizer"))]
    pre = _components(state.get("pre_tokenizer"))
    if ("Replace", " ", SPACE, None) in normalizer:
        return ("Prepend", None, None, SPACE) in normalizer
    if len(pre) == 1 and pre[0]["type"] == "Metaspace" and pre[0].get("replacement") == SPACE:
        return pre[0].get("prepend_scheme", "always") != "never"
    raise BabelpruneError(
        f"{spec}'s tokenizer does not write spaces as '{SPACE}' (normalizer {[step[0] for step in normalizer]}, "
        f"pre-tokenizer {[step['type'] for step in pre]}); GGUF export describes SentencePiece-style BPE tokenizers."
    )


def _token_table(state: dict, rows: int, spec: str) -> tuple[list[str], list[int]]:
    """Token text and type of every id, padded with unused pieces up to the embedding's rows."""
    pieces = {index: token for token, index in state["model"]["vocab"].items()}
    types = {index: BYTE if state["model"].get("byte_fallback") and _BYTE_PIECE.match(t) else NORMAL
             for index, t in pieces.items()}
    for added in state.get("added_tokens", []):
        text, kind = added["content"], CONTROL if added["special"] else USER_DEFINED
        if kind == USER_DEFINED and added.get("normalized", True):
            text = text.replace(SPACE, " ")  # llama.cpp matches user-defined pieces in the raw text
        pieces[added["id"]], types[added["id"]] = text, kind
    size = max(pieces, default=-1) + 1
    if size > rows:
        raise BabelpruneError(f"{spec}'s tokenizer has {size} tokens but its embedding only {rows} rows; "
                              "GGUF needs one row per token.")
    # Ids with no piece (gaps, rows past the tokenizer) become unused placeholders, as llama.cpp's converter writes.
    tokens = [pieces.get(i, f"[PAD{i}]") for i in range(rows)]
    return tokens, [types.get(i, UNUSED) for i in range(rows)]


def _merge_pairs(state: dict) -> list[tuple[str, str]]:
    merges = state["model"].get("merges") or []
    return [tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge) for merge in merges]


def piece_scores(tokens: list[str], types: list[int], merges: list[tuple[str, str]]) -> list[float]:
    """A score per piece such that merging the best-scoring pair first (llama.cpp) follows the merge ranks.

    Pieces a merge builds score by their first merge's rank (0, -1, -2...),
    the other normal pieces (single characters) below them in id order, as
    SentencePiece numbers its pieces; added and unused pieces -1000, bytes 0.
    """
    index = {token: i for i, token in enumerate(tokens) if types[i] == NORMAL}
    order: dict[int, None] = {}
    for left, right in merges:
        built = index.get(left + right)
        if built is not None:
            order.setdefault(built, None)
    for i, kind in enumerate(types):
        if kind == NORMAL:
            order.setdefault(i, None)
    rank = {piece: -float(position) for position, piece in enumerate(order)}
    return [rank[i] if kind == NORMAL else 0.0 if kind == BYTE else ADDED_SCORE for i, kind in enumerate(types)]


def _special_ids(tokenizer, config) -> dict[str, int]:
    ids = {}
    for name in ("bos", "eos", "unk", "pad"):
        value = getattr(tokenizer, f"{name}_token_id", None)
        value = getattr(config, f"{name}_token_id", None) if value is None else value
        if isinstance(value, int):
            ids[name] = value
    return ids


def _added_around(tokenizer, ids: dict[str, int]) -> tuple[bool, bool]:
    """Whether encoding adds BOS first / EOS last (probed, since tokenizers state it in different places)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    extra = len(full) > len(plain)
    return (extra and "bos" in ids and full[0] == ids["bos"]), (extra and "eos" in ids and full[-1] == ids["eos"])


def byte_level_pre(state: dict) -> str | None:
    """llama.cpp's name for a byte-level BPE tokenizer's splitting rule, or None when the tokenizer is not one.

    GPT-2's ByteLevel pre-tokenizer with its own regex and no prefix space
    (SmolLM2, GPT-2) splits text as llama.cpp's "gpt-2" rule does. Other
    byte-level tokenizers split by their own regexes (Llama 3, Qwen), which
    llama.cpp knows under other names: refused rather than mis-split.
    """
    pre = _components(state.get("pre_tokenizer"))
    if not any(step["type"] == "ByteLevel" for step in pre):
        return None
    if (len(pre) == 1 and pre[0].get("use_regex", True) and not pre[0].get("add_prefix_space", False)
            and not state.get("normalizer")):
        return "gpt-2"
    return "unknown"


def describe_tokenizer(tokenizer, rows: int, spec: str, config) -> GgufVocabulary:
    """The model's tokenizer as GGUF states it: `tokenizer.ggml.model` "llama" (SentencePiece-style BPE, Gemma and
    Llama 2) or "gpt2" (byte-level BPE with GPT-2's splitting, SmolLM2)."""
    state = _backend_state(tokenizer, spec)
    if state["model"]["type"] != "BPE":
        raise BabelpruneError(f"{spec}'s tokenizer is a {state['model']['type']} tokenizer; GGUF export describes "
                              "BPE tokenizers (SentencePiece-style as Gemma's, or byte-level as SmolLM2's).")
    pre = byte_level_pre(state)
    if pre == "unknown":
        raise BabelpruneError(f"{spec}'s byte-level tokenizer splits text by its own rule, not GPT-2's; GGUF export "
                              "writes byte-level tokenizers that split as GPT-2 does (SmolLM2) and SentencePiece-style ones.")
    prefix = False if pre else space_prefix(state, spec)
    tokens, types = _token_table(state, rows, spec)
    merges = _merge_pairs(state)
    written = None if any(" " in part for pair in merges for part in pair) else [" ".join(pair) for pair in merges]
    ids = _special_ids(tokenizer, config)
    add_bos, add_eos = _added_around(tokenizer, ids)
    template = getattr(tokenizer, "chat_template", None)
    template = template if isinstance(template, str) else None
    if pre:  # byte-level: llama.cpp merges by rank, so the merges are the rule and scores are not written
        if written is None:
            raise BabelpruneError(f"{spec}'s byte-level tokenizer has a merge with a space in it, which GGUF cannot "
                                  "write; GGUF export needs the merges.")
        return GgufVocabulary(tokens, [], types, written, ids, add_bos, add_eos, prefix, template, model="gpt2", pre=pre)
    return GgufVocabulary(tokens, piece_scores(tokens, types, merges), types, written, ids, add_bos, add_eos,
                          prefix, template)


def _add_vocabulary(writer, vocab: GgufVocabulary) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.scores:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
    for name, token_id in vocab.special_ids.items():
        adders[name](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_sep_token(False)  # a causal LM's tokenizer joins no sentence pairs
    writer.add_add_eos_token(vocab.add_eos)
    writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


# ------------------------------------------------------------------ writing


def write_file(file: Path, family: Family, config, vocab: GgufVocabulary, tensors, dtype: GgufDtype, name: str,
               metadata: dict[str, object] | None = None) -> None:
    """Metadata, tokenizer and tensors into `file`, in GGUF's order (header, key/values, tensor data)."""
    import gguf

    writer = gguf.GGUFWriter(file, family.arch)
    try:
        writer.add_type("model")
        writer.add_name(name)
        family.add_hparams(writer, config)
        writer.add_vocab_size(len(vocab.tokens))
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_vocabulary(writer, vocab)
        for key, value in (metadata or {}).items():
            if isinstance(value, str):
                writer.add_string(key, value)
            elif isinstance(value, int):
                writer.add_uint32(key, value)
            else:
                writer.add_array(key, list(value))
        for tensor_name, array in tensors:
            writer.add_tensor(tensor_name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run `write` on a temporary file next to `path` and rename it into place only when complete (`cache.atomic_file`)."""
    atomic_file(path, write, before_replace=lambda: refuse_existing_output(path))  # written meanwhile by someone else: keep theirs

# ------------------------------------------------------------------ reading a file back


@dataclass(frozen=True)
class GgufFacts:
    """What a GGUF file states about the model it holds (read with the `gguf` package, no weights loaded into a model)."""

    path: Path
    architecture: str  # general.architecture: "llama", "gemma3"...
    file_type: str  # general.file_type as llama.cpp names it, less its prefix: "F32", "F16", "Q4_K_M"...
    context_length: int | None  # <arch>.context_length: the positions the model was built for
    block_count: int | None
    tokens: list[str]  # tokenizer.ggml.tokens, one per embedding row
    tokenizer_fields: dict[str, object]  # token types, space prefix and special ids, as `spelling_fields` names them
    source: str | None  # babelprune.source: the model it was exported from (None when another tool wrote it)
    n_parameters: int  # elements of every tensor (a tied output projection is stored once)
    tensor_types: dict[str, str]  # tensor name -> its stored type ("F32", "Q4_K"...)


def is_gguf_file(path: Path | str) -> bool:
    """Whether `path` is a file that starts with GGUF's magic bytes."""
    try:
        with open(path, "rb") as file:
            return file.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _field(fields: dict, key: str):
    field = fields.get(key)
    return None if field is None else field.contents()


def file_type_name(value: int | None) -> str:
    """general.file_type as a short name ("F32", "Q4_K_M"); "unknown" when absent or not one llama.cpp names."""
    import gguf

    if value is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(int(value)).name
    except ValueError:
        return f"type {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def read_gguf(path: Path | str) -> GgufFacts:
    """The facts of the GGUF file `path`; a file that is not GGUF, or that the `gguf` package cannot read, is one sentence."""
    from gguf import GGUFReader

    path = Path(path)
    if not is_gguf_file(path):
        raise BabelpruneError(f"{path} is not a GGUF file (it does not start with GGUF's magic bytes); "
                              "give a .gguf file that `babelprune export --format gguf` or llama.cpp wrote.")
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise BabelpruneError(f"{path} could not be read as GGUF ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              "the file may be truncated.") from None
    fields = reader.fields
    arch = _field(fields, "general.architecture") or "unknown"
    context = _field(fields, f"{arch}.context_length")
    blocks = _field(fields, f"{arch}.block_count")
    return GgufFacts(
        path=path, architecture=str(arch), file_type=file_type_name(_field(fields, "general.file_type")),
        context_length=int(context) if context is not None else None, block_count=int(blocks) if blocks is not None else None,
        tokens=list(_field(fields, "tokenizer.ggml.tokens") or []), source=_field(fields, SOURCE_KEY),
        tokenizer_fields={name: _field(fields, key) for name, key in SPELLING_KEYS.items()},
        n_parameters=int(sum(int(tensor.n_elements) for tensor in reader.tensors)),
        tensor_types={tensor.name: tensor.tensor_type.name for tensor in reader.tensors},
    )


def block_zero_share(path: Path | str) -> float:
    """Share of exact zeros in the blocks' matrices (blk.*, two dimensions) as the file stores them, dequantized."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    zeros = total = 0
    for tensor in GGUFReader(str(path)).tensors:
        if not tensor.name.startswith("blk.") or len([size for size in tensor.shape if size > 1]) < 2:
            continue
        values = dequantize(tensor.data, tensor.tensor_type)
        zeros += int(np.count_nonzero(values == 0))
        total += int(values.size)
    return zeros / total if total else 0.0


# How the file says text is spelled in its pieces, beyond the pieces themselves: what a tokenizer must agree with.
SPELLING_KEYS = {"token types": "tokenizer.ggml.token_type", "space prefix": "tokenizer.ggml.add_space_prefix",
                 "BOS id": "tokenizer.ggml.bos_token_id", "BOS setting": "tokenizer.ggml.add_bos_token"}


def check_tokenizer_matches(tokenizer, facts: GgufFacts, tokenizer_spec: str) -> None:
    """Refuse a tokenizer that is not the one the file was exported with: its pieces must be the file's, id for id,
    and it must spell text as the file says (space prefix, BOS), or the ids fed to llama.cpp would mean other text."""
    mismatch = f"{tokenizer_spec}'s tokenizer is not the one {facts.path.name} was exported with"
    fix = "give the tokenizer of the model it was exported from"
    rows = len(facts.tokens)
    try:
        vocab = describe_tokenizer(tokenizer, rows, tokenizer_spec, None)
    except BabelpruneError as exc:
        raise BabelpruneError(f"{mismatch} ({str(exc).rstrip('.')}); {fix}.") from None
    differing = next((i for i, (ours, theirs) in enumerate(zip(vocab.tokens, facts.tokens)) if ours != theirs), None)
    if differing is not None:
        raise BabelpruneError(f"{mismatch} (token {differing} is {vocab.tokens[differing]!r} there and "
                              f"{facts.tokens[differing]!r} in the file); {fix}.")
    ours = {"token types": list(vocab.token_types), "space prefix": vocab.add_space_prefix,
            "BOS id": vocab.special_ids.get("bos"), "BOS setting": vocab.add_bos}
    for name, value in facts.tokenizer_fields.items():
        theirs = list(value) if isinstance(value, (list, tuple)) else value
        if value is not None and ours[name] != theirs:
            shown = "differ" if name == "token types" else f"is {ours[name]!r} there and {theirs!r} in the file"
            raise BabelpruneError(f"{mismatch} (its {name} {shown}); {fix}.")
