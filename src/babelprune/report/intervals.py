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


def draws(n_items: int, language: str, samples: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """Resampled window indices (samples, n_items), seeded by the language code."""
    rng = np.random.default_rng(zlib.crc32(language.encode("utf-8")))
    return rng.integers(0, n_items, size=(samples, n_items))


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap replicates."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def bits_per_byte_replicates(window_nll: Sequence[float], window_bytes: Sequence[int], index: np.ndarray) -> np.ndarray:
    """Bits per byte of each resample: (samples,) from window NLLs (nats) and bytes, drawn by `index`."""
    nll = np.asarray(window_nll, dtype=np.float64)[index].sum(axis=1)
    size = np.asarray(window_bytes, dtype=np.float64)[index].sum(axis=1)
    return nll / math.log(2) / size


def bits_per_byte_interval(window_nll: Sequence[float], window_bytes: Sequence[int], language: str) -> tuple[float, float] | None:
    """95% interval of a language's bits per byte; None with fewer than 2 windows."""
    if len(window_nll) < 2:
        return None
    return percentile_interval(bits_per_byte_replicates(window_nll, window_bytes, draws(len(window_nll), language)))


def relative_change_replicates(dense: tuple[Sequence[float], Sequence[int]], pruned: tuple[Sequence[float], Sequence[int]],
                               language: str) -> np.ndarray:
    """Replicates (samples,) of (pruned bpb - dense bpb) / dense bpb, paired over the same windows."""
    index = draws(len(dense[0]), language)
    before = bits_per_byte_replicates(*dense, index)
    after = bits_per_byte_replicates(*pruned, index)
    return (after - before) / before


def resolved(interval: tuple[float, float] | None) -> bool:
    """Whether an interval of a difference excludes 0 (so the difference is resolved)."""
    return interval is not None and (interval[0] > 0 or interval[1] < 0)
