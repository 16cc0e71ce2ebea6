"""Charts for reports (PNG, via matplotlib's non-interactive backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from babelprune.data.languages import RESOURCE_LEVELS  # noqa: E402
from babelprune.report.records import EvalResult  # noqa: E402
from babelprune.report.tables import grouped_scores  # noqa: E402

RESOURCE_COLOURS = {"high": "#1b6ca8", "medium": "#f2a541", "low": "#c8553d"}
_METRIC_LABELS = {"bits_per_byte": "bits per byte (lower is better)", "top1": "top-1 retrieval accuracy (higher is better)"}


def language_bar_chart(result: EvalResult, path: Path) -> Path:
    """One bar per language, grouped by resource level and sorted within each group."""
    metric, _ = result.primary_metric
    ordered = [score for _, members in grouped_scores(result) for score in members]
    values = [score.metrics()[metric][0] for score in ordered]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.42 * len(ordered) + 1.5), 4.2))
    axes.bar(
        range(len(ordered)),
        values,
        color=[RESOURCE_COLOURS[score.resource] for score in ordered],
    )
    axes.set_xticks(range(len(ordered)), [score.language for score in ordered], rotation=60, fontsize=8)
    axes.set_ylabel(_METRIC_LABELS.get(metric, metric))
    axes.set_title(f"{result.model.spec} on {result.corpus}: {metric.replace('_', ' ')} per language")
    handles = [plt.Rectangle((0, 0), 1, 1, color=RESOURCE_COLOURS[level]) for level in RESOURCE_LEVELS]
    axes.legend(handles, [f"{level} resource" for level in RESOURCE_LEVELS], fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
