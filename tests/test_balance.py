"""How calibration languages count: weights, per-token scales, weighted statistics and Hessians."""

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.balance import language_shares, parse_language_weights, token_scale
from babelprune.prune.calibration import Calibration
from babelprune.prune.mwanda import MWandaConfig, mwanda_feature_weight
from babelprune.prune.sequential import StatsCollector
from babelprune.prune.stats import LanguageStats


def calibration(rows: dict[str, int], seq_len: int = 4) -> Calibration:
    labels = tuple(lang for lang, count in rows.items() for _ in range(count))
    return Calibration(torch.zeros(len(labels), seq_len, dtype=torch.long), labels, "test")


def test_weights_are_read_from_the_command_line_spelling():
    assert parse_language_weights("sw=2, en=1") == {"sw": 2.0, "en": 1.0}
    assert parse_language_weights(None) == {}


@pytest.mark.parametrize(
    "text, message",
    [("sw", "sw=2,en=1"), ("sw=two", "sw=2,en=1"), ("sw=0", "positive"), ("sw=-1", "positive"), ("sw=1,sw=2", "once")],
)
def test_unreadable_or_non_positive_weights_are_refused(text, message):
    with pytest.raises(BabelpruneError, match=message):
        parse_language_weights(text)


def test_a_balanced_calibration_with_equal_weights_needs_no_scale():
    assert token_scale(calibration({"en": 2, "fr": 2}), "languages", {}) is None


def test_unequal_token_counts_get_equal_shares():
    # en: 3 rows x 4 = 12 tokens, fr: 4 tokens; 16 in all, shares 1/2 each: s_en = 0.5*16/12, s_fr = 0.5*16/4.
    scale = token_scale(calibration({"en": 3, "fr": 1}), "languages", {})
    assert torch.allclose(scale, torch.tensor([2 / 3, 2.0], dtype=torch.float64))
    assert language_shares(calibration({"en": 3, "fr": 1}), "tokens", {}) == {"en": 0.75, "fr": 0.25}


def test_a_weight_raises_its_languages_share():
    # Shares 1/4 and 3/4 of 16 tokens, 8 tokens each: s_en = 4/8, s_fr = 12/8.
    scale = token_scale(calibration({"en": 2, "fr": 2}), "languages", {"fr": 3.0})
    assert torch.allclose(scale, torch.tensor([0.5, 1.5], dtype=torch.float64))


def test_weights_for_a_language_the_calibration_lacks_are_refused():
    with pytest.raises(BabelpruneError, match="does not have"):
        token_scale(calibration({"en": 2, "fr": 2}), "languages", {"sw": 2.0})


def test_weights_with_pooled_statistics_are_refused():
    with pytest.raises(BabelpruneError, match="--balance languages"):
        token_scale(calibration({"en": 2, "fr": 2}), "tokens", {"fr": 2.0})


def test_the_scaled_pooled_norm_weights_each_languages_squares():
    stats = LanguageStats(2, ["en", "fr"], token_scale=torch.tensor([0.5, 2.0]))
    stats.update(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), "en")  # squares 10, 4
    stats.update(torch.tensor([[1.0, 1.0]]), "fr")  # squares 1, 1
    # sqrt(0.5 * 10 + 2 * 1), sqrt(0.5 * 4 + 2 * 1)
    assert torch.allclose(stats.pooled_norm(), torch.tensor([7.0, 4.0], dtype=torch.float64).sqrt())
    # token mass 0.5 * 2 = 1 and 2 * 1 = 2: shares 1/3 and 2/3
    assert torch.allclose(stats.language_weights(), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))


def test_the_collector_sums_scaled_per_language_hessians():
    x = torch.tensor([[[1.0, 0.0]], [[1.0, 2.0]]])  # (N=2 windows, T=1, in=2): row 0 en, row 1 fr
    collector = StatsCollector(["en", "fr"], True, 0.01, track_activity=False, token_scale=torch.tensor([2.0, 0.5]))
    collector.begin({"en": torch.tensor([0]), "fr": torch.tensor([1])})
    hessian = collector("q", x).hessian()
    # 2 * [1,0]^T[1,0] + 0.5 * [1,2]^T[1,2] = [[2, 0], [0, 0]] + [[0.5, 1], [1, 2]]
    assert torch.allclose(hessian, torch.tensor([[2.5, 1.0], [1.0, 2.0]], dtype=torch.float64))


def test_weighted_mwanda_statistics_use_the_weighted_mean_and_spread():
    norms = torch.tensor([[1.0, 4.0], [3.0, 4.0]])  # (L=2, in=2)
    options = MWandaConfig(language_aware=True, alpha=1.0)
    # shares 3/4, 1/4: mu = [1.5, 4], sigma = sqrt(3/4 * 0.25 + 1/4 * 2.25) = sqrt(0.75), 0
    weighted = mwanda_feature_weight(torch.zeros(2), norms, None, options, torch.tensor([0.75, 0.25]))
    assert torch.allclose(weighted, torch.tensor([1.5 + 0.75**0.5, 4.0], dtype=torch.float64))
    equal = mwanda_feature_weight(torch.zeros(2), norms, None, options, torch.tensor([0.5, 0.5]))
    assert torch.allclose(equal, mwanda_feature_weight(torch.zeros(2), norms, None, options))
