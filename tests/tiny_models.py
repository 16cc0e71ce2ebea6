"""Tiny random Hugging Face models, built from configs with no network.

Tests across babelprune need real architectures (the same module names,
shapes and forward code as the full-size models) but not real weights. Each
family here is built from a config of 2 blocks, hidden width 32 and 4
attention heads (2 key/value heads for the grouped-query families: the
Llama-like ones, Qwen3, Cohere, Phi-3 and OLMo 2), so one
model builds in a few tens of milliseconds.

    model = tiny_model("llama")               # LlamaForCausalLM, eval, float32
    model = tiny_model("bert")                # bare BertModel
    model = tiny_model("bert", task="mlm")    # BertForMaskedLM
    batch = tiny_inputs(model)                # input_ids + attention_mask
"""

from __future__ import annotations

from typing import Literal

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BloomConfig,
    CohereConfig,
    Gemma2Config,
    Gemma3Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    OPTConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen3Config,
    SiglipVisionConfig,
    XLMRobertaConfig,
)

# The families every architecture-aware test is run over.
TINY_FAMILIES = (
    "llama", "qwen2", "mistral", "gemma3", "qwen3", "cohere", "phi3", "olmo2",
    "gpt2", "bloom", "opt", "bert", "xlm-roberta",
)
# Cheap extras sharing a layout above (Gemma 1/2 are Llama-like; the multimodal
# Gemma3 wraps the gemma3 text model next to a vision tower).
EXTRA_FAMILIES = ("gemma", "gemma2", "gemma3-multimodal")
ALL_TINY_FAMILIES = TINY_FAMILIES + EXTRA_FAMILIES

ENCODER_FAMILIES = ("bert", "xlm-roberta")

Task = Literal["lm", "base", "mlm", "classify"]

VOCAB = 128
HIDDEN = 32
LAYERS = 2
HEADS = 4
KV_HEADS = 2  # for the grouped-query families
INTERMEDIATE = 64
MAX_POSITIONS = 64
GEMMA_HEAD_DIM = 16  # deliberately != HIDDEN // HEADS, as in real Gemma models
QWEN3_HEAD_DIM = 16  # likewise: Qwen3 states head_dim (128) apart from hidden / heads
# Families whose config defaults name token ids past the tiny vocabulary get these.
_SMALL_TOKEN_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)

_LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=INTERMEDIATE,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    max_position_embeddings=MAX_POSITIONS,
)
_ENCODER = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=INTERMEDIATE,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    max_position_embeddings=MAX_POSITIONS,
    type_vocab_size=2,
)


def _gemma3_text_config() -> Gemma3TextConfig:
    # One sliding-window block then one global block, as the real model
    # alternates them; the window is wider than the test sequences.
    return Gemma3TextConfig(
        **_LLAMA_LIKE,
        head_dim=GEMMA_HEAD_DIM,
        query_pre_attn_scalar=GEMMA_HEAD_DIM,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
    )


def tiny_config(family: str) -> PretrainedConfig:
    """The tiny config of one family in ALL_TINY_FAMILIES."""
    if family == "llama":
        return LlamaConfig(**_LLAMA_LIKE)
    if family == "qwen2":
        return Qwen2Config(**_LLAMA_LIKE)
    if family == "mistral":
        return MistralConfig(**_LLAMA_LIKE, sliding_window=16)
    if family == "gemma":
        return GemmaConfig(**_LLAMA_LIKE, head_dim=GEMMA_HEAD_DIM)
    if family == "gemma2":
        return Gemma2Config(
            **_LLAMA_LIKE,
            head_dim=GEMMA_HEAD_DIM,
            query_pre_attn_scalar=GEMMA_HEAD_DIM,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
        )
    if family == "gemma3":
        return _gemma3_text_config()
    if family == "gemma3-multimodal":
        vision = SiglipVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, image_size=16, patch_size=4,
        )
        return Gemma3Config(text_config=_gemma3_text_config(), vision_config=vision, mm_tokens_per_image=4)
    if family == "qwen3":
        return Qwen3Config(**_LLAMA_LIKE, head_dim=QWEN3_HEAD_DIM)
    if family == "cohere":
        # Aya 23 / Aya Expanse settings: no qk-norm, tied embeddings, logits scaled by logit_scale.
        return CohereConfig(**_LLAMA_LIKE, **_SMALL_TOKEN_IDS, use_qk_norm=False, logit_scale=0.25)
    if family == "phi3":
        return Phi3Config(**_LLAMA_LIKE, **_SMALL_TOKEN_IDS)
    if family == "olmo2":
        return Olmo2Config(**_LLAMA_LIKE, **_SMALL_TOKEN_IDS)
    if family == "gpt2":
        # n_inner=None: the FFN width is the GPT-2 default of 4 * n_embd = 128.
        return GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                          n_positions=MAX_POSITIONS, n_inner=None,
                          bos_token_id=1, eos_token_id=2)
    if family == "bloom":
        # BLOOM has no FFN-width setting: it is always 4 * hidden = 128.
        return BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS)
    if family == "opt":
        return OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         max_position_embeddings=MAX_POSITIONS, word_embed_proj_dim=HIDDEN)
    if family == "bert":
        return BertConfig(**_ENCODER)
    if family == "xlm-roberta":
        # XLM-R positions start after the padding index, hence the + 2.
        return XLMRobertaConfig(**{**_ENCODER, "max_position_embeddings": MAX_POSITIONS + 2}, pad_token_id=1)
    raise ValueError(f"no tiny config for {family!r}; known: {', '.join(ALL_TINY_FAMILIES)}")


def tiny_model(family: str, seed: int = 0, task: Task = "lm") -> PreTrainedModel:
    """A tiny random model of `family`, in eval mode and float32.

    task: "lm" is the causal LM for decoders and the bare encoder for
    encoders; "base" is the bare model (no head) for any family; "mlm" is the
    masked-LM model (encoders only); "classify" is a 2-label sequence
    classifier (encoders only).
    """
    config = tiny_config(family)
    is_encoder = family in ENCODER_FAMILIES
    if task in ("mlm", "classify") and not is_encoder:
        raise ValueError(f"task {task!r} is only built for the encoder families {ENCODER_FAMILIES}")
    torch.manual_seed(seed)
    if task == "base" or (task == "lm" and is_encoder):
        model = AutoModel.from_config(config)
    elif task == "lm":
        model = AutoModelForCausalLM.from_config(config)
    elif task == "mlm":
        model = AutoModelForMaskedLM.from_config(config)
    elif task == "classify":
        config.num_labels = 2
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        raise ValueError(f"unknown task {task!r}")
    return model.float().eval()


def tiny_inputs(model: PreTrainedModel, batch: int = 2, seq_len: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (avoiding the first few ids, often special) and a full mask."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.get_text_config().vocab_size
    input_ids = torch.randint(4, vocab, (batch, seq_len), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def model_output(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The main output tensor: logits for heads, the last hidden state otherwise."""
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
