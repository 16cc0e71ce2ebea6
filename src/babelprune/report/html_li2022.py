"""The report's section on structured pruning after fine-tuning (task-structured and task-dynamic runs, Li et al. 2022).

Every figure comes from outcomes item by item (1 right, 0 wrong), so every
change is paired: a change of a pruned model against the dense fine-tuned
model, or of one method against another, resamples the same test items for
both sides (seeded per language, babelprune.records.intervals). A mean over
languages resamples each language's items with its own draws and averages
the languages' differences, so a language with few items does not drown the
others. "n.s.": the 95% interval contains 0.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from babelprune.records.intervals import MIN_ITEMS, draws, percentile_interval, resolved
from babelprune.records.run import RunRecord
from babelprune.records.task_prune import LanguageOutcomes, ModelScores, TaskPruneResult
from babelprune.report.html_parts import Cell, Page, integer, num, paragraph, plural, source, table

Pair = tuple[str, list[int], list[int]]  # language, outcomes of side A, of side B, on the same items


def paired(a: LanguageOutcomes, b: LanguageOutcomes) -> Pair:
    """The outcomes of both sides on the items both scored, in A's order."""
    other = dict(zip(b.keys, b.outcomes, strict=True))
    keys = [key for key in a.keys if key in other]
    mine = dict(zip(a.keys, a.outcomes, strict=True))
    return a.language, [mine[key] for key in keys], [other[key] for key in keys]


def mean_difference(pairs: list[Pair]) -> tuple[float | None, tuple[float, float] | None]:
    """Mean over languages of accuracy(B) - accuracy(A), and its paired bootstrap interval (None below MIN_ITEMS items)."""
    pairs = [pair for pair in pairs if pair[1]]
    if not pairs:
        return None, None
    point = statistics.fmean(statistics.fmean(b) - statistics.fmean(a) for _, a, b in pairs)
    if any(len(a) < MIN_ITEMS for _, a, _ in pairs):
        return point, None
    replicates = []
    for lang, a, b in pairs:
        index = draws(len(a), lang)  # (samples, n): one draw serves both sides
        replicates.append(np.asarray(b, dtype=np.float64)[index].mean(axis=1) - np.asarray(a, dtype=np.float64)[index].mean(axis=1))
    return point, percentile_interval(np.mean(replicates, axis=0))


def change_cell(point: float | None, interval: tuple[float, float] | None) -> Cell:
    """'+0.050 [-0.010, +0.110]', muted 'n.s.' when the interval contains 0."""
    if point is None:
        return num(None)
    text = f"{point:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else " [no interval]")
    return Cell(text, point, note="" if resolved(interval) else "n.s.", css="num")


def against_dense(result: TaskPruneResult, model: ModelScores) -> list[Pair]:
    dense = {item.language: item for item in result.dense.languages}
    return [paired(dense[item.language], item) for item in model.languages if item.language in dense]


def all_languages(result: TaskPruneResult) -> list[Pair]:
    """Every pruned model's languages against the dense model (per-language: each model's own language)."""
    return [pair for model in result.models for pair in against_dense(result, model)]


def _key(result: TaskPruneResult) -> tuple:
    return (result.task, tuple(result.units), result.importance, result.setting, result.target_sparsity)


def _describe(result: TaskPruneResult) -> list[str]:
    return [",".join(result.units), result.importance, result.setting, f"{result.target_sparsity:.0%}"]


def _achieved(result: TaskPruneResult) -> float:
    return statistics.fmean(model.sparsity for model in result.models)


def change_table(results: list[TaskPruneResult]) -> str:
    languages = list(dict.fromkeys(item.language for r in results for item in r.dense.languages))
    rows = []
    for result in sorted(results, key=_key):
        by_language = {pair[0]: pair for pair in all_languages(result)}
        rows.append([*_describe(result), num(_achieved(result)), change_cell(*mean_difference(list(by_language.values()))),
                     *(change_cell(*mean_difference([by_language[lang]])) if lang in by_language else num(None) for lang in languages)])
    return table(["units", "importance", "setting", "target", "achieved", "mean change", *languages], rows,
                 caption="Accuracy change against the dense fine-tuned model, per language, with 95% intervals (paired over test items)",
                 name="task-structured change")


