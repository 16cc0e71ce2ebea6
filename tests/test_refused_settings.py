"""Settings the model or the text cannot honour are refused in one sentence before the work."""

from __future__ import annotations

import pytest

from babelprune.errors import BabelpruneError
from babelprune.models.base import LoadedModel
from tests.test_vocab_trim import corpus_file, trimmed  # noqa: F401 - corpus_file is a fixture
from tests.tiny_models import MAX_POSITIONS, tiny_model
from tests.tiny_subword import tiny_bpe
from tests.tiny_tokenizer import char_tokenizer


def test_an_evaluation_window_longer_than_the_models_positions_is_refused(tmp_path):
    from babelprune.api import evaluate
    from tests.sweep_fixtures import write_tiny_corpus

    loaded = LoadedModel(model=tiny_model("llama"), tokenizer=char_tokenizer(), spec="tiny-llama", path=None, kind="causal-lm")
    corpus = str(write_tiny_corpus(tmp_path / "c.jsonl"))
    with pytest.raises(BabelpruneError) as info:
        evaluate(loaded, corpus, ["en"], seq_len=MAX_POSITIONS + 1, max_tokens=32, progress=False)
    text = str(info.value)
    assert f"--seq-len {MAX_POSITIONS + 1}" in text and f"{MAX_POSITIONS} positions" in text and f"--seq-len {MAX_POSITIONS} or less" in text
    scored = evaluate(loaded, corpus, ["en"], seq_len=MAX_POSITIONS, max_tokens=32, progress=False)  # the limit itself is fine
    assert [score.language for score in scored.scores] == ["en"]


def test_a_min_count_that_keeps_no_token_of_the_text_is_refused_with_the_highest_count(corpus_file):  # noqa: F811
    with pytest.raises(BabelpruneError) as info:
        trimmed("llama", tiny_bpe, corpus_file, min_count=10**9)
    text = str(info.value)
    assert "--min-count 1000000000 keeps none of the tokens the text uses" in text
    most = int(text.split("appears ")[1].split(" times")[0].replace(",", ""))
    assert 1 <= most < 10**9 and f"give --min-count {most} or less" in text
    _, _, _, trim = trimmed("llama", tiny_bpe, corpus_file, min_count=most)  # the highest count keeps that token
    assert trim.seen_ids >= 1
