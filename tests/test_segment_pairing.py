"""Changes between models whose tokenizers cut the text into different windows are paired by segment."""

from __future__ import annotations

import numpy as np
import pytest

import babelprune
from babelprune.data.files import FilesCorpus
from babelprune.records.eval import LMScore, paired_parts
from babelprune.records.intervals import draws, percentile_interval, ratio_replicates
from babelprune.report.compare import compare
from tests.tiny_subword import tiny_bpe
from tests.test_vocab_trim import corpus_file, loaded_tiny  # noqa: F401 (fixture)


def lm_score(window_nll, window_bytes, segment_nll=(), segment_bytes=()) -> LMScore:
    return LMScore(language="sw", name="Swahili", script="Latn", resource="low", n_windows=len(window_nll),
                   n_tokens=10 * len(window_nll), n_bytes=sum(window_bytes), nll_nats=sum(window_nll),
                   window_nll=list(window_nll), window_bytes=list(window_bytes),
                   segment_nll=list(segment_nll), segment_bytes=list(segment_bytes))


def test_same_windows_pair_on_windows():
    before = lm_score([1, 2, 3, 4, 5], [10, 10, 10, 10, 10], [1, 2, 3, 4, 5, 6], [5] * 6)
    after = lm_score([2, 2, 3, 4, 5], [10, 10, 10, 10, 10], [2, 1, 3, 4, 5, 6], [5] * 6)
    assert paired_parts(before, after) == (([1, 2, 3, 4, 5], [10.0] * 5), ([2, 2, 3, 4, 5], [10.0] * 5))


def test_other_windows_over_the_same_segments_pair_on_segments():
    before = lm_score([1, 2, 3, 4, 5], [10, 10, 10, 10, 10], [1, 2, 3, 4, 5, 6], [8, 8, 8, 8, 9, 9])
    after = lm_score([2, 2, 3, 4, 5, 6], [8, 8, 8, 8, 9, 9], [2, 1, 3, 4, 5, 7], [8, 8, 8, 8, 9, 9])
    assert paired_parts(before, after) == (([1, 2, 3, 4, 5, 6], [8.0, 8.0, 8.0, 8.0, 9.0, 9.0]),
                                           ([2, 1, 3, 4, 5, 7], [8.0, 8.0, 8.0, 8.0, 9.0, 9.0]))


def test_other_segments_fall_back_to_each_ones_windows():
    before = lm_score([1, 2, 3, 4, 5], [10] * 5, [1, 2, 3, 4, 5, 6], [5] * 6)
    after = lm_score([2, 2, 3, 4, 5, 6], [8] * 6, [2, 1, 3, 4, 5], [6] * 5)
    assert paired_parts(before, after) == (([1, 2, 3, 4, 5], [10.0] * 5), ([2, 2, 3, 4, 5, 6], [8.0] * 6))


def test_a_trimmed_vocabulary_is_compared_segment_by_segment(corpus_file):  # noqa: F811
    corpus = FilesCorpus(corpus_file)
    dense = loaded_tiny("gemma3", tiny_bpe())
    trimmed = loaded_tiny("gemma3", tiny_bpe())
    babelprune.trim_vocabulary(trimmed, corpus, ["en"], split="all")
    # Russian text: the English trim drops its pieces, so it takes more tokens and other windows.
    options = dict(languages=["ru"], split="all", seq_len=24, max_tokens=10**6, progress=False)
    before = babelprune.evaluate(dense, corpus, **options).scores[0]
    after = babelprune.evaluate(trimmed, corpus, **options).scores[0]
    assert after.n_tokens > before.n_tokens and before.window_bytes != after.window_bytes
    # Segments hold every token's NLL, and the same text bytes on both sides (the separators left out).
    for score in (before, after):
        assert sum(score.segment_nll) == pytest.approx(score.nll_nats, rel=1e-9)
    assert before.segment_bytes == after.segment_bytes == [len(t.encode()) for t in corpus.texts("ru", "all")]
    change = compare(babelprune.evaluate(dense, corpus, **options), babelprune.evaluate(trimmed, corpus, **options)).changes[0]
    # Paired over segments: one draw of segments serves both models.
    index = draws(len(before.segment_nll), "ru")
    expected = ratio_replicates(after.segment_nll, after.segment_bytes, index) / ratio_replicates(before.segment_nll, before.segment_bytes, index) - 1
    assert change.interval == pytest.approx(percentile_interval(expected))
    assert change.interval[0] <= change.relative <= change.interval[1]
    assert np.isclose(change.relative, after.nll_nats / before.nll_nats - 1)
