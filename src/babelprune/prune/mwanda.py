"""M-Wanda (Choenni & Titov 2025): Wanda with language-aware statistics for multilingual models.

Wanda scores a weight by |W_ij| times its input's norm over all calibration
tokens. M-Wanda keeps the per-language statistics apart and adds three
switchable parts; its scoring lives here:

* `MWandaConfig`: the options of M-Wanda's scoring (`PruneConfig.mwanda`).
  `MWandaConfig(language_aware=False)` turns every scoring part off: the
  scores are then exactly Wanda's.
* statistics -> feature weight: `mwanda_feature_weight` turns the
  per-language input norms into f_j = mu_j + alpha * sigma_j.
* activation-probability protection: `activation_protection`, a factor on
  f_j for features active in every language or mainly in one.
* the two scores: `mwanda_scores`, |W_ij| * f_j (Wanda's) or
  RI_ij * f_j ** a (RIA's), chosen by `MWandaConfig.score`.

The method is registered as "mwanda" with the other built-in one-shot
methods in `babelprune.prune.methods`; CWL is `PruneConfig.allocation='cwl'`,
run by the engine's allocation pre-pass.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from babelprune.choices import Score
from babelprune.errors import BabelpruneError
from babelprune.prune.kernels import RIA_EXPONENT, ria_scores, wanda_scores

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
