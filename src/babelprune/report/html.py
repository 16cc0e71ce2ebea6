"""`babelprune report`: one self-contained HTML page, and its PNG figures, from a results store.

The page (DIR/index.html) shows what the store holds; for each evaluation
set the dense scores per language, every run's per-language change against
its dense baseline with paired intervals, quality against sparsity, the
change per resource level, method against method; then the overlap of
per-language masks, speed against size, fine-tuning results (scores and
robustness gaps per sparsity, the low-resource analysis, the findings per
condition with intervals) and the failed runs. Every number is read or computed from the store's records.

Figures are PNG files in DIR/figures/, referenced relatively rather than
inlined as data URIs: the page stays small and quick to open, and each
figure can be reused on its own. The folder needs no network: style and the
table-sorting script are inline.

The folder is written whole or not at all (atomic_dir).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from babelprune.version import __version__
from babelprune.cache import atomic_dir
from babelprune.data.languages import RESOURCE_LEVELS, language_info
from babelprune.errors import BabelpruneError
from babelprune.records.eval import now
from babelprune.records.finetune import FinetuneResult
from babelprune.records.run import RunRecord
from babelprune.report import finetune_analysis as ft
from babelprune.report.figures import overlap_heatmap, plain, speed_size_chart
from babelprune.report.html_finetune import (
    findings_parts, language_table, resource_parts, robustness_parts, sparsity_text, split_by_embeddings,
)
from babelprune.report.html_li2022 import task_pruning_section
from babelprune.report.html_parts import GENERATOR, Cell, Page, document, integer, num, paragraph, plural, source, table
from babelprune.report.html_sets import evaluation_set_section
from babelprune.report.html_shrink import ShrinkSummary, shrink_summary_section
from babelprune.report.html_shrink import write_shrink_page  # noqa: F401  (the page `babelprune shrink` writes)
from babelprune.report.runs import (
    SIZE_FIELDS, SPEED_FIELDS, describe, eval_set_view, evaluation_sets, has_language_masks, mask_overlap, measured,
    numeric_measurements,
)
from babelprune.sweep.store import ResultsStore

INDEX = "index.html"


def write_report(store_path: Path, out: Path, overwrite: bool = False, shrink: ShrinkSummary | None = None) -> Path:
    """Write DIR/index.html and DIR/figures/*.png from the store at `store_path`; returns the page's path.

    `shrink`: a shrink search run after the sweep (the demo's last step), shown as the page's last section.
    """
    store_path, out = Path(store_path), Path(out)
    check_out(out, overwrite)
    with ResultsStore(store_path, create=False) as store:
        records = store.records()
    if not records:
        raise BabelpruneError(f"The store {store_path} holds no finished runs yet; report on it once a sweep has finished some.")
    with atomic_dir(out, overwrite=overwrite) as folder:
        (folder / INDEX).write_text(render(records, folder, str(store_path), shrink), encoding="utf-8")
    return out / INDEX


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing --out unless --overwrite, and never overwrite a folder that is not a report."""
    if not out.exists():
        return
    if not overwrite:
        raise BabelpruneError(f"Output folder {out} exists; choose another --out, remove it, or give --overwrite.")
    if not is_report_folder(out):
        raise BabelpruneError(f"{out} is not a folder written by `babelprune report`, so --overwrite leaves it alone; choose another --out.")


def is_report_folder(out: Path) -> bool:
    """Whether `out` is a folder that `babelprune report` wrote (its page names the generator)."""
    index = Path(out) / INDEX
    return Path(out).is_dir() and index.is_file() and f'content="{GENERATOR}"' in index.read_text(encoding="utf-8", errors="replace")


def render(records: list[RunRecord], folder: Path, store_name: str, shrink: ShrinkSummary | None = None) -> str:
    """The page's HTML; figures are drawn into `folder/figures` on the way."""
    page = Page(Path(folder))
    done = [r for r in records if r.state == "done"]
    failed = [r for r in records if r.state == "failed"]
    sections = [overview_section(page, records, store_name)]
    sections += [evaluation_set_section(page, eval_set_view(name, done)) for name in evaluation_sets(done)]
    sections += [mask_section(page, done), speed_section(page, done), finetune_section(page, done)]
    if any(record.task_pruning is not None for record in done):
        sections.append(task_pruning_section(page, done))
    if shrink is not None:
        sections.append(shrink_summary_section(page, shrink, "The smallest model for the calibration languages"))
    sections.append(failed_section(page, failed))
    subtitle = f"{store_name} · {len(done)} done and {len(failed)} failed runs · written {now()}"
    footer = (f"Written by babelprune {__version__} ({GENERATOR}) from {store_name}. Every number on this page is read or "
              "computed from the store's records; click a table header to sort by it.")
    return document("babelprune report", subtitle, page, "\n".join(sections), footer)


# --------------------------------------------------------------------------- what is in the store


def _counts(records: list[RunRecord], field: str) -> list[list]:
    keys = list(dict.fromkeys(getattr(r, field) for r in records))
    return [[key, integer(sum(1 for r in records if getattr(r, field) == key and r.state == "done")),
             integer(sum(1 for r in records if getattr(r, field) == key and r.state == "failed")),
             num(sum(r.seconds for r in records if getattr(r, field) == key), 1)] for key in keys]


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def overview_section(page: Page, records: list[RunRecord], store_name: str) -> str:
    finished = sorted(r.finished for r in records)
    environment = Counter((key, _text(value)) for r in records for key, value in r.environment.items())
    run_rows = []
    for record in records:
        info = describe(record)
        run_rows.append([record.key, record.sweep, record.kind, record.label, record.state, info.method,
                         Cell(info.amount, info.sparsity), info.setting or "-", ", ".join(record.evaluations) or "-",
                         num(record.seconds, 1), record.finished])
    return "\n".join([
        page.heading(2, "What is in the store"),
        source(f"{store_name}: {plural(len(records), 'run')}, finished between {finished[0]} and {finished[-1]}."),
        table(["kind", "done", "failed", "seconds"], _counts(records, "kind"), caption="Runs by kind", name="kinds"),
        table(["sweep", "done", "failed", "seconds"], _counts(records, "sweep"), caption="Runs by sweep", name="sweeps"),
        table(["setting", "value", "runs"], [[key, Cell(value, css="wrap"), integer(n)] for (key, value), n in sorted(environment.items())],
              caption="Environment the runs recorded (commit, versions, threads, host...)", name="environment")
        if environment else paragraph("No run recorded its environment.", "empty"),
        table(["key", "sweep", "kind", "label", "state", "method", "sparsity", "setting", "evaluation sets", "seconds", "finished"],
              run_rows, caption="Every run", name="runs"),
    ])


# --------------------------------------------------------------------------- masks, speed and size


def mask_section(page: Page, done: list[RunRecord]) -> str:
    parts = [page.heading(2, "Mask overlap between languages")]
    with_overlap = [(record, overlap) for record in done if (overlap := mask_overlap(record))]
    if not with_overlap:
        masked = [record.label for record in done if has_language_masks(record)]
        if masked:
            sentence = (f"Per-language masks were used by {plural(len(masked), 'run')} ({', '.join(masked)}), but no record "
                        "carries their overlap (mask_overlap in the pruning record or the measurements).")
            return "\n".join(parts + [paragraph(sentence, "empty")])
        return "\n".join(parts + [paragraph("No run in this store has per-language masks, so there is no overlap between "
                                            "languages to show.", "empty")])
    for record, overlap in with_overlap:
        languages = list(overlap)
        rows = [[a, *(num(overlap[a].get(b), 2) for b in languages)] for a in languages]
        parts += [
            page.heading(3, f"Mask overlap: {record.label}"),
            source(f"mask_overlap of run {record.key}: Jaccard overlap of the weights each language's mask prunes, all pruned "
                   "linears pooled (1: the same weights)."),
            page.figure(lambda path, o=overlap, r=record: overlap_heatmap(o, r.label, path), f"overlap-{record.label}",
                        f"mask overlap of {record.label}", f"Overlap of the per-language masks of {record.label}."),
            table(["language", *languages], rows, name=f"overlap {record.label}"),
        ]
    return "\n".join(parts)


def _measurement_columns(rows: list[dict[str, float]]) -> list[str]:
    known = [name for names in (*SIZE_FIELDS, *SPEED_FIELDS, ("prune_seconds",)) for name in names]
    present = {key for row in rows for key in row}
    return [key for key in known if key in present] + sorted(present - set(known))


def _measurement_cell(value: float | None) -> Cell:
    """Whole numbers from 1,000 up (bytes, parameters) with separators, anything else to two decimals."""
    if value is not None and abs(value) >= 1000 and float(value).is_integer():
        return integer(value)
    return num(value, 2)


def speed_section(page: Page, done: list[RunRecord]) -> str:
    parts = [page.heading(2, "Speed and size")]
    measured_runs = [(record, numeric_measurements(record)) for record in done if numeric_measurements(record)]
    if not measured_runs:
        return "\n".join(parts + [paragraph("No run in this store records measurements of speed or size.", "empty")])
    columns = _measurement_columns([values for _, values in measured_runs])
    rows = [[record.label, record.kind, *(_measurement_cell(values.get(key)) for key in columns)] for record, values in measured_runs]
    parts += [source(f"The measurements of {plural(len(measured_runs), 'run')}, as they recorded them."),
              table(["run", "kind", *(key.replace("_", " ") for key in columns)], rows, name="measurements")]
    for sizes in SIZE_FIELDS:
        for speeds in SPEED_FIELDS:
            points = [(record.label, measured(values, sizes), measured(values, speeds)) for record, values in measured_runs]
            points = [(label, size, speed) for label, size, speed in points if size and speed]
            if points:
                size_name, speed_name = points[0][1][0], points[0][2][0]
                drawn = [(plain(label), size[1], speed[1]) for label, size, speed in points]
                parts.append(page.figure(lambda path, d=drawn, s=size_name, v=speed_name: speed_size_chart(d, s, v, path),
                                         f"speed-{size_name}-{speed_name}", f"{speed_name} against {size_name}",
                                         f"{speed_name.replace('_', ' ')} against {size_name.replace('_', ' ')}, one point per run."))
                return "\n".join(parts)
    parts.append(paragraph("No run records both a size (bytes or parameters) and a speed (tokens per second or latency), "
                           "so there is no speed-against-size chart.", "empty"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- fine-tuning


def _finetune_group(page: Page, results: list[FinetuneResult], title: str) -> list[str]:
    parts = [page.heading(3, title)]
    try:
        groups = ft.by_sparsity(results)
    except BabelpruneError as error:
        return parts + [paragraph(str(error), "empty")]
    metric = results[0].scores[0].metric if results[0].scores else "score"
    overall = ft.average_over_languages(results)
    levels = {level: ft.average_over_languages(results, keep=lambda lang, level=level: language_info(lang).resource == level)
              for level in RESOURCE_LEVELS}
    levels = {level: curve for level, curve in levels.items() if curve}
    gaps = {kind: ft.average_over_languages(results, kind, "gap") for kind in results[0].perturbations()}
    summary = [[Cell(sparsity_text(s), s), num(statistics.fmean(r.achieved_sparsity for r in group)), integer(len(group)),
                *(Cell(str(curve[s]), curve[s].mean, css="num") for curve in (overall, *levels.values(), *gaps.values()))]
               for s, group in groups.items()]
    seeds = sorted({r.seed for r in results})
    parts += [
        source(f"{plural(len(results), 'fine-tuning result')} (seeds {', '.join(map(str, seeds))}); {metric}, mean ± standard "
               "deviation over seeds; a gap is the clean score minus the perturbed one."),
        table(["sparsity", "achieved", "runs", "all languages", *(f"{lv} resource" for lv in levels), *(f"gap {k}" for k in gaps)],
              summary, name=f"finetune {title}"),
        language_table(results, f"finetune languages {title}"),
        *robustness_parts(results, title),
        *resource_parts(results, title),
    ]
    if any(s > 0 for s in groups):
        parts += [
            page.figure(lambda path: ft.change_scatter(results, path), f"finetune-{title}-change", "change against resource class",
                        "Each language's change from dense against its resource class (mean over seeds)."),
            page.figure(lambda path: ft.change_scatter(results, path, "cc100_gib"), f"finetune-{title}-pretraining",
                        "change against pretraining data", "Each language's change from dense against the size of its "
                        "CC-100 text, XLM-R's pretraining data (mean over seeds)."),
            page.figure(lambda path: ft.sparsity_curves(results, path), f"finetune-{title}-curves", "score against sparsity",
                        "Mean clean score per resource level, and the robustness gap per perturbation, against sparsity."),
        ]
    return parts


def finetune_section(page: Page, done: list[RunRecord]) -> str:
    parts = [page.heading(2, "Fine-tuning")]
    results = [record.finetune for record in done if record.finetune is not None]
    if not results:
        return "\n".join(parts + [paragraph("No run in this store holds a fine-tuning result.", "empty")])
    groups: dict[tuple, list[FinetuneResult]] = {}
    for result in results:
        groups.setdefault((result.model, result.task, result.mode), []).append(result)
    for (model, task, mode), members in groups.items():
        for suffix, subset in split_by_embeddings(members):  # dense and each embeddings setting
            parts += _finetune_group(page, subset, f"{model} on {task} ({mode}{suffix})")
        parts += findings_parts(page, members, f"{model} on {task} ({mode})")
    return "\n".join(parts)


# --------------------------------------------------------------------------- failures


def failed_section(page: Page, failed: list[RunRecord]) -> str:
    parts = [page.heading(2, "Failed runs")]
    if not failed:
        return "\n".join(parts + [paragraph("No run failed.", "empty")])
    rows = [[record.key, record.sweep, record.kind, record.label, record.finished, num(record.seconds, 1),
             Cell(record.error or "(no error recorded)", css="error")] for record in failed]
    return "\n".join(parts + [source(f"{plural(len(failed), 'run')} of the store failed; each row holds the error the run recorded."),
                              table(["key", "sweep", "kind", "label", "finished", "seconds", "error"], rows, name="failed")])

