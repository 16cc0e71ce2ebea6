"""Layer-wise sparsity: how much of each transformer block to prune.

Three allocations, all returning one sparsity per block whose mean is the
target s exactly (up to float rounding):

* uniform: every block gets s.
* OWL (Yin et al. 2024, "outlier-weighed layer-wise sparsity"): blocks with
  more outlier Wanda scores are more important and get LOWER sparsity.
* CWL (cross-lingual layer-wise sparsity, from M-Wanda, Choenni & Titov 2025;
  mwanda's default allocation, babelprune.prune.config):
  blocks where the languages' input statistics correlate least (Spearman
  rank correlation of per-language input norms, each distinct input once)
  are the most language-specific and get LOWER sparsity.

OWL and CWL share `spread_sparsity`: an importance per block is mapped
linearly (affinely) onto sparsities centred on s, the largest deviation
being lam, and every value kept inside [0, MAX_SPARSITY].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from babelprune.errors import BabelpruneError
from babelprune.prune.kernels import check_sparsity
from babelprune.prune.stats import LanguageStats

# Upper bound on any block's sparsity: a block must keep some weights.
MAX_SPARSITY = 0.99
DEFAULT_OWL_M = 5.0
DEFAULT_LAMBDA = 0.08


def allocate_uniform(n_blocks: int, sparsity: float) -> list[float]:
    """The same sparsity for every block."""
    if n_blocks < 1:
        raise BabelpruneError("Layer-wise allocation needs at least one block.")
    return [check_sparsity(sparsity)] * n_blocks


def spread_sparsity(importance: Sequence[float], sparsity: float, lam: float = DEFAULT_LAMBDA) -> list[float]:
    """Per-block sparsities: higher importance -> lower sparsity, mean exactly `sparsity`.

    Importances are min-max normalised to u in [0, 1]; the raw value 1 - u is
    centred (mean 0) and scaled so that the largest deviation from s is lam.
    Thus every value lies in [s - lam, s + lam] and the mean is s. If that
    range would leave [0, MAX_SPARSITY], the scale is reduced (rather than
    clipping, which would break the mean) so the extreme block touches the
    bound (a target above MAX_SPARSITY gets no spread). Equal importances
    give s for every block.
    """
    s = check_sparsity(sparsity)
    if not math.isfinite(lam) or lam < 0:
        raise BabelpruneError(f"The sparsity spread lambda={lam} must be a non-negative number, e.g. 0.08.")
    values = torch.tensor([float(v) for v in importance], dtype=torch.float64)
    if values.numel() == 0:
        raise BabelpruneError("Layer-wise allocation needs at least one block.")
    if not torch.isfinite(values).all():
        raise BabelpruneError("A block's importance is NaN or infinite; check the calibration statistics.")
    span = values.max() - values.min()
    if span <= 0:
        return [s] * values.numel()
    raw = 1.0 - (values - values.min()) / span  # in [0, 1], 1 = least important
    deviation = raw - raw.mean()  # mean 0, not all zero since span > 0
    scale = lam / deviation.abs().max()
    below, above = -deviation.min(), deviation.max()  # both > 0
    scale = min(float(scale), s / float(below), max(MAX_SPARSITY - s, 0.0) / float(above))
    # The clamp only removes float noise (~1e-17) at a bound; the mean stays s.
    sparsities = (s + scale * deviation).clamp(0.0, max(MAX_SPARSITY, s))
    return [float(v) for v in sparsities]


def owl_outlier_ratio(scores: Sequence[Tensor], m: float = DEFAULT_OWL_M) -> float:
    """OWL's D_b: share of a block's Wanda scores above m times the block's mean score.

    scores: the Wanda score matrices of every linear layer in the block; they
    are pooled (as in OWL) so the mean is over all weights of the block.
    """
    if len(scores) == 0:
        raise BabelpruneError("OWL needs the Wanda scores of at least one linear layer per block.")
    flat = torch.cat([s.detach().reshape(-1).double() for s in scores])
    threshold = m * flat.mean()
    return float((flat > threshold).double().mean())


def allocate_owl(outlier_ratios: Sequence[float], sparsity: float, lam: float = DEFAULT_LAMBDA) -> list[float]:
    """OWL sparsities: more outliers (higher D_b) -> lower sparsity; mean exactly `sparsity`."""
    return spread_sparsity(outlier_ratios, sparsity, lam)


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
    rows, cols = torch.triu_indices(ranks.shape[0], ranks.shape[0], offset=1)
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
