"""Per-language setting: languages without a mask of their own are scored with the pooled mask, and say so."""

import pytest
import torch

from babelprune.api import evaluate, prune
from babelprune.data.files import FilesCorpus
from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.prune.calibration import build_calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import POOLED_MASK, named_linears
from babelprune.report.tables import markdown_table
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

TEXTS = {"en": "the cat sat on the mat", "fr": "le chat est sur le tapis", "de": "die katze sitzt auf der matte"}


@pytest.fixture()
def corpus(tmp_path):
    for lang, text in TEXTS.items():
        (tmp_path / f"{lang}.txt").write_text("\n\n".join(f"{text} {i}" for i in range(60)), encoding="utf-8")
    return FilesCorpus(tmp_path)


def loaded():
    return LoadedModel(tiny_model("llama"), char_tokenizer(), "tiny", None, "causal-lm")


def test_the_bank_holds_a_pooled_mask_equal_to_the_shared_setting(corpus):
    per_language, shared = loaded(), loaded()
    calibration = build_calibration(per_language.tokenizer, corpus, ["en", "fr"], samples_per_language=2, seq_len=16)
    prune(per_language, PruneConfig(method="wanda", setting="per-language"), calibration, progress=False)
    prune(shared, PruneConfig(method="wanda", setting="shared"), calibration, progress=False)
    assert list(per_language.mask_bank) == ["en", "fr", POOLED_MASK]
    shared_zeros = {name: weight_matrix(m) == 0 for name, m in named_linears(shared.model, adapter_for(shared.model)).items()}
    for name, mask in per_language.mask_bank[POOLED_MASK].items():
        assert torch.equal(mask, shared_zeros[name])
    assert not torch.equal(per_language.mask_bank["en"][name], per_language.mask_bank["fr"][name])


def test_every_score_names_the_mask_that_served_it(corpus):
    model = loaded()
    calibration = build_calibration(model.tokenizer, corpus, ["en", "fr"], samples_per_language=2, seq_len=16)
    prune(model, PruneConfig(method="wanda", setting="per-language"), calibration, progress=False)
    result = evaluate(model, corpus, ["en", "fr", "de"], "all", seq_len=64, max_tokens=64, progress=False)
    assert {s.language: s.mask for s in result.scores} == {"en": "en", "fr": "fr", "de": POOLED_MASK}
    # The uncalibrated language got exactly the pooled mask's score.
    from babelprune.formats.pruned import apply_language_mask

    plain = LoadedModel(model.model, model.tokenizer, "tiny", None, "causal-lm")
    with apply_language_mask(model.model, model.mask_bank, POOLED_MASK):
        pooled_de = evaluate(plain, corpus, ["de"], "all", seq_len=64, max_tokens=64, progress=False).scores[0]
    assert next(s for s in result.scores if s.language == "de").nll_nats == pooled_de.nll_nats
    table = markdown_table(result)
    assert "| mask |" in table and f"| {POOLED_MASK} |" in table


def test_dense_results_have_no_mask_column(corpus):
    result = evaluate(loaded(), corpus, ["en"], "all", seq_len=64, max_tokens=32, progress=False)
    assert result.scores[0].mask is None and "mask" not in markdown_table(result)


def test_a_bank_without_pooled_mask_refuses_uncalibrated_languages(corpus):
    model = loaded()
    calibration = build_calibration(model.tokenizer, corpus, ["en", "fr"], samples_per_language=2, seq_len=16)
    prune(model, PruneConfig(method="wanda", setting="per-language"), calibration, progress=False)
    del model.mask_bank[POOLED_MASK]  # as saved by babelprune before the pooled mask existed
    with pytest.raises(BabelpruneError, match="no mask for 'de' and no pooled mask") as info:
        evaluate(model, corpus, ["en", "de"], "all", seq_len=64, max_tokens=32, progress=False)
    assert "\n" not in str(info.value) and "en, fr" in str(info.value)
