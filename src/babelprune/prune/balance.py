"""How much each calibration language counts in the statistics and Hessians of one-shot pruning.

Two rules (`PruneConfig.balance`):

* "languages" (default): language l counts by its weight w_l (1 unless
  `language_weights` says otherwise), whatever its token count T_l. Each of
  its tokens is scaled by s_l = w_l / T_l, rescaled so that the scaled token
  mass sum_l s_l T_l equals the real token count (the statistics keep their
  usual size). The Hessian is then sum_l s_l X_l X_l^T: a weighted sum of
  per-language Hessians normalised per token.
* "tokens": every token counts once (pooled), so a language with more
  calibration tokens counts more. Kept for comparison.

With babelprune's balanced calibration (the same windows for every language)
and equal weights the two rules coincide; the scale is then left out
entirely (`token_scale` returns None), so results match the pooled
statistics bit for bit.
"""

from __future__ import annotations

import math

import torch

from babelprune.errors import BabelpruneError
from babelprune.prune.calibration import Calibration


def parse_language_weights(text: str | None) -> dict[str, float]:
    """'sw=2,en=1' -> {'sw': 2.0, 'en': 1.0}; None or '' -> {}."""
    weights: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        lang, sep, value = item.partition("=")
        lang = lang.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not lang or not math.isfinite(weight):
            raise BabelpruneError(f"Cannot read the language weight '{item.strip()}'; write them as sw=2,en=1.")
        if lang in weights:
            raise BabelpruneError(f"Language '{lang}' has two weights in --language-weights; give each language once.")
        weights[lang] = weight
    check_language_weights(weights)
    return weights


def check_language_weights(weights: dict[str, float]) -> dict[str, float]:
    """Every weight must be a positive finite number."""
    for lang, weight in weights.items():
        if not (math.isfinite(weight) and weight > 0):
            raise BabelpruneError(f"The weight of '{lang}' is {weight}; language weights must be positive, e.g. {lang}=2.")
    return weights


def check_weighted_languages(weights: dict[str, float], calibration: Calibration) -> None:
    """Weights may name only languages the calibration has."""
    unknown = [lang for lang in weights if lang not in calibration.language_set]
    if unknown:
        raise BabelpruneError(
            f"--language-weights names {', '.join(unknown)}, which the calibration does not have "
            f"(it has {', '.join(calibration.language_set)}); add it to --calib-langs or drop its weight."
        )


def language_shares(calibration: Calibration, balance: str, weights: dict[str, float]) -> dict[str, float]:
    """Each calibration language's share of the statistics (sums to 1), as the record shows it."""
    tokens = _token_counts(calibration)
    if balance == "tokens":
        total = sum(tokens.values())
        return {lang: count / total for lang, count in tokens.items()}
    raw = {lang: weights.get(lang, 1.0) for lang in tokens}
    total = sum(raw.values())
    return {lang: weight / total for lang, weight in raw.items()}


def token_scale(calibration: Calibration, balance: str, weights: dict[str, float]) -> torch.Tensor | None:
    """(L,) per-token factors s_l in the order of `calibration.language_set`, or None when every token counts once."""
    if balance == "tokens":
        if weights:
            raise BabelpruneError("--language-weights needs --balance languages: pooled statistics count every token once.")
        return None
    check_weighted_languages(weights, calibration)
    tokens = _token_counts(calibration)
    total_tokens = sum(tokens.values())
    shares = language_shares(calibration, balance, weights)
    # On the CPU: a handful of factors; each LanguageStats takes its copy to the device of its layer.
    scale = torch.tensor([shares[lang] * total_tokens / tokens[lang] for lang in calibration.language_set], dtype=torch.float64, device="cpu")
    if torch.allclose(scale, torch.ones_like(scale), rtol=0, atol=1e-12):
        return None  # balanced calibration, equal weights: the pooled statistics already are balanced
    return scale


def _token_counts(calibration: Calibration) -> dict[str, int]:
    seq_len = int(calibration.ids.shape[1])
    return {lang: len(rows) * seq_len for lang, rows in calibration.rows().items()}
