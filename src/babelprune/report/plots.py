"""Charts for reports (PNG, via matplotlib's non-interactive backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from babelprune.data.languages import RESOURCE_LEVELS  # noqa: E402
from babelprune.records.eval import EvalResult  # noqa: E402
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
    save_chart(figure, path)
    return path


# Written into every chart's metadata, so that `compare --chart x --overwrite` recognises a chart it drew.
CHART_MARK = "babelprune compare"
CHART_FORMATS = (".png", ".svg", ".pdf")


def save_chart(figure, path: Path) -> None:
    """Save `figure` at `path` (its suffix picks the format) atomically, saying in its metadata who drew it."""
    from babelprune.cache import atomic_file

    form = path.suffix.lower().lstrip(".")
    metadata = {"Software": CHART_MARK} if form == "png" else {"Creator": CHART_MARK}
    try:
        atomic_file(path, lambda tmp: figure.savefig(tmp, dpi=120, format=form, metadata=metadata))
    finally:
        plt.close(figure)


def is_chart_written_here(path: Path) -> bool:
    """Whether `path` is a chart that `save_chart` wrote (its metadata names babelprune)."""
    from babelprune.outputs import file_mentions

    return file_mentions(path, CHART_MARK.encode())


def _error_bars(comparison, by_lang: dict, languages: list[str], heights: list[float]):
    """Asymmetric error bars (2, n) in percent from each change's 95% interval; None when there are none."""
    intervals = [comparison.degradation_interval(by_lang[lang]) if lang in by_lang else None for lang in languages]
    if all(interval is None for interval in intervals):
        return None
    # Clipped at 0: a percentile interval need not hold the point estimate (skewed resamples, or
    # rounding when every resample is equal), and matplotlib refuses negative bar lengths.
    below = [max(0.0, height - 100 * iv[0]) if iv else 0.0 for height, iv in zip(heights, intervals)]
    above = [max(0.0, 100 * iv[1] - height) if iv else 0.0 for height, iv in zip(heights, intervals)]
    return [below, above]


def degradation_chart(comparisons: list, path: Path) -> Path:
    """Relative change of the metric per language (grouped by resource level), one bar per method, with 95% intervals."""
    first = comparisons[0]
    order = []
    for level in RESOURCE_LEVELS:
        members = [c for c in first.changes if c.resource == level]
        members.sort(key=first.degradation)
        order.extend(members)
    languages = [c.language for c in order]
    width = 0.8 / len(comparisons)
    figure, axes = plt.subplots(figsize=(max(7.0, 0.5 * len(languages) + 2), 4.5))
    colours = plt.get_cmap("tab10")
    for index, comparison in enumerate(comparisons):
        by_lang = {c.language: c for c in comparison.changes}
        xs = [i + (index - (len(comparisons) - 1) / 2) * width for i in range(len(languages))]
        heights = [100 * comparison.degradation(by_lang[lang]) if lang in by_lang else float("nan") for lang in languages]
        axes.bar(xs, heights, width, label=comparison.label, color=colours(index), yerr=_error_bars(comparison, by_lang, languages, heights),
                 error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#333333"})
    # Shade the resource groups so the eye finds them.
    start = 0
    for level in RESOURCE_LEVELS:
        count = sum(1 for c in order if c.resource == level)
        if count:
            axes.axvspan(start - 0.5, start + count - 0.5, color=RESOURCE_COLOURS[level], alpha=0.08)
            axes.text(start + count / 2 - 0.5, 1.0, f"{level} resource", transform=axes.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
            start += count
    axes.set_xticks(range(len(languages)), languages, rotation=60, fontsize=8)
    axes.set_ylabel(f"{first.metric.replace('_', ' ')}: % worse than dense")
    axes.axhline(0, color="black", linewidth=0.6)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    save_chart(figure, path)
    return path


