"""A character-level tokenizer built in memory, for tests (one token per character)."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0, 1, 2, 3


def char_tokenizer(alphabet: str = "abcdefghijklmnopqrstuvwxyz \n.,éàü") -> PreTrainedTokenizerFast:
    """Token id of alphabet[i] is 4 + i; characters outside the alphabet map to <unk>."""
    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for char in alphabet:
        vocab.setdefault(char, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
