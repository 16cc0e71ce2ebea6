"""M-Wanda (Choenni & Titov 2025): Wanda with language-aware statistics for multilingual models.

Wanda scores a weight by |W_ij| times its input's norm over all calibration
tokens. M-Wanda keeps the per-language statistics apart and adds three
switchable parts; all of them live here:

* `MWandaConfig`: the options of M-Wanda's scoring (`PruneConfig.mwanda`).
  `MWandaConfig(language_aware=False)` turns every scoring part off: the
  scores are then exactly Wanda's.
* statistics -> feature weight: `mwanda_feature_weight` turns the
  per-language input norms into f_j = mu_j + alpha * sigma_j.
* activation-probability protection: `activation_protection`, a factor on
  f_j for features active in every language or mainly in one.
* the two scores: `mwanda_scores`, |W_ij| * f_j (Wanda's) or
  RI_ij * f_j ** a (RIA's), chosen by `MWandaConfig.score`.
* CWL, cross-lingual layer-wise sparsity: `block_cross_lingual_correlation`
  measures each block by the Spearman rank correlation of its per-language
  input norms (each distinct input once); `allocate_cwl` gives the least
  correlated, most language-specific blocks the lowest sparsity (it shares
  `allocation.spread_sparsity` with OWL).

The method is registered as "mwanda" with the other built-in one-shot
methods in `babelprune.prune.methods`; CWL is `PruneConfig.allocation='cwl'`,
run by the engine's allocation pre-pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from babelprune.choices import Score
from babelprune.errors import BabelpruneError
from babelprune.prune.allocation import DEFAULT_LAMBDA, spread_sparsity
from babelprune.prune.kernels import RIA_EXPONENT, ria_scores, wanda_scores
from babelprune.prune.stats import LanguageStats

# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


class MWandaConfig(BaseModel):
    """M-Wanda's switchable scoring parts (its third part, CWL, is `allocation='cwl'`, mwanda's default allocation).

    * language_aware / alpha: score inputs by mu_j + alpha * sigma_j, the mean
      and (population) standard deviation over languages of the per-language,
      per-token-normalised input norms n_j^l = ||X_j^l||_2 / sqrt(T_l).
      A feature strong in a single language has a large sigma, so alpha > 0
      protects it. Off: Wanda's pooled norm ||X_j||_2 over all tokens.
    * activation_prob / beta: multiply f_j by
      1 + beta * max(min_l p_j^l, max_l p_j^l - mean_l p_j^l), where p_j^l is the
      share of language l's tokens on which input j is active. The first term
      protects features active in every language, the second features active
      mainly in one language.
    * tau: activation threshold, used when collecting statistics (`LanguageStats`).
    * score: which score f_j enters (RIA's exponent is `PruneConfig.ria_exponent`).

    With language_aware and activation_prob off the scores are exactly Wanda's
    (or RIA's, with score "ria"). Defaults were chosen by the sweep recorded
    in docs/methods.md.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    language_aware: bool = True  # score by mu_j + alpha * sigma_j over languages
    alpha: float = Field(0.5, ge=0, allow_inf_nan=False)  # weight of the cross-language spread
    activation_prob: bool = False  # protect features active in all / mainly one language (hurt in the sweep)
    beta: float = Field(1.0, ge=0, allow_inf_nan=False)  # strength of that protection
    # |x| above tau counts as active (the FFN down-projection's input: x > 0)
    tau: float = Field(1e-2, ge=0, allow_inf_nan=False)
    score: Score = "wanda"  # wanda: |W_ij| * f_j; ria: RIA's relative importance * f_j ** ria_exponent


# --------------------------------------------------------------------------
# Statistics -> feature weight, and the scores
# --------------------------------------------------------------------------


def activation_protection(activation_probability: Tensor, beta: float) -> Tensor:
    """Per-input factor 1 + beta * max(shared, specific), shape (in,).

    activation_probability: (L, in), p_j^l in [0, 1].
    shared = min over languages; specific = max minus mean over languages.
    """
    p = activation_probability.double()
    shared = p.min(dim=0).values
    specific = p.max(dim=0).values - p.mean(dim=0)
    return 1.0 + beta * torch.maximum(shared, specific)


def _language_aware_weight(per_language_norm: Tensor, alpha: float, language_weights: Tensor | None) -> Tensor:
    """mu_j + alpha * sigma_j over languages of n_j^l (L, in), float64, shape (in,)."""
    norms = per_language_norm.double()  # (L, in)
    if language_weights is None:
        mu = norms.mean(dim=0)
        # Population std: defined (zero) for a single language, where unbiased std is NaN.
        sigma = norms.std(dim=0, unbiased=False)
    else:
        shares = language_weights.double().unsqueeze(1)  # (L, 1)
        mu = (shares * norms).sum(dim=0)
        sigma = (shares * (norms - mu).square()).sum(dim=0).sqrt()
    return mu + alpha * sigma


def mwanda_feature_weight(
    pooled_norm: Tensor,
    per_language_norm: Tensor | None,
    activation_probability: Tensor | None,
    options: MWandaConfig,
    language_weights: Tensor | None = None,
) -> Tensor:
    """The per-input factor f_j that M-Wanda multiplies |W_ij| by, shape (in,).

    pooled_norm: (in,) Wanda's ||X_j||_2 over all calibration tokens.
    per_language_norm: (L, in) n_j^l, needed when options.language_aware.
    activation_probability: (L, in) p_j^l, needed when options.activation_prob.
    language_weights: (L,) shares summing to 1; mu_j and sigma_j become the
    weighted mean and standard deviation over languages (None: equal shares).
    With both parts off this returns `pooled_norm` itself, so the scores and
    masks are exactly Wanda's.
    """
    if options.language_aware:
        if per_language_norm is None:
            raise BabelpruneError("Language-aware M-Wanda needs per-language input norms; collect them first.")
        weight = _language_aware_weight(per_language_norm, options.alpha, language_weights)
    else:
        weight = pooled_norm
    if options.activation_prob:
        if activation_probability is None:
            raise BabelpruneError("M-Wanda's activation-probability part needs activation statistics; collect them first.")
        weight = weight.double() * activation_protection(activation_probability, options.beta)
    return weight


def mwanda_scores(
    weight: Tensor,
    pooled_norm: Tensor,
    per_language_norm: Tensor | None,
    activation_probability: Tensor | None,
    options: MWandaConfig,
    language_weights: Tensor | None = None,
    exponent: float = RIA_EXPONENT,
) -> Tensor:
    """M-Wanda scores, shape (out, in): |W_ij| * f_j, or RI_ij * f_j ** exponent with score "ria".

    f_j is `mwanda_feature_weight`: M-Wanda's language-aware statistics take
    the place of the pooled input norm in either score. `exponent` is RIA's a
    (`PruneConfig.ria_exponent`), read only by the "ria" score.
    """
    feature_weight = mwanda_feature_weight(pooled_norm, per_language_norm, activation_probability, options, language_weights)
    if options.score == "ria":
        return ria_scores(weight, feature_weight, exponent)
    return wanda_scores(weight, feature_weight)


# --------------------------------------------------------------------------
# CWL: cross-lingual layer-wise sparsity
# --------------------------------------------------------------------------


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 0 .. n-1 of each row of `values` (rows, n), ties sharing their average rank.

    The tensor form of `report.compare.spearman`'s ranks: here every language's
    row of thousands of features is ranked at once.
    """
    ordered = values.sort(dim=-1).values.contiguous()
    first = torch.searchsorted(ordered, values.contiguous(), right=False)  # entries strictly below
    past = torch.searchsorted(ordered, values.contiguous(), right=True)  # entries below or equal
    return (first + past - 1).double() / 2


def cross_lingual_correlation(norms_per_lang: Tensor) -> float:
    """Mean pairwise Spearman rank correlation between languages' statistics vectors.

    norms_per_lang: (L, in), one vector per language (e.g. n_j^l). Needs L >= 2.
    Ranks make the measure scale-free: a few outlier features with norms
    hundreds of times the rest (common in LLM activations) would otherwise
    decide a Pearson correlation alone and push every block towards 1.
    A constant vector has no defined correlation; it counts as 0 with any other.
    """
    if norms_per_lang.ndim != 2 or norms_per_lang.shape[0] < 2:
        raise BabelpruneError("Cross-lingual correlation needs statistics for at least two languages.")
    ranks = average_ranks(norms_per_lang.detach().double())  # (L, in)
    centred = ranks - ranks.mean(dim=1, keepdim=True)
    length = centred.norm(dim=1, keepdim=True)
    unit = torch.where(length > 0, centred / length.clamp_min(1e-300), torch.zeros_like(centred))
    corr = unit @ unit.T  # (L, L) Pearson correlations of the ranks
    rows, cols = torch.triu_indices(ranks.shape[0], ranks.shape[0], offset=1, device=corr.device)
    return float(corr[rows, cols].mean())


def distinct_inputs(stats_per_linear: Sequence[LanguageStats]) -> list[LanguageStats]:
    """The statistics objects of a block's linears, each distinct input once, in order.

    q, k and v (and gate and up) read one tensor, and the collector gives them
    one shared statistics object: it must count once, not three (two) times.
    """
    seen: dict[int, LanguageStats] = {}
    for stats in stats_per_linear:
        seen.setdefault(id(stats), stats)
    return list(seen.values())


def block_cross_lingual_correlation(stats_per_linear: Sequence[LanguageStats]) -> float:
    """A block's cross-lingual correlation: the mean over its distinct inputs' (L, in_k) statistics.

    Averaged per input rather than concatenated: concatenating inputs of very
    different scale (e.g. attention input and MLP down-projection input)
    would let the scale gap between them dominate the correlation.
    """
    inputs = distinct_inputs(stats_per_linear)
    if len(inputs) == 0:
        raise BabelpruneError("CWL needs the statistics of at least one linear layer per block.")
    return sum(cross_lingual_correlation(stats.per_language_norm()) for stats in inputs) / len(inputs)


def allocate_cwl(correlations: Sequence[float], sparsity: float, lam: float = DEFAULT_LAMBDA) -> list[float]:
    """CWL sparsities: lower correlation (more language-specific) -> lower sparsity; mean exactly `sparsity`."""
    return spread_sparsity([-float(c) for c in correlations], sparsity, lam)
