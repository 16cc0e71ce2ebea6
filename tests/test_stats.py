"""Streaming per-language input statistics."""

from __future__ import annotations

import math

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.stats import LanguageStats, gram, post_activation_stats


def _random_batches():
    gen = torch.Generator().manual_seed(0)
    return [
        ("en", torch.randn(2, 5, 6, generator=gen)),  # (batch, seq, in): 10 tokens
        ("fr", torch.randn(7, 6, generator=gen)),
        ("en", torch.randn(3, 6, generator=gen)),
    ]


def test_pooled_norm_and_hessian_match_concatenated_tokens():
    stats = LanguageStats(6, ["en", "fr"], track_hessian=True)
    tokens = []
    for lang, x in _random_batches():
        stats.update(x, lang)
        tokens.append(x.reshape(-1, 6))
    all_tokens = torch.cat(tokens).double()
    assert torch.allclose(stats.pooled_norm(), torch.linalg.norm(all_tokens, dim=0), atol=1e-5)
    assert torch.allclose(stats.hessian(), all_tokens.T @ all_tokens, atol=1e-4)
    assert stats.token_counts == {"en": 13, "fr": 7}


def test_per_language_norm_hand_case():
    stats = LanguageStats(2, ["en", "fr"])
    # en: two tokens, column sums of squares [9 + 16, 0] = [25, 0] over T = 2 -> [5 / sqrt(2), 0].
    stats.update(torch.tensor([[3.0, 0.0]]), "en")
    stats.update(torch.tensor([[4.0, 0.0]]), "en")
    # fr: one token -> [0, 2].
    stats.update(torch.tensor([[0.0, 2.0]]), "fr")
    expected = torch.tensor([[5 / math.sqrt(2), 0.0], [0.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(stats.per_language_norm(), expected)
    # Pooled norm: sqrt([25, 4]) = [5, 2].
    assert torch.allclose(stats.pooled_norm(), torch.tensor([5.0, 2.0], dtype=torch.float64))


def test_activation_probability_rules():
    x = torch.tensor([[1.0, 0.1], [0.2, -3.0]])
    # |x| > 0.5: [[yes, no], [no, yes]] -> [0.5, 0.5].
    by_magnitude = LanguageStats(2, ["en"], tau=0.5)
    by_magnitude.update(x, "en")
    assert torch.equal(by_magnitude.activation_probability(), torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    # x > 0: [[yes, yes], [yes, no]] -> [1.0, 0.5].
    positive = LanguageStats(2, ["en"], tau=0.0, active_rule="positive")
    positive.update(x, "en")
    assert torch.equal(positive.activation_probability(), torch.tensor([[1.0, 0.5]], dtype=torch.float64))


def test_post_activation_stats_count_open_gates():
    x = torch.tensor([[1.0, -0.5], [0.001, 0.0]])
    # x > 0: [[yes, no], [yes, no]] -> [1, 0]; the default |x| > 0.01 would give [0.5, 0.5].
    after_activation = post_activation_stats(2, ["en"])
    after_activation.update(x, "en")
    assert torch.equal(after_activation.activation_probability(), torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    default = LanguageStats(2, ["en"])
    default.update(x, "en")
    assert torch.equal(default.activation_probability(), torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def test_errors():
    stats = LanguageStats(3, ["en", "fr"])
    with pytest.raises(BabelpruneError):
        stats.update(torch.ones(2, 3), "de")
    with pytest.raises(BabelpruneError):
        stats.update(torch.ones(2, 4), "en")
    with pytest.raises(BabelpruneError):
        stats.hessian()
    with pytest.raises(BabelpruneError):
        stats.pooled_norm()  # nothing seen yet
    stats.update(torch.ones(2, 3), "en")
    with pytest.raises(BabelpruneError):
        stats.per_language_norm()  # fr has no tokens
    with pytest.raises(BabelpruneError):
        LanguageStats(3, ["en", "en"])


def test_pooled_hessian_is_x_transpose_x_over_all_tokens():
    stats = LanguageStats(2, ["en", "sw"])
    stats.add_hessian(torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    stats.add_hessian(torch.tensor([[0.0, 1.0]]))
    # [[1+9+0, 2+0+0], [2, 4+0+1]]
    assert torch.equal(stats.hessian(), torch.tensor([[10.0, 2.0], [2.0, 5.0]], dtype=torch.float64))


def test_updates_after_add_hessian_leave_the_hessian_alone():
    # The engine feeds the Hessian whole batches through add_hessian; update() must not count them again.
    stats = LanguageStats(2, ["en"])
    stats.add_hessian(torch.tensor([[1.0, 2.0]]))  # [[1, 2], [2, 4]]
    stats.update(torch.tensor([[3.0, 0.0]]), "en")
    assert torch.equal(stats.hessian(), torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64))


def test_gram_by_hand_and_at_widths_the_bands_do_not_divide():
    tokens = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 1.0]])  # X^T X = [[10, -1, 3], [-1, 5, -1], [3, -1, 1]]
    expected = torch.tensor([[10.0, -1.0, 3.0], [-1.0, 5.0, -1.0], [3.0, -1.0, 1.0]])
    for pieces in (1, 2, 3, 4, 5):
        assert torch.equal(gram(tokens, pieces), expected)
    wide = torch.randn(50, 13, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(gram(wide), wide.T @ wide, atol=1e-4)


def test_a_derived_value_is_made_once_and_dropped_when_a_batch_arrives():
    stats = LanguageStats(2, ["en"], track_hessian=True)
    stats.update(torch.tensor([[1.0, 0.0]]), "en")
    calls = []
    first = stats.derived("h", lambda: calls.append(1) or stats.hessian())
    assert torch.equal(stats.derived("h", lambda: calls.append(1) or None), first) and len(calls) == 1
    stats.update(torch.tensor([[0.0, 2.0]]), "en")
    assert torch.equal(stats.derived("h", lambda: calls.append(1) or stats.hessian()), torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))
    assert len(calls) == 2
