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
