"""Where each supported architecture keeps its blocks, attention and FFN.

All architecture knowledge of babelprune lives in the one table below
(`ADAPTERS`), so pruning code asks an `ArchAdapter` for "the blocks", "the
query projection" or "the FFN down projection" instead of spelling out
`model.model.layers[i].self_attn.q_proj` or `model.transformer.h[i].attn.c_attn`.

Paths are dotted module paths. `blocks`, `embeddings` and `final_norm` start
at the *base model* (HF's `model.base_model`: the bare transformer inside any
task head), so one adapter serves `LlamaModel` and `LlamaForCausalLM`,
`BertModel` and `BertForSequenceClassification` alike. Attention and FFN
paths start at one block.

Every linear's weight is read as an (out, in) matrix through `weight_matrix`,
which hides GPT-2's `Conv1D` (stored transposed, as (in, out)).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.pytorch_utils import Conv1D

from babelprune.errors import BabelpruneError

ModelKind = Literal["causal-lm", "encoder"]  # how a model is evaluated (babelprune.models.base.model_kind)

FusedLayout = Literal["concat", "per_head"]


@dataclass(frozen=True)
class AttentionParts:
    """Paths, relative to one block, of the attention projections.

    Either q/k/v are separate linears, or `fused_qkv` is one linear whose
    output stacks them, laid out as `fused_layout` says:
      - "concat" (GPT-2 `c_attn`, Phi-3 `qkv_proj`): rows are [q (H*d) | k (KV*d) | v (KV*d)];
      - "per_head" (BLOOM `query_key_value`): rows are grouped by head,
        [h0: q d, k d, v d | h1: q d, k d, v d | ...].
    """

    o: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    fused_qkv: str | None = None
    fused_layout: FusedLayout | None = None

    @property
    def is_fused(self) -> bool:
        return self.fused_qkv is not None


@dataclass(frozen=True)
class FFNParts:
    """Paths, relative to one block, of the feed-forward linears.

    `gate` is set for gated FFNs (SwiGLU/GeGLU: down(act(gate(x)) * up(x))),
    None for plain ones (down(act(up(x)))). `gate_up` replaces both `gate` and
    `up` when one linear computes them together (Phi-3 `gate_up_proj`): its
    rows are [gate (ffn) | up (ffn)], so neuron j owns rows j and ffn + j.
    """

    down: str
    up: str | None = None
    gate: str | None = None
    gate_up: str | None = None

    @property
    def is_gated(self) -> bool:
        return self.gate is not None or self.gate_up is not None

    @property
    def is_fused(self) -> bool:
        return self.gate_up is not None


@dataclass(frozen=True)
class HeadNorm:
    """A q or k norm whose weight is one slice per head, in head order.

    OLMo 2 normalizes the whole q (k) projection output, so its weight spans
    heads * head_dim; Cohere's optional qk-norm keeps a (heads, head_dim)
    weight. Either way the weight, read as (heads, -1), has one row per head.
    `heads` says which heads: "query" heads or key/value ("kv") heads.
    A block without the module (Cohere with qk-norm off) has nothing to cut.
    Qwen3's q/k norms act on head_dim alone, shared by every head: not listed.
    """

    path: str  # relative to one block
    heads: Literal["query", "kv"]


@dataclass(frozen=True)
class StructureParts:
    """What structured pruning must update when heads, neurons or blocks are removed.

    Paths are relative to one block. `*_attrs` name attributes of the attention
    (or MLP) module that cache a width and must follow the new size:
    `head_count_attrs` hold the number of query heads, `head_width_attrs` hold
    heads * head_dim, `kv_groups_attr` holds query heads per key/value head.
    `heads_in_config`: the config can state a uniform head count (it has an
    explicit head_dim, so num_attention_heads does not also fix the head width).
    `head_removal_blocker`: why heads cannot be removed in this family, if so.
    `per_layer_lists`: config attributes holding one entry per block.
    `head_norms`: norms inside attention whose weight holds one slice per head
    (see `HeadNorm`); they are cut and reordered together with the heads.
    """

    attention_module: str
    mlp_module: str | None = None
    head_count_attrs: tuple[str, ...] = ()
    head_width_attrs: tuple[str, ...] = ()
    kv_groups_attr: str | None = None
    ffn_width_attrs: tuple[str, ...] = ()
    heads_in_config: bool = False
    head_removal_blocker: str | None = None
    per_layer_lists: tuple[str, ...] = ("layer_types",)
    head_norms: tuple[HeadNorm, ...] = ()


def fused_qkv_rows(layout: FusedLayout, n_heads: int, n_kv_heads: int, head_dim: int) -> dict[str, torch.Tensor]:
    """Row indices of q, k and v inside a fused qkv weight of shape (out, in).

    Returns {"q": (n_heads*head_dim,), "k": (n_kv*head_dim,), "v": (n_kv*head_dim,)}
    long tensors, each listing the rows in head order, so
    `weight_matrix(qkv)[rows["q"]]` is the query weight as a separate q_proj
    would hold it. The indices are on the CPU, whatever the weight's device (torch indexes any device with them).
    """
    if layout == "concat":
        q_size, kv_size = n_heads * head_dim, n_kv_heads * head_dim
        return {
            "q": torch.arange(0, q_size, device="cpu"),
            "k": torch.arange(q_size, q_size + kv_size, device="cpu"),
            "v": torch.arange(q_size + kv_size, q_size + 2 * kv_size, device="cpu"),
        }
    if layout == "per_head":
        if n_kv_heads != n_heads:
            raise ValueError("a per-head fused qkv needs as many key/value heads as query heads")
        # (n_heads, 3, head_dim) grid of row numbers: [h, 0] are head h's q rows, etc.
        grid = torch.arange(n_heads * 3 * head_dim, device="cpu").view(n_heads, 3, head_dim)
        return {name: grid[:, i, :].reshape(-1) for i, name in enumerate(("q", "k", "v"))}
    raise ValueError(f"unknown fused qkv layout {layout!r}")


@dataclass(frozen=True)
class ArchAdapter:
    """How one architecture family is laid out, and accessors that use it."""

    family: str
    model_types: tuple[str, ...]  # HF `config.model_type` values of this family
    blocks: str  # from the base model to the ModuleList of transformer blocks
    embeddings: str  # from the base model to the token embedding
    attention: AttentionParts
    ffn: FFNParts
    decoder: bool  # True: causal LM family; False: bidirectional encoder
    final_norm: str | None = None  # from the base model; None for post-norm encoders
    transposed_linears: bool = False  # GPT-2 Conv1D keeps weights as (in, out)
    block_returns_tuple: bool = False  # a block returns (hidden, ...) rather than the hidden states
    # Config attribute names, read from the text config (see `text_config`).
    # Attribute maps in HF configs already alias num_attention_heads, hidden_size
    # and num_hidden_layers for GPT-2 and BLOOM.
    n_kv_heads_attr: str | None = "num_key_value_heads"  # None: as many as query heads
    head_dim_attr: str | None = "head_dim"  # None or unset: hidden_size // heads
    intermediate_attr: str | None = "intermediate_size"  # None or unset: 4 * hidden
    structure: StructureParts | None = None  # None: no structured pruning for this family

    @property
    def kind(self) -> ModelKind:
        return "causal-lm" if self.decoder else "encoder"

    # ----- modules -------------------------------------------------------

    def base_model(self, model: nn.Module) -> nn.Module:
        """The bare transformer inside a task head (the model itself if bare)."""
        return getattr(model, "base_model", model)

    def _module_at(self, root: nn.Module, path: str) -> nn.Module:
        try:
            return root.get_submodule(path)
        except AttributeError:
            raise BabelpruneError(
                f"The {type(root).__name__} has no module '{path}', so it does not have the "
                f"{self.family} layout its config claims; load an unmodified {self.family} model."
            ) from None

    def get_blocks(self, model: nn.Module) -> nn.ModuleList:
        blocks = self._module_at(self.base_model(model), self.blocks)
        if not isinstance(blocks, nn.ModuleList):
            raise BabelpruneError(
                f"'{self.blocks}' in the {type(model).__name__} is a {type(blocks).__name__}, not a list of "
                f"blocks; load an unmodified {self.family} model."
            )
        return blocks

    def get_embeddings(self, model: nn.Module) -> nn.Embedding:
        """The token embedding, weight shaped (vocab, embedding width)."""
        return self._module_at(self.base_model(model), self.embeddings)

    def get_final_norm(self, model: nn.Module) -> nn.Module | None:
        """The norm after the last block (decoders), None when there is none."""
        if self.final_norm is None:
            return None
        return self._module_at(self.base_model(model), self.final_norm)

    def get_lm_head(self, model: nn.Module) -> nn.Module | None:
        """The vocabulary projection of an LM / masked-LM head; None for bare or other heads."""
        getter = getattr(model, "get_output_embeddings", None)
        return getter() if getter is not None else None

    def lm_head_is_tied(self, model: nn.Module) -> bool:
        """Whether the LM head shares its weight storage with the token embedding.

        Checked on the tensors rather than the config flag, since that is what
        matters when pruning writes into one of them.
        """
        head = self.get_lm_head(model)
        if head is None:
            return False
        embedding_weight = self.get_embeddings(model).weight
        return head.weight.data_ptr() == embedding_weight.data_ptr()

    def attention_linears(self, block: nn.Module) -> dict[str, nn.Module]:
        """{"q","k","v","o"} or {"qkv","o"}, in forward order."""
        parts = self.attention
        if parts.is_fused:
            paths = {"qkv": parts.fused_qkv, "o": parts.o}
        else:
            paths = {"q": parts.q, "k": parts.k, "v": parts.v, "o": parts.o}
        return {name: self._module_at(block, path) for name, path in paths.items()}

    def ffn_linears(self, block: nn.Module) -> dict[str, nn.Module]:
        """{"gate","up","down"} for gated FFNs, {"gate_up","down"} when fused, {"up","down"} otherwise."""
        parts = self.ffn
        if parts.is_fused:
            paths = {"gate_up": parts.gate_up}
        else:
            paths = ({"gate": parts.gate} if parts.gate is not None else {}) | {"up": parts.up}
        paths |= {"down": parts.down}
        return {name: self._module_at(block, path) for name, path in paths.items()}

    def block_linears(self, block: nn.Module) -> dict[str, nn.Module]:
        """Every prunable linear of a block, named, attention first then FFN."""
        return self.attention_linears(block) | self.ffn_linears(block)

    def linear_names(self) -> tuple[str, ...]:
        """The keys `block_linears` returns for this family, in the same order."""
        attention = ("qkv", "o") if self.attention.is_fused else ("q", "k", "v", "o")
        if self.ffn.is_fused:
            ffn = ("gate_up", "down")
        else:
            ffn = ("gate", "up", "down") if self.ffn.is_gated else ("up", "down")
        return attention + ffn

    # ----- sizes from the config ------------------------------------------

    @staticmethod
    def text_config(config: PretrainedConfig) -> PretrainedConfig:
        """The language-model part of a config (the config itself unless multimodal)."""
        return config.get_text_config()

    def num_layers(self, config: PretrainedConfig) -> int:
        return int(self.text_config(config).num_hidden_layers)

    def hidden_size(self, config: PretrainedConfig) -> int:
        return int(self.text_config(config).hidden_size)

    def num_heads(self, config: PretrainedConfig) -> int:
        return int(self.text_config(config).num_attention_heads)

    def num_kv_heads(self, config: PretrainedConfig) -> int:
        value = _optional_attr(self.text_config(config), self.n_kv_heads_attr)
        return int(value) if value is not None else self.num_heads(config)

    def head_dim(self, config: PretrainedConfig) -> int:
        value = _optional_attr(self.text_config(config), self.head_dim_attr)
        return int(value) if value is not None else self.hidden_size(config) // self.num_heads(config)

    def intermediate_size(self, config: PretrainedConfig) -> int:
        value = _optional_attr(self.text_config(config), self.intermediate_attr)
        return int(value) if value is not None else 4 * self.hidden_size(config)

    def qkv_rows(self, config: PretrainedConfig) -> dict[str, torch.Tensor] | None:
        """Rows of q, k, v in the fused qkv weight (see `fused_qkv_rows`); None if not fused."""
        if not self.attention.is_fused:
            return None
        return fused_qkv_rows(
            self.attention.fused_layout, self.num_heads(config), self.num_kv_heads(config), self.head_dim(config)
        )


def _optional_attr(config: PretrainedConfig, name: str | None) -> object | None:
    return getattr(config, name, None) if name is not None else None


# ----- the table -------------------------------------------------------------

_LLAMA_ATTENTION = AttentionParts(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj")
_LLAMA_FFN = FFNParts(gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj")
_BERT_ATTENTION = AttentionParts(
    q="attention.self.query", k="attention.self.key", v="attention.self.value", o="attention.output.dense"
)
_BERT_FFN = FFNParts(up="intermediate.dense", down="output.dense")
_LLAMA_STRUCTURE = StructureParts(
    attention_module="self_attn", mlp_module="mlp", kv_groups_attr="num_key_value_groups",
    ffn_width_attrs=("intermediate_size",), heads_in_config=True,
)
_BERT_STRUCTURE = StructureParts(
    attention_module="attention.self", head_count_attrs=("num_attention_heads",), head_width_attrs=("all_head_size",)
)


# q_norm / k_norm weights with one slice per head (OLMo 2 always, Cohere with use_qk_norm).
_QK_HEAD_NORMS = (HeadNorm("self_attn.q_norm", "query"), HeadNorm("self_attn.k_norm", "kv"))


def _llama_like(
    family: str, model_types: tuple[str, ...], prefix: str = "", structure: StructureParts = _LLAMA_STRUCTURE
) -> ArchAdapter:
    """Llama-layout decoders: `layers`, `embed_tokens`, `norm`, q/k/v/o and a gated MLP.

    Where the norms sit around the sublayers (Gemma's sandwich, OLMo 2's
    post-norms, Cohere's one norm feeding attention and FFN in parallel) does
    not matter here: pruning touches the linears, and the block runs as a whole.
    """
    return ArchAdapter(
        family=family,
        model_types=model_types,
        blocks=prefix + "layers",
        embeddings=prefix + "embed_tokens",
        final_norm=prefix + "norm",
        attention=_LLAMA_ATTENTION,
        ffn=_LLAMA_FFN,
        decoder=True,
        structure=structure,
    )


ADAPTERS: tuple[ArchAdapter, ...] = (
    _llama_like("llama", ("llama",)),
    _llama_like("qwen2", ("qwen2",)),
    _llama_like("mistral", ("mistral",)),
    _llama_like("gemma", ("gemma",)),
    _llama_like("gemma2", ("gemma2",)),
    _llama_like("gemma3", ("gemma3_text",)),
    # Gemma3ForConditionalGeneration: the text model sits next to a vision tower.
    _llama_like("gemma3-multimodal", ("gemma3",), prefix="language_model."),
    # Qwen3's q_norm / k_norm act on head_dim, shared by every head: nothing to cut with heads.
    _llama_like("qwen3", ("qwen3",)),
    _llama_like("cohere", ("cohere",), structure=replace(_LLAMA_STRUCTURE, head_norms=_QK_HEAD_NORMS)),
    _llama_like("olmo2", ("olmo2",), structure=replace(_LLAMA_STRUCTURE, head_norms=_QK_HEAD_NORMS)),
    ArchAdapter(
        family="phi3",
        model_types=("phi3",),
        blocks="layers",
        embeddings="embed_tokens",
        final_norm="norm",
        attention=AttentionParts(fused_qkv="self_attn.qkv_proj", fused_layout="concat", o="self_attn.o_proj"),
        ffn=FFNParts(gate_up="mlp.gate_up_proj", down="mlp.down_proj"),
        decoder=True,
        structure=StructureParts(
            attention_module="self_attn",
            mlp_module="mlp",
            head_removal_blocker=(
                "its attention splits the fused qkv output at the query head count of the config, "
                "which every block shares"
            ),
        ),
    ),
    ArchAdapter(
        family="gpt2",
        model_types=("gpt2",),
        blocks="h",
        embeddings="wte",
        final_norm="ln_f",
        attention=AttentionParts(fused_qkv="attn.c_attn", fused_layout="concat", o="attn.c_proj"),
        ffn=FFNParts(up="mlp.c_fc", down="mlp.c_proj"),
        decoder=True,
        transposed_linears=True,
        n_kv_heads_attr=None,
        head_dim_attr=None,
        intermediate_attr="n_inner",
        structure=StructureParts(attention_module="attn", head_count_attrs=("num_heads",), head_width_attrs=("split_size",)),
    ),
    ArchAdapter(
        family="bloom",
        model_types=("bloom",),
        blocks="h",
        embeddings="word_embeddings",
        final_norm="ln_f",
        attention=AttentionParts(
            fused_qkv="self_attention.query_key_value", fused_layout="per_head", o="self_attention.dense"
        ),
        ffn=FFNParts(up="mlp.dense_h_to_4h", down="mlp.dense_4h_to_h"),
        decoder=True,
        block_returns_tuple=True,
        n_kv_heads_attr=None,
        head_dim_attr=None,
        intermediate_attr=None,
        structure=StructureParts(
            attention_module="self_attention",
            head_removal_blocker="its ALiBi position biases are built for the model's full head count",
        ),
    ),
    ArchAdapter(
        family="opt",
        model_types=("opt",),
        blocks="decoder.layers",
        embeddings="decoder.embed_tokens",
        final_norm="decoder.final_layer_norm",
        attention=AttentionParts(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.out_proj"),
        ffn=FFNParts(up="fc1", down="fc2"),
        decoder=True,
        n_kv_heads_attr=None,
        head_dim_attr=None,
        intermediate_attr="ffn_dim",
        structure=StructureParts(attention_module="self_attn", head_count_attrs=("num_heads",)),
    ),
    ArchAdapter(
        family="bert",
        model_types=("bert",),
        blocks="encoder.layer",
        embeddings="embeddings.word_embeddings",
        attention=_BERT_ATTENTION,
        ffn=_BERT_FFN,
        decoder=False,
        n_kv_heads_attr=None,
        head_dim_attr=None,
        structure=_BERT_STRUCTURE,
    ),
    ArchAdapter(
        family="xlm-roberta",
        model_types=("xlm-roberta",),
        blocks="encoder.layer",
        embeddings="embeddings.word_embeddings",
        attention=_BERT_ATTENTION,
        ffn=_BERT_FFN,
        decoder=False,
        n_kv_heads_attr=None,
        head_dim_attr=None,
        structure=_BERT_STRUCTURE,
    ),
)

_BY_MODEL_TYPE: dict[str, ArchAdapter] = {mt: adapter for adapter in ADAPTERS for mt in adapter.model_types}


def supported_families() -> list[str]:
    """The family names babelprune can prune, in table order."""
    return [adapter.family for adapter in ADAPTERS]


def _model_type_of(model_or_config: object) -> str | None:
    """The HF model type of a model type string, a config, a model or a LoadedModel."""
    if isinstance(model_or_config, str):
        return model_or_config
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config.model_type
    config = getattr(model_or_config, "config", None)
    if config is not None:
        return config.model_type
    inner = getattr(model_or_config, "model", None)  # a LoadedModel
    return _model_type_of(inner) if inner is not None else None


def find_adapter(model_type: str | None) -> ArchAdapter | None:
    """The adapter of an HF model type, None when the table has none."""
    return _BY_MODEL_TYPE.get(model_type) if model_type else None


def adapter_for(model_or_config: object) -> ArchAdapter:
    """The adapter of a model, a config, a `LoadedModel` or a model type string."""
    model_type = _model_type_of(model_or_config)
    adapter = find_adapter(model_type)
    if adapter is None:
        raise BabelpruneError(
            f"Model type '{model_type}' is not supported; use a model of one of these families: "
            f"{', '.join(supported_families())}."
        )
    return adapter


# ----- linear weights as (out, in) --------------------------------------------


def named_linears(model: nn.Module, adapter: ArchAdapter) -> dict[str, nn.Module]:
    """Every block linear of the model by "<block>.<name>", the key pruning masks and records use."""
    return {
        f"{index}.{name}": linear
        for index, block in enumerate(adapter.get_blocks(model))
        for name, linear in adapter.block_linears(block).items()
    }


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight of a linear as an (out, in) matrix sharing the module's storage.

    nn.Linear already stores (out, in); GPT-2's Conv1D stores (in, out) and is
    returned transposed. The result is detached from autograd, so in-place
    edits (`weight_matrix(m)[:, j] = 0`) need no `torch.no_grad()` and land
    in the module's own weight.
    """
    if isinstance(module, Conv1D):
        return module.weight.detach().t()
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    raise TypeError(f"expected nn.Linear or Conv1D, got {type(module).__name__}")


def linear_in_features(module: nn.Module) -> int:
    """Input width of a linear (nn.Linear or Conv1D)."""
    return weight_matrix(module).shape[1]


def linear_out_features(module: nn.Module) -> int:
    """Output width of a linear (nn.Linear or Conv1D)."""
    return weight_matrix(module).shape[0]
