"""Per-language evaluation of the real built-in models on the real Bible."""

import pytest

from babelprune.api import evaluate, get_corpus, load_model
from babelprune.report.records import EvalResult

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def bible():
    return get_corpus("bible")


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m")


def test_gemma_bits_per_byte_per_language(gemma, bible, tmp_path):
    result = evaluate(gemma, bible, ["en", "fr", "sw"], max_tokens=256, batch_size=4, progress=False)
    by_lang = {score.language: score for score in result.scores}
    assert set(by_lang) == {"en", "fr", "sw"}
    for score in by_lang.values():
        assert score.n_tokens >= 256 and score.n_bytes > score.n_tokens  # several bytes per token
    # A 270M model knows English best and Swahili (a low-resource language) least.
    assert by_lang["en"].bits_per_byte < by_lang["fr"].bits_per_byte < by_lang["sw"].bits_per_byte
    assert by_lang["en"].perplexity < 10
    assert by_lang["sw"].resource == "low" and by_lang["en"].resource == "high"
    result.save(tmp_path / "dense.json")
    assert EvalResult.load(tmp_path / "dense.json") == result


def test_e5_retrieval_per_language(bible):
    e5 = load_model("e5-small")
    assert e5.kind == "encoder"
    result = evaluate(e5, bible, ["fr", "sw"], max_tokens=40, batch_size=16, progress=False)
    scores = {score.language: score for score in result.scores}
    assert scores["fr"].n_queries == 40
    assert scores["fr"].top1 >= 0.8 and scores["sw"].top1 >= 0.6
