"""Bootstrap confidence intervals over evaluation windows.

A language's bits per byte is a ratio of sums over its windows,
sum(nll) / (ln 2 * sum(bytes)). Its uncertainty comes from which text was
scored, so the interval resamples whole windows with replacement. A
difference between two models scored on the same windows is resampled
*paired*: one draw of window indices serves both models, so the text's
difficulty cancels and only the models' difference remains.

Draws are seeded from the language code, so an interval is the same on
every run and machine.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
# Fewer resampled items than this give no interval: with two or three windows a
# bootstrap has only a handful of distinct resamples and understates the spread.
MIN_ITEMS = 5


def draws(n_items: int, language: str, samples: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """Resampled window indices (samples, n_items), seeded by the language code."""
    rng = np.random.default_rng(zlib.crc32(language.encode("utf-8")))
    return rng.integers(0, n_items, size=(samples, n_items))


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap replicates."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def ratio_replicates(numerators: Sequence[float], denominators: Sequence[float], index: np.ndarray) -> np.ndarray:
    """sum(numerators) / sum(denominators) of each resample (samples,), the items drawn by `index`."""
    top = np.asarray(numerators, dtype=np.float64)[index].sum(axis=1)
    bottom = np.asarray(denominators, dtype=np.float64)[index].sum(axis=1)
    return top / bottom


def bits_per_byte_replicates(window_nll: Sequence[float], window_bytes: Sequence[int], index: np.ndarray) -> np.ndarray:
    """Bits per byte of each resample: (samples,) from window NLLs (nats) and bytes, drawn by `index`."""
    return ratio_replicates(window_nll, window_bytes, index) / math.log(2)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], language: str,
                   scale: float = 1.0) -> tuple[float, float] | None:
    """95% interval of scale * sum(numerators) / sum(denominators) over resampled items; None with fewer than MIN_ITEMS."""
    if len(numerators) < MIN_ITEMS:
        return None
    replicates = scale * ratio_replicates(numerators, denominators, draws(len(numerators), language))
    return percentile_interval(replicates)


def bits_per_byte_interval(window_nll: Sequence[float], window_bytes: Sequence[int], language: str) -> tuple[float, float] | None:
    """95% interval of a language's bits per byte; None with fewer than MIN_ITEMS windows."""
    return ratio_interval(window_nll, window_bytes, language, scale=1 / math.log(2))


Parts = tuple[Sequence[float], Sequence[float]]  # per item: (numerator, denominator) of a ratio metric


def relative_change_replicates(dense: Parts, pruned: Parts, language: str) -> np.ndarray:
    """Replicates (samples,) of the relative change of a ratio metric from `dense` to `pruned`.

    Paired (one draw of items for both) when both were measured on the same
    items, i.e. equal denominators item by item; otherwise each side is drawn
    on its own.
    """
    index = draws(len(dense[0]), language)
    before = ratio_replicates(*dense, index)
    paired = len(dense[1]) == len(pruned[1]) and list(dense[1]) == list(pruned[1])
    after = ratio_replicates(*pruned, index if paired else draws(len(pruned[0]), f"{language}:other"))
    # A resample whose dense score is 0 (a retrieval language the dense model never gets right) has no finite
    # relative change: any gain is +inf, which leaves the interval open on that side; 0 to 0 is no change.
    with np.errstate(divide="ignore", invalid="ignore"):
        change = (after - before) / before
    return np.where((before == 0) & (after == before), 0.0, change)


def resolved(interval: tuple[float, float] | None) -> bool:
    """Whether an interval of a difference excludes 0 (so the difference is resolved)."""
    return interval is not None and (interval[0] > 0 or interval[1] < 0)
