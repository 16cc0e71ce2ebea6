"""GGUF export of byte-level BPE tokenizers (SmolLM2's, GPT-2's splitting): the fields llama.cpp reads, and
both readers (transformers' GGUF loader, llama.cpp) tokenizing text as the source tokenizer does."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from babelprune.api import export_gguf
from babelprune.errors import BabelpruneError
from babelprune.formats import gguf as gguf_format
from babelprune.models.base import LoadedModel, model_kind
from tests.tiny_subword import TEXTS, tiny_model_for

SENTENCES = [text for texts in TEXTS.values() for text in texts]
PROBES = ["Hello world, it's a test.", "Au commencement, Dieu créa les cieux.", "太初有道。", "В начале  было\n\nслово 1234"]


def byte_level_tokenizer(prefix_space: bool = False) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained on the test sentences, spelled as SmolLM2's tokenizer.json spells text."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(SENTENCES + PROBES, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def test_a_byte_level_tokenizer_is_written_as_gpt2_with_its_merges_by_rank():
    tokenizer = byte_level_tokenizer()
    vocab = gguf_format.describe_tokenizer(tokenizer, len(tokenizer) + 2, "tiny", None)
    assert (vocab.model, vocab.pre, vocab.add_space_prefix) == ("gpt2", "gpt-2", False)
    assert vocab.scores == []  # llama.cpp merges byte-level pieces by rank: no scores are written
    pieces = tokenizer.get_vocab()
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]  # [[left, right], ...], rank order
    assert vocab.merges == [" ".join(pair) for pair in merges] and len(merges) > 10
    assert vocab.tokens[pieces["<|endoftext|>"]] == "<|endoftext|>"
    assert vocab.token_types[pieces["<|endoftext|>"]] == gguf_format.CONTROL
    assert vocab.tokens[pieces["Ġ"]] == "Ġ" and vocab.token_types[pieces["Ġ"]] == gguf_format.NORMAL
    assert vocab.token_types[-2:] == [gguf_format.UNUSED] * 2


def test_a_byte_level_tokenizer_with_another_splitting_rule_is_refused_in_one_sentence():
    with pytest.raises(BabelpruneError, match="splits text by its own rule, not GPT-2's"):
        gguf_format.describe_tokenizer(byte_level_tokenizer(prefix_space=True), 512, "tiny", None)


def _exported(tmp_path):
    tokenizer = byte_level_tokenizer()
    model = tiny_model_for("llama", tokenizer, 0)
    path = tmp_path / "byte.gguf"
    export_gguf(LoadedModel(model=model, tokenizer=tokenizer, spec="tiny", path=None, kind=model_kind(model.config)), path)
    return model, tokenizer, path


def test_transformers_reads_the_byte_level_file_back_with_the_same_tokens_and_logits(tmp_path):
    model, tokenizer, path = _exported(tmp_path)
    reread = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in PROBES:
        assert reread(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ids = torch.tensor([tokenizer(PROBES[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, model(ids).logits, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_tokenizes_text_as_the_source_tokenizer_does(tmp_path):
    import llama_cpp

    _, tokenizer, path = _exported(tmp_path)
    engine = llama_cpp.Llama(str(path), n_ctx=64, verbose=False, n_threads=1)
    for text in PROBES:
        ours = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert engine.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ours, text