def matched_runs(results: list[TaskPruneResult], field: str, a: str, b: str) -> list[tuple[TaskPruneResult, TaskPruneResult]]:
    """Pairs of runs equal in everything but `field`, which is `a` on the first and `b` on the second."""
    found = {}
    for result in results:
        key = tuple((name, value) for name, value in zip(("task", "units", "importance", "setting", "sparsity"), _key(result))
                    if name != field)
        found.setdefault(key, {})[getattr(result, field)] = result
    return [(pair[a], pair[b]) for _, pair in sorted(found.items(), key=lambda item: str(item[0])) if a in pair and b in pair]


def _by_language(result: TaskPruneResult) -> dict[str, LanguageOutcomes]:
    return {item.language: item for model in result.models for item in model.languages}


def versus(first: TaskPruneResult, second: TaskPruneResult) -> tuple[float | None, tuple[float, float] | None, list[Pair]]:
    """second - first over the languages both scored, paired on their items."""
    one, two = _by_language(first), _by_language(second)
    pairs = [paired(one[lang], two[lang]) for lang in one if lang in two]
    return (*mean_difference(pairs), pairs)


def _resolved_languages(pairs: list[Pair], sign: int) -> str:
    names = [lang for lang, a, b in pairs if resolved(mean_difference([(lang, a, b)])[1])
             and sign * (statistics.fmean(b) - statistics.fmean(a)) > 0]
    return ", ".join(names) or "-"


def versus_table(results: list[TaskPruneResult], field: str, a: str, b: str, caption: str) -> str:
    rows = []
    for first, second in matched_runs(results, field, a, b):
        point, interval, pairs = versus(first, second)
        described = [value for name, value in zip(("units", "importance", "setting", "sparsity"), _describe(first)) if name != field]
        rows.append([*described, change_cell(point, interval), _resolved_languages(pairs, +1), _resolved_languages(pairs, -1)])
    if not rows:
        return paragraph(f"No two runs differ only in {field} ({a} and {b}), so there is nothing to pair.", "empty")
    header = [name for name in ("units", "importance", "setting", "target") if name != field]
    return table([*header, f"{b} - {a}", f"languages where {b} is better", f"where {a} is better"], rows, caption=caption,
                 name=f"{b} vs {a}")


def speed_table(results: list[TaskPruneResult]) -> str:
    """Parameters and throughput of the dense model and every pruned one (per-language: the mean of its models)."""
    dense = results[0].dense
    rows = [["dense fine-tuned", "-", integer(dense.parameters), integer(dense.block_parameters), num(0.0),
             num(dense.items_per_second, 1), num(1.0, 2)]]
    for result in sorted(results, key=lambda r: (r.kind, _key(r) if r.kind == "task-structured" else ())):
        # a task-structured run is one row (per-language: the mean of its languages' models), a dynamic run one per level
        groups = [result.models] if result.kind == "task-structured" else [[model] for model in result.models]
        for group in groups:
            speed = statistics.fmean(m.items_per_second for m in group)
            name = " ".join(_describe(result)) if result.kind == "task-structured" else f"dynamic {','.join(result.units)} level {group[0].name}"
            rows.append([name, result.setting, integer(statistics.fmean(m.parameters for m in group)),
                         integer(statistics.fmean(m.block_parameters for m in group)),
                         num(statistics.fmean(m.sparsity for m in group)), num(speed, 1),
                         num(speed / dense.items_per_second if dense.items_per_second else None, 2)])
    return table(["model", "setting", "parameters", "block parameters", "block sparsity", "items/s", "speed-up"], rows,
                 caption="Speed against size: every parameter of encoder + classifier, the blocks' linears, and test items "
                         "scored per second (tokenization included; one run on a shared machine, so read ratios, not digits)",
                 name="task speed size")


