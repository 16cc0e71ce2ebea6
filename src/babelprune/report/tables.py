"""Per-language tables, for the terminal (rich) and for report files (Markdown)."""

from __future__ import annotations

from rich.table import Table

from babelprune.data.languages import RESOURCE_LEVELS
from babelprune.report.records import EvalResult, LMScore


def grouped_scores(result: EvalResult) -> list[tuple[str, list]]:
    """Scores grouped by resource level (high, medium, low), each sorted by the primary metric, best first."""
    metric, higher_better = result.primary_metric
    groups = []
    for level in RESOURCE_LEVELS:
        members = [s for s in result.scores if s.resource == level]
        members.sort(key=lambda s: s.metrics()[metric][0], reverse=higher_better)
        if members:
            groups.append((level, members))
    return groups


def _columns(result: EvalResult) -> list[str]:
    if result.kind == "lm":
        return ["language", "name", "script", "resource", "bits/byte", "perplexity", "tokens", "bytes"]
    return ["language", "name", "script", "resource", "top-1", "queries"]


def _cells(score) -> list[str]:
    head = [score.language, score.name, score.script, score.resource]
    if isinstance(score, LMScore):
        return head + [f"{score.bits_per_byte:.3f}", f"{score.perplexity:.2f}", str(score.n_tokens), str(score.n_bytes)]
    return head + [f"{score.top1:.3f}", str(score.n_queries)]


def _title(result: EvalResult) -> str:
    pruning = "dense" if result.pruning.method == "dense" else f"{result.pruning.method} @ {result.pruning.sparsity:.0%}"
    return f"{result.model.spec} ({pruning}) on {result.corpus}/{result.split}"


def rich_table(result: EvalResult) -> Table:
    table = Table(title=_title(result))
    for name in _columns(result):
        numeric = name in {"bits/byte", "perplexity", "tokens", "bytes", "top-1", "queries"}
        table.add_column(name, justify="right" if numeric else "left", min_width=len(name), no_wrap=True)
    for index, (_, members) in enumerate(grouped_scores(result)):
        if index:
            table.add_section()
        for score in members:
            table.add_row(*_cells(score))
    return table


def markdown_table(result: EvalResult) -> str:
    columns = _columns(result)
    lines = [f"### {_title(result)}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, members in grouped_scores(result):
        lines.extend("| " + " | ".join(_cells(score)) + " |" for score in members)
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: list) -> Table:
    """Per-language metric for dense and each pruned model, with the relative change, then summary rows."""
    first = comparisons[0]
    table = Table(title=f"{first.metric.replace('_', ' ')} per language: dense vs pruned")
    for name in ("language", "name", "resource", "dense"):
        table.add_column(name, no_wrap=True, justify="right" if name == "dense" else "left")
    for comparison in comparisons:
        table.add_column(comparison.label, justify="right", no_wrap=True)
    by_label = [{c.language: c for c in comparison.changes} for comparison in comparisons]
    for index, level in enumerate(RESOURCE_LEVELS):
        members = [c for c in first.changes if c.resource == level]
        if not members:
            continue
        if index:
            table.add_section()
        for change in sorted(members, key=first.degradation):
            cells = []
            for comparison, changes in zip(comparisons, by_label):
                other = changes.get(change.language)
                cells.append(f"{other.pruned:.3f} ({100 * other.relative:+.1f}%)" if other else "-")
            table.add_row(change.language, change.name, change.resource, f"{change.dense:.3f}", *cells)
    table.add_section()
    table.add_row("mean", "", "", "", *[f"{100 * c.mean_degradation:+.1f}%" for c in comparisons])
    table.add_row("worst", "", "", "", *[f"{c.worst.language} {100 * c.degradation(c.worst):+.1f}%" for c in comparisons])
    for level in RESOURCE_LEVELS:
        values = [c.by_resource().get(level) for c in comparisons]
        if any(v is not None for v in values):
            table.add_row(f"mean {level}", "", "", "", *[f"{100 * v:+.1f}%" if v is not None else "-" for v in values])
    correlations = [c.resource_correlation() for c in comparisons]
    table.add_row("Spearman(resource, loss)", "", "", "", *[f"{r:+.2f}" if r is not None else "-" for r in correlations])
    return table


def comparison_markdown(comparisons: list) -> str:
    """The comparison as a Markdown table (for report files)."""
    first = comparisons[0]
    header = ["language", "resource", "dense", *[c.label for c in comparisons]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_label = [{c.language: c for c in comparison.changes} for comparison in comparisons]
    for level in RESOURCE_LEVELS:
        for change in sorted((c for c in first.changes if c.resource == level), key=first.degradation):
            cells = [f"{d[change.language].pruned:.3f} ({100 * d[change.language].relative:+.1f}%)" if change.language in d else "-" for d in by_label]
            lines.append(f"| {change.language} | {change.resource} | {change.dense:.3f} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | | | " + " | ".join(f"{100 * c.mean_degradation:+.1f}%" for c in comparisons) + " |")
    lines.append("| **worst** | | | " + " | ".join(f"{c.worst.language} {100 * c.degradation(c.worst):+.1f}%" for c in comparisons) + " |")
    for level in RESOURCE_LEVELS:
        values = [c.by_resource().get(level) for c in comparisons]
        if any(v is not None for v in values):
            lines.append(f"| mean {level} | | | " + " | ".join(f"{100 * v:+.1f}%" if v is not None else "-" for v in values) + " |")
    return "\n".join(lines) + "\n"
