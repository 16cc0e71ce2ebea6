"""The report's sections for one evaluation set: dense scores, per-language change, curves, resource levels, contests."""

from __future__ import annotations

from babelprune.data.languages import RESOURCE_LEVELS
from babelprune.records.eval import EvalResult
from babelprune.records.intervals import BOOTSTRAP_SAMPLES, CONFIDENCE, resolved
from babelprune.report.compare import Comparison
from babelprune.report.contest import Contest
from babelprune.report.figures import language_sparsity_chart, plain, resource_chart, sparsity_chart
from babelprune.report.html_parts import Cell, Page, marked, num, paragraph, plural, source, table
from babelprune.report.plots import degradation_chart, language_bar_chart
from babelprune.report.runs import (
    CONTEST_BASELINE, BaselineGroup, Compared, EvalSetView, contests, levels_present, resource_levels, sparsity_curves,
)
from babelprune.report.tables import (
    change_cell, grouped_scores, has_masks, mean_cell, percent_interval, score_cells, score_columns, significance,
    worst_cell,
)

_INTERVAL = f"{CONFIDENCE:.0%} intervals: bootstrap over the evaluation windows ({BOOTSTRAP_SAMPLES:,} resamples)"
_PAIRED = (f"{CONFIDENCE:.0%} intervals: paired bootstrap over the windows both models scored ({BOOTSTRAP_SAMPLES:,} "
           "resamples); n.s.: the interval contains 0, so the change is not resolved")


def _measured(result: EvalResult) -> str:
    settings = ", ".join(f"{key} {result.settings[key]}" for key in ("seq_len", "max_tokens", "max_queries") if key in result.settings)
    return f"{result.corpus}/{result.split}" + (f" ({settings})" if settings else "")


def _metric(result: EvalResult) -> str:
    """The primary metric in words: 'bits per byte', 'top1'."""
    return result.primary_metric[0].replace("_", " ")


def _run_name(record) -> str:
    return f"run {record.key} ({record.label}, sweep {record.sweep})"


def _score_sort(column: str, text: str) -> float | None:
    """Sort key of a dense-table cell: its number (the lower end for an interval), None for text columns."""
    if column in {"language", "name", "script", "resource", "mask"}:
        return None
    try:
        return float(text.split("-")[0]) if column == "95% CI" else float(text)
    except ValueError:
        return float("nan")


def dense_section(page: Page, group: BaselineGroup, set_name: str) -> str:
    result = group.result
    columns = score_columns(result)
    rows = [
        [Cell(text, _score_sort(column, text), css="" if _score_sort(column, text) is None else "num")
         for column, text in zip(columns, score_cells(score, has_masks(result)))]
        for _, members in grouped_scores(result) for score in members
    ]
    shown = result.model_copy(update={"model": result.model.model_copy(update={"spec": plain(result.model.spec)}),
                                      "corpus": plain(result.corpus)})
    return "\n".join([
        page.heading(3, f"Dense model per language ({set_name})"),
        source(f"{_run_name(group.dense)}: {group.model} measured on {_measured(result)}; {_INTERVAL}."),
        table(columns, rows, name=f"dense {set_name}"),
        page.figure(lambda path: language_bar_chart(shown, path), f"{set_name}-dense", f"dense {_metric(result)} per language",
                    f"Dense {_metric(result)} per language on {set_name}, grouped by resource level."),
    ])


def _plotted(runs: list[Compared]) -> list[Comparison]:
    return [run.comparison.model_copy(update={"label": plain(run.comparison.label)}) for run in runs]


def _chart_order(comparison: Comparison) -> list[str]:
    """Languages in the order of the degradation chart: by resource level, then by the first run's loss."""
    return [c.language for level in RESOURCE_LEVELS
            for c in sorted((c for c in comparison.changes if c.resource == level), key=comparison.degradation)]