@dataclass
class DynamicLevel:
    """One level of a Dynamic Sparsification run, against the dense model and a separately pruned run at that level."""

    level: float
    model: ModelScores
    against_dense: tuple[float | None, tuple[float, float] | None]
    separate: TaskPruneResult | None  # a shared run of the same task and units at this level; None: there is none
    against_separate: tuple[float | None, tuple[float, float] | None]  # dynamic - separate, paired over items


def dynamic_levels(dynamic: list[TaskPruneResult], separate: list[TaskPruneResult]) -> list[DynamicLevel]:
    """Every level above 0 of every dynamic run, once per separate run it matches (or once with none)."""
    found = []
    for result in dynamic:
        for model in result.models:
            level = float(model.name)
            if level == 0:
                continue
            change = mean_difference(against_dense(result, model))
            matches = [s for s in separate if s.setting == "shared" and s.task == result.task
                       and sorted(s.units) == sorted(result.units) and abs(s.target_sparsity - level) < 1e-9]
            own = {item.language: item for item in model.languages}
            for other in matches or [None]:
                against: tuple = (None, None)
                if other is not None:
                    theirs = _by_language(other)
                    against = mean_difference([paired(theirs[lang], own[lang]) for lang in own if lang in theirs])
                found.append(DynamicLevel(level, model, change, other, against))
    return found


def dynamic_table(dynamic: list[TaskPruneResult], separate: list[TaskPruneResult]) -> str:
    rows = []
    for row in dynamic_levels(dynamic, separate):
        head = [f"{row.level:.0%}", num(row.model.sparsity), change_cell(*row.against_dense)]
        if row.separate is None:
            rows.append([*head, "(no separate run at this level)", num(None), num(None)])
        else:
            rows.append([*head, f"{row.separate.importance} ({row.separate.ranking})",
                         change_cell(*mean_difference(all_languages(row.separate))), change_cell(*row.against_separate)])
    if not rows:
        return paragraph("No task-dynamic run has a level above 0.", "empty")
    return table(["level", "achieved", "dynamic - dense", "separate run", "separate - dense", "dynamic - separate"], rows,
                 caption="Dynamic Sparsification (one model, cut at each level) against models pruned and fine-tuned separately "
                         "at the same level (shared setting, same units)", name="dynamic vs separate")


def task_pruning_section(page: Page, done: list[RunRecord]) -> str:
    parts = [page.heading(2, "Structured pruning after fine-tuning")]
    results = [record.task_pruning for record in done if record.task_pruning is not None]
    if not results:
        return "\n".join(parts + [paragraph("No run in this store is a task-structured or task-dynamic run.", "empty")])
    separate = [r for r in results if r.kind == "task-structured"]
    dynamic = [r for r in results if r.kind == "task-dynamic"]
    items = statistics.fmean(len(item.keys) for item in results[0].dense.languages)
    parts.append(source(
        f"{plural(len(separate), 'task-structured run')} and {plural(len(dynamic), 'task-dynamic run')} on {results[0].task}; "
        f"about {items:.0f} test items per language; the dense baseline is the fine-tuned unpruned model. Intervals: 95%, "
        "bootstrap over test items, paired (the same items for both sides); n.s.: the interval contains 0."))
    if separate:
        parts += [page.heading(3, "Change against the dense fine-tuned model"), change_table(separate),
                  page.heading(3, "Shared against per-language"),
                  versus_table(separate, "setting", "shared", "per-language",
                               "Per-language models (each ranked, pruned and fine-tuned again on its language) against the shared "
                               "model, on each language's items"),
                  page.heading(3, "Gradient against L0 at equal sparsity"),
                  versus_table(separate, "importance", "gradient", "l0", "L0 gates trained with the weights against gate-gradient "
                               "importance, the same units, setting and sparsity")]
    parts += [page.heading(3, "Speed against size"), speed_table(separate + dynamic)]
    if dynamic:
        parts += [page.heading(3, "Dynamic Sparsification against separate pruning"), dynamic_table(dynamic, separate)]
    return "\n".join(parts)
