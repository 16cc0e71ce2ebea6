"""Layer-wise sparsity: how much of each transformer block to prune.

Allocations return one sparsity per block whose mean is the target s
exactly (up to float rounding):

* uniform: every block gets s.
* OWL (Yin et al. 2024, "outlier-weighed layer-wise sparsity"): blocks with
  more outlier Wanda scores are more important and get LOWER sparsity.
* CWL (cross-lingual layer-wise sparsity, part of M-Wanda, Choenni & Titov
  2025, and mwanda's default allocation) lives with the rest of M-Wanda in
  `babelprune.prune.mwanda`.

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
    values = torch.tensor([float(v) for v in importance], dtype=torch.float64, device="cpu")  # one number per block
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