def change_section(page: Page, group: BaselineGroup, set_name: str) -> str:
    """For each sparsity or pattern: the per-language change of every run, as a chart and a table."""
    metric = _metric(group.result)
    parts = [page.heading(3, f"Per-language change by method ({set_name})"),
             source(f"{plural(len(group.runs), 'run')} against the dense {_run_name(group.dense)}: relative change of {metric} "
                    f"per language, (pruned - dense) / dense; {_PAIRED}.")]
    for amount, runs in group.amounts():
        by_run = [{c.language: c for c in run.comparison.changes} for run in runs]
        order = _chart_order(runs[0].comparison) + [s.language for _, members in grouped_scores(group.result) for s in members]
        order = list(dict.fromkeys(order))
        rows = []
        for lang in order:
            if not any(lang in changes for changes in by_run):
                continue
            first = next(changes[lang] for changes in by_run if lang in changes)
            cells = [marked(change_cell(changes[lang]), 100 * changes[lang].relative) if lang in changes else num(None) for changes in by_run]
            rows.append([lang, first.name, first.resource, num(first.dense), *cells])
        header = ["language", "name", "resource", f"dense {metric}", *(run.info.label for run in runs)]
        parts += [
            f"<h4>At {amount}</h4>",
            page.figure(lambda path, runs=runs: degradation_chart(_plotted(runs), path), f"{set_name}-change-{amount}",
                        f"per-language change at {amount}",
                        f"{metric}: % worse than dense, per language, at {amount}; bars: 95% paired intervals."),
            table(header, rows, name=f"change {set_name} {amount}",
                  caption=f"Each cell: the pruned {metric}, its relative change and interval."),
        ]
        parts += [paragraph(note) for note in filter(None, (run.comparison.dropped_note() for run in runs))]
    return "\n".join(parts)


def summary_section(page: Page, group: BaselineGroup, set_name: str) -> str:
    """One row per run: mean and worst change, mean per resource level, and the resource correlation."""
    levels = levels_present(group.runs)
    rows = []
    for run in sorted(group.runs, key=lambda r: (r.info.amount_key, r.info.method)):
        comparison = run.comparison
        by_level = comparison.by_resource()
        correlation = comparison.resource_correlation()
        rows.append([
            run.info.label, run.info.record.kind, run.info.method, Cell(run.info.amount, run.info.sparsity), run.info.setting or "-",
            marked(mean_cell(comparison), 100 * comparison.mean_degradation),
            marked(worst_cell(comparison), 100 * comparison.degradation(comparison.worst)),
            *(num(100 * by_level[level] if level in by_level else None, 1, signed=True) for level in levels),
            num(correlation, 2, signed=True),
        ])
    header = ["run", "kind", "method", "sparsity", "setting", "mean change", "worst language",
              *(f"mean {level} (%)" for level in levels), "Spearman(resource, loss)"]
    return "\n".join([
        page.heading(3, f"Findings: every run in one table ({set_name})"),
        source(f"The comparisons above; change in % of the dense {_metric(group.result)} (> 0: worse); {_PAIRED}. "
               "Spearman: rank correlation of a language's resource class with its loss (negative: low-resource languages lose more)."),
        table(header, rows, name=f"summary {set_name}"),
    ])


def curve_section(page: Page, group: BaselineGroup, set_name: str) -> str:
    metric = group.result.primary_metric[0]
    curves = sparsity_curves(group.runs)
    parts = [page.heading(3, f"Quality against sparsity ({set_name})")]
    if not curves:
        return "\n".join(parts + [paragraph("No run compared on this set records its sparsity.", "empty")])
    rows = [
        [curve.label, num(100 * point.sparsity, 0),
         marked(f"{100 * point.mean:+.1f}%{percent_interval(point.mean_interval)}{significance(point.mean_interval)}", 100 * point.mean),
         point.worst_language,
         marked(f"{100 * point.worst:+.1f}%{percent_interval(point.worst_interval)}{significance(point.worst_interval)}", 100 * point.worst)]
        for curve in curves for point in curve.points
    ]
    parts.append(source(f"Mean and worst-language change of {_metric(group.result)} from the dense {_run_name(group.dense)}, one line "
                        f"per method and configuration (runs that differ only in sparsity); {_PAIRED}."))
    if any(len(curve.points) >= 2 for curve in curves):
        parts += [
            page.figure(lambda path: sparsity_chart(curves, metric, path), f"{set_name}-sparsity", "quality against sparsity",
                        f"{_metric(group.result)}: % worse than dense against sparsity; bars: 95% intervals."),
            page.figure(lambda path: language_sparsity_chart(curves, metric, path), f"{set_name}-sparsity-languages",
                        "every language against sparsity",
                        f"{_metric(group.result)}: % worse than dense against sparsity, one line per language (colour: resource "
                        "level), one panel per method; the languages that lose most at the highest sparsity are named. Their "
                        "intervals are in the per-language tables above."),
        ]
    else:  # a curve through one point shows nothing the table does not
        parts.append(paragraph("Every method ran at one sparsity, so no curve is drawn; the table below gives each run's change.",
                               "empty"))
    parts.append(table(["method", "sparsity (%)", "mean change", "worst language", "its change"], rows, name=f"curves {set_name}"))
    return "\n".join(parts)


def _level_cell(value: tuple[float, tuple[float, float] | None] | None) -> Cell:
    if value is None:
        return num(None)
    mean, interval = value
    return marked(f"{100 * mean:+.1f}%{percent_interval(interval)}{significance(interval)}", 100 * mean)


