"""Re-exports of the bootstrap intervals, whose home is babelprune.records.intervals.

The records' own properties (a score's 95% interval) need them, so they sit
with the records at the bottom of the import graph; kept here so that code
importing them from the report package keeps working (docs/architecture.md).
"""

from babelprune.records.intervals import (  # noqa: F401
    BOOTSTRAP_SAMPLES,
    CONFIDENCE,
    MIN_ITEMS,
    Parts,
    bits_per_byte_interval,
    bits_per_byte_replicates,
    draws,
    percentile_interval,
    ratio_interval,
    ratio_replicates,
    relative_change_replicates,
    resolved,
)
