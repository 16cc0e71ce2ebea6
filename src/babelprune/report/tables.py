"""Per-language tables, for the terminal (rich) and for report files (Markdown)."""

from __future__ import annotations

from rich.table import Table

from babelprune.data.languages import RESOURCE_LEVELS
from babelprune.evaluate.speed import footprint_table, speed_table  # noqa: F401 - the speed tables, with the other tables the CLI prints
from babelprune.records.eval import EvalResult, LMScore
from babelprune.records.intervals import resolved


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


def has_masks(result: EvalResult) -> bool:
    """Whether the scores came from a per-language mask bank (then tables show which mask served each)."""
    return any(score.mask is not None for score in result.scores)


def score_columns(result: EvalResult) -> list[str]:
    head = ["language", "name", "script", "resource"] + (["mask"] if has_masks(result) else [])
    if result.kind == "lm":
        return head + ["bits/byte", "95% CI", "perplexity", "tokens", "bytes"]
    return head + ["top-1", "95% CI", "queries"]


def score_cells(score, with_mask: bool) -> list[str]:
    head = [score.language, score.name, score.script, score.resource] + ([score.mask or "-"] if with_mask else [])
    interval = score.primary_interval
    spread = f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "-"
    if isinstance(score, LMScore):
        return head + [f"{score.bits_per_byte:.3f}", spread, f"{score.perplexity:.2f}", str(score.n_tokens), str(score.n_bytes)]
    return head + [f"{score.top1:.3f}", spread, str(score.n_queries)]


def _title(result: EvalResult) -> str:
    pruning = "dense" if result.pruning.method == "dense" else f"{result.pruning.method} @ {result.pruning.sparsity:.0%}"
    gguf = result.model.gguf
    runtime = f", llama.cpp {gguf.file_type}" if result.model.runtime == "llama.cpp" and gguf is not None else ""
    return f"{result.model.spec} ({pruning}{runtime}) on {result.corpus}/{result.split}"


def rich_table(result: EvalResult) -> Table:
    table = Table(title=_title(result))
    for name in score_columns(result):
        numeric = name in {"bits/byte", "95% CI", "perplexity", "tokens", "bytes", "top-1", "queries"}
        table.add_column(name, justify="right" if numeric else "left", min_width=len(name), no_wrap=True)
    for index, (_, members) in enumerate(grouped_scores(result)):
        if index:
            table.add_section()
        for score in members:
            table.add_row(*score_cells(score, has_masks(result)))
    return table


def markdown_table(result: EvalResult) -> str:
    columns = score_columns(result)
    lines = [f"### {_title(result)}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, members in grouped_scores(result):
        lines.extend("| " + " | ".join(score_cells(score, has_masks(result))) + " |" for score in members)
    return "\n".join(lines) + "\n"


def percent_interval(interval: tuple[float, float] | None) -> str:
    """' [+1.2, +3.4]' for an interval of relative changes, '' without one."""
    return f" [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]" if interval else ""


def significance(interval: tuple[float, float] | None) -> str:
    """' n.s.' when the interval of a difference contains 0 (the difference is not resolved)."""
    return " n.s." if interval is not None and not resolved(interval) else ""


def change_cell(change) -> str:
    """A pruned model's metric on one language, its relative change, the change's 95% interval, and n.s. if unresolved."""
    interval = change.interval
    return f"{change.pruned:.3f} ({100 * change.relative:+.1f}%{percent_interval(interval)}{significance(interval)})"


def mean_cell(comparison) -> str:
    interval = comparison.mean_interval
    return f"{100 * comparison.mean_degradation:+.1f}%{percent_interval(interval)}{significance(interval)}"


def worst_cell(comparison) -> str:
    worst = comparison.worst
    interval = comparison.degradation_interval(worst)
    return f"{worst.language} {100 * comparison.degradation(worst):+.1f}%{percent_interval(interval)}{significance(interval)}"


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
                cells.append(change_cell(other) if other else "-")
            table.add_row(change.language, change.name, change.resource, f"{change.dense:.3f}", *cells)
    table.add_section()
    table.add_row("mean", "", "", "", *[mean_cell(c) for c in comparisons])
    table.add_row("worst", "", "", "", *[worst_cell(c) for c in comparisons])
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
            cells = [change_cell(d[change.language]) if change.language in d else "-" for d in by_label]
            lines.append(f"| {change.language} | {change.resource} | {change.dense:.3f} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | | | " + " | ".join(mean_cell(c) for c in comparisons) + " |")
    lines.append("| **worst** | | | " + " | ".join(worst_cell(c) for c in comparisons) + " |")
    for level in RESOURCE_LEVELS:
        values = [c.by_resource().get(level) for c in comparisons]
        if any(v is not None for v in values):
            lines.append(f"| mean {level} | | | " + " | ".join(f"{100 * v:+.1f}%" if v is not None else "-" for v in values) + " |")
    return "\n".join(lines) + "\n"


def llama_cpp_speed_table(reports: list) -> Table:
    """GGUF files timed in llama.cpp (LlamaCppSpeedReport): prompt processing and generation at batch 1."""
    first = reports[0]
    threads = "llama.cpp's default threads" if first.threads is None else f"{first.threads} threads"
    table = Table(title=f"llama.cpp {first.llama_cpp_python} on the CPU, batch 1, {threads}; median of {first.runs} runs")
    columns = ["GGUF file", "type", "parameters", "MB", f"prompt tok/s ({first.seq_len})",
               f"generation tok/s ({first.new_tokens} after {first.prompt_tokens})"]
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index < 2 else "right", no_wrap=True)
    for report in reports:
        generation = "n/a" if report.generate_tokens_per_s is None else f"{report.generate_tokens_per_s:.1f}"
        table.add_row(report.spec, report.file_type, f"{report.n_parameters:,}", f"{report.bytes_on_disk / 1e6:.1f}",
                      f"{report.prompt_tokens_per_s:.1f}", generation)
    return table