def resource_section(page: Page, group: BaselineGroup, set_name: str) -> str:
    levels = levels_present(group.runs)
    runs = sorted(group.runs, key=lambda r: (r.info.amount_key, r.info.method))
    values = [resource_levels(group.result, run) for run in runs]
    rows = [[run.info.label, Cell(run.info.amount, run.info.sparsity), *(_level_cell(row.get(level)) for level in levels),
             num(run.comparison.resource_correlation(), 2, signed=True)] for run, row in zip(runs, values)]
    counts = {level: sum(1 for s in group.result.scores if s.resource == level) for level in levels}
    return "\n".join([
        page.heading(3, f"By resource level ({set_name})"),
        source(f"Mean change per resource level ({', '.join(f'{lv}: {n} languages' for lv, n in counts.items())}); "
               f"each level's interval resamples every language's windows, paired, and averages inside each resample."),
        page.figure(lambda path: resource_chart([plain(r.info.label) for r in runs], levels, values, path),
                    f"{set_name}-resource", "mean change per resource level",
                    "Mean % worse than dense per resource level, one bar per run; bars: 95% intervals."),
        table(["run", "sparsity", *(f"{level} resource" for level in levels), "Spearman(resource, loss)"], rows,
              name=f"resource {set_name}"),
    ])


def _contest_cell(value: float, interval: tuple[float, float]) -> Cell:
    text = f"{value:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]" + ("" if resolved(interval) else " n.s.")
    return marked(text, value)


def _contest_row(amount: str, result: Contest) -> list:
    base_worst, cand_worst = result.baseline_worst, result.candidate_worst
    worst_difference = cand_worst.candidate_increase - base_worst.baseline_increase
    return [
        amount, result.baseline, result.candidate, num(result.baseline_mean, 4, signed=True), num(result.candidate_mean, 4, signed=True),
        num(result.mean_ratio, 2), _contest_cell(result.candidate_mean - result.baseline_mean, result.mean_difference_interval),
        result.verdict(result.mean_difference_interval),
        f"{base_worst.language} {base_worst.baseline_increase:+.4f}", f"{cand_worst.language} {cand_worst.candidate_increase:+.4f}",
        _contest_cell(worst_difference, result.worst_difference_interval), result.verdict(result.worst_difference_interval),
    ]


def contest_section(page: Page, group: BaselineGroup, set_name: str) -> str:
    rows = contests(group)
    parts = [page.heading(3, f"Method against method ({set_name})")]
    if not rows:
        return "\n".join(parts + [paragraph("No sparsity or pattern has two runs of a language model to set against each other.", "empty")])
    header = ["sparsity", "baseline", "candidate", "baseline mean increase", "candidate mean increase", "ratio",
              "difference of means", "verdict (mean)", "baseline worst", "candidate worst", "difference of worsts", "verdict (worst)"]
    body = [_contest_row(row.amount, row.contest) for row in rows if row.contest is not None]
    notes = [paragraph(f"{row.candidate} against {row.baseline} at {row.amount}: {row.note}") for row in rows if row.contest is None]
    parts += [
        source(f"At each sparsity or pattern, every run against the {CONTEST_BASELINE} run (else the first): increase of bits "
               f"per byte over the dense {_run_name(group.dense)}, absolute; the difference is candidate - baseline (< 0: "
               f"the candidate loses less), paired on the same windows; the worst language's maximum is taken inside each "
               f"resample ({BOOTSTRAP_SAMPLES:,}); verdict: who loses less, or not resolved when the interval contains 0."),
        table(header, body, name=f"contest {set_name}") if body else "",
        *notes,
    ]
    return "\n".join(parts)


def evaluation_set_section(page: Page, view: EvalSetView) -> str:
    name = view.name
    parts = [page.heading(2, f"Evaluation set: {name}")]
    if not view.groups:
        parts.append(paragraph(f"No dense run evaluated {name}, so no change can be computed on it.", "empty"))
    for group in view.groups:
        if len(view.groups) > 1:
            parts.append(paragraph(f"Baseline: {group.model} ({_run_name(group.dense)}).", "lead"))
        parts.append(dense_section(page, group, name))
        if not group.runs:
            parts.append(paragraph(f"No other run on {name} was compared with this dense run.", "empty"))
            continue
        parts += [change_section(page, group, name), summary_section(page, group, name), curve_section(page, group, name),
                  resource_section(page, group, name), contest_section(page, group, name)]
    if view.unmatched:
        parts += [page.heading(3, f"Runs not compared ({name})"),
                  table(["run", "kind", "why"], [[info.label, info.record.kind, reason] for info, reason in view.unmatched],
                        name=f"unmatched {name}")]
    return "\n".join(parts)
