"""The charts of the store report (PNG, matplotlib's non-interactive backend).

The per-language degradation chart is `plots.degradation_chart`; this module
adds the views across runs: degradation against sparsity, mean change per
resource level, speed against size, and the overlap of per-language masks.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from babelprune.report.plots import RESOURCE_COLOURS  # noqa: E402
from babelprune.report.runs import Curve  # noqa: E402

DPI = 120


def plain(text: str) -> str:
    """Text matplotlib draws as typed: a '$' would otherwise start mathematical notation."""
    return str(text).replace("$", r"\$")


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, bbox_inches="tight")  # nothing cut at the edges (long legends, colour bar labels)
    plt.close(figure)
    return Path(path)


def _yerr(values: list[float], intervals: list) -> list[list[float]] | None:
    """Asymmetric error bars (2, n) from intervals, zero-length where an interval is missing; None when all are."""
    if all(interval is None for interval in intervals):
        return None
    # Clipped at 0: a percentile interval need not hold the point estimate (see plots._error_bars).
    below = [max(0.0, v - iv[0]) if iv else 0.0 for v, iv in zip(values, intervals)]
    above = [max(0.0, iv[1] - v) if iv else 0.0 for v, iv in zip(values, intervals)]
    return [below, above]


def sparsity_chart(curves: list[Curve], metric: str, path: Path) -> Path:
    """Mean (left) and worst-language (right) degradation against sparsity, one line per variant, 95% intervals."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2), sharex=True)
    sparsities = [100 * p.sparsity for curve in curves for p in curve.points]
    # Curves at the same sparsity are set a little apart, so that their points and bars do not hide each other.
    step = 0.008 * max(10.0, max(sparsities) - min(sparsities))
    for index, curve in enumerate(curves):
        xs = [100 * p.sparsity + (index - (len(curves) - 1) / 2) * step for p in curve.points]
        for axes, values, intervals in (
            (left, [100 * p.mean for p in curve.points], [p.mean_interval for p in curve.points]),
            (right, [100 * p.worst for p in curve.points], [p.worst_interval for p in curve.points]),
        ):
            scaled = [(100 * iv[0], 100 * iv[1]) if iv else None for iv in intervals]
            axes.errorbar(xs, values, yerr=_yerr(values, scaled), marker="o", capsize=3, label=plain(curve.label))
    name = metric.replace("_", " ")
    left.set_title("mean over languages")
    right.set_title("worst language")
    for axes in (left, right):
        axes.set_xlabel("sparsity (%)")
        axes.set_ylabel(f"{name}: % worse than dense")
        axes.axhline(0, color="black", linewidth=0.6)
        axes.grid(alpha=0.3)
    left.legend(fontsize=8)
    return _save(figure, path)


