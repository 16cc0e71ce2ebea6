"""Evaluation of a per-language mask bank: language l is scored with mask l, and the weights come back."""

import torch

from babelprune.api import evaluate
from babelprune.data.files import FilesCorpus
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.prune.engine import named_linears
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer


def test_each_language_is_scored_with_its_own_mask(tmp_path):
    for lang, text in {"en": "the cat sat on the mat", "fr": "le chat est sur le tapis"}.items():
        (tmp_path / f"{lang}.txt").write_text("\n\n".join([text] * 40), encoding="utf-8")
    corpus = FilesCorpus(tmp_path)
    model = tiny_model("llama")
    linears = named_linears(model, adapter_for(model))
    dense = {name: weight_matrix(m).clone() for name, m in linears.items()}
    bank = {
        "en": {name: torch.ones_like(w, dtype=torch.bool) for name, w in dense.items()},  # every block weight zeroed
        "fr": {name: torch.zeros_like(w, dtype=torch.bool) for name, w in dense.items()},  # nothing zeroed
    }
    tok = char_tokenizer()
    banked = LoadedModel(model, tok, "tiny", None, "causal-lm", pruning={"method": "wanda"}, mask_bank=bank)
    with_bank = {s.language: s.nll_nats for s in evaluate(banked, corpus, ["en", "fr"], "all", seq_len=64, max_tokens=64, progress=False).scores}
    for name, module in linears.items():
        assert torch.equal(weight_matrix(module), dense[name])  # restored after each language

    plain = LoadedModel(model, tok, "tiny", None, "causal-lm")
    fr_dense = evaluate(plain, corpus, ["fr"], "all", seq_len=64, max_tokens=64, progress=False).scores[0].nll_nats
    for module in linears.values():
        weight_matrix(module).zero_()
    en_zeroed = evaluate(plain, corpus, ["en"], "all", seq_len=64, max_tokens=64, progress=False).scores[0].nll_nats
    assert with_bank["fr"] == fr_dense
    assert with_bank["en"] == en_zeroed
    assert en_zeroed != evaluate(LoadedModel(tiny_model("llama"), tok, "t", None, "causal-lm"), corpus, ["en"], "all", seq_len=64, max_tokens=64, progress=False).scores[0].nll_nats