def language_sparsity_chart(curves: list[Curve], metric: str, path: Path, labelled: int = 3) -> Path:
    """One panel per method: every language's degradation against sparsity, coloured by resource level.

    The `labelled` languages that lose most at a panel's highest sparsity are named at their line's end.
    """
    shown = [curve for curve in curves if len(curve.points) >= 2] or curves
    columns = min(3, len(shown))
    rows = -(-len(shown) // columns)
    # each panel its own scale: magnitude pruning's losses would flatten every other method's lines
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axes, curve in zip(grid.flat, shown):
        xs = [100 * point.sparsity for point in curve.points]
        lines: dict[str, tuple[str, list[float]]] = {}
        for point in curve.points:
            for language, resource, degradation in point.languages:
                lines.setdefault(language, (resource, []))[1].append(100 * degradation)
        complete = {lang: line for lang, line in lines.items() if len(line[1]) == len(xs)}  # scored at every sparsity
        for language, (resource, ys) in complete.items():
            axes.plot(xs, ys, color=RESOURCE_COLOURS.get(resource, "grey"), linewidth=0.9, alpha=0.7, marker=".")
        named = sorted(complete.items(), key=lambda item: item[1][1][-1], reverse=True)[:labelled]
        finals = [ys[-1] for _, ys in complete.values()]  # each language's change at the highest sparsity
        span = max(finals) - min(finals) if finals else 1.0
        placed: list[float] = []
        for language, (_, ys) in named:  # from the top down, each name at least 4% of the range below the last
            y = ys[-1] if not placed else min(ys[-1], placed[-1] - 0.04 * max(span, 1e-9))
            placed.append(y)
            axes.annotate(language, (xs[-1], ys[-1]), xytext=(3, y), textcoords=("offset points", "data"), fontsize=7, va="center",
                          ha="left", annotation_clip=False)
        axes.set_title(plain(curve.label), fontsize=9)
        axes.set_xlabel("sparsity (%)")
        axes.axhline(0, color="black", linewidth=0.6)
        axes.grid(alpha=0.3)
    for axes in grid.flat[len(shown):]:
        axes.set_visible(False)
    for axes in grid[:, 0]:
        axes.set_ylabel(f"{metric.replace('_', ' ')}: % worse than dense")
    handles = [plt.Line2D([], [], color=colour, label=f"{level} resource") for level, colour in RESOURCE_COLOURS.items()]
    grid.flat[0].legend(handles=handles, fontsize=7)
    return _save(figure, path)


def resource_chart(labels: list[str], levels: list[str], values: list[dict], path: Path) -> Path:
    """Mean degradation per resource level (x) for each run (bars), with 95% intervals.

    `values[i][level]` is (mean, interval or None) of run i, relative changes.
    """
    width = 0.8 / max(1, len(labels))
    figure, axes = plt.subplots(figsize=(max(6.5, 1.2 * len(levels) * max(1, len(labels)) ** 0.5 + 3), 4.2))
    colours = plt.get_cmap("tab10")
    for index, (label, row) in enumerate(zip(labels, values)):
        xs = [i + (index - (len(labels) - 1) / 2) * width for i in range(len(levels))]
        heights = [100 * row[level][0] if level in row else float("nan") for level in levels]
        intervals = [(100 * row[level][1][0], 100 * row[level][1][1]) if level in row and row[level][1] else None for level in levels]
        axes.bar(xs, heights, width, label=plain(label), color=colours(index % 10), yerr=_yerr(heights, intervals),
                 error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})
    axes.set_xticks(range(len(levels)), [f"{level} resource" for level in levels])
    for tick, level in zip(axes.get_xticklabels(), levels):
        tick.set_color(RESOURCE_COLOURS.get(level, "black"))
    axes.set_ylabel("mean % worse than dense")
    axes.axhline(0, color="black", linewidth=0.6)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, ncols=2 if len(labels) > 6 else 1)
    return _save(figure, path)


def speed_size_chart(points: list[tuple[str, float, float]], size_name: str, speed_name: str, path: Path) -> Path:
    """One labelled point per run: size (x) against speed (y)."""
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    axes.scatter([p[1] for p in points], [p[2] for p in points], s=28, color="#1b6ca8")
    for label, x, y in points:
        axes.annotate(plain(label), (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    axes.set_xlabel(size_name.replace("_", " "))
    axes.set_ylabel(speed_name.replace("_", " "))
    axes.grid(alpha=0.3)
    return _save(figure, path)


def overlap_heatmap(overlap: dict[str, dict[str, float]], title: str, path: Path) -> Path:
    """Jaccard overlap of the pruned sets of every pair of languages (1 on the diagonal)."""
    languages = list(overlap)
    matrix = [[overlap[a].get(b, float("nan")) for b in languages] for a in languages]
    known = [value for row in matrix for value in row if value == value]  # NaN != NaN: pairs the record lacks
    low = min(known, default=0.0)
    size = max(4.0, 0.45 * len(languages) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(matrix, cmap="viridis", vmin=min(low, 0.999), vmax=1.0)
    axes.set_xticks(range(len(languages)), [plain(lang) for lang in languages], rotation=60, fontsize=8)
    axes.set_yticks(range(len(languages)), [plain(lang) for lang in languages], fontsize=8)
    if len(languages) <= 12:
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                dark = (value - low) / max(1.0 - low, 1e-9) < 0.6  # the lower part of viridis is dark
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    axes.set_title(plain(title), fontsize=10)
    figure.colorbar(image, ax=axes, label="Jaccard overlap of the pruned weights")
    return _save(figure, path)
