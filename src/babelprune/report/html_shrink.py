"""The page `babelprune shrink` writes beside the chosen model: every candidate, per language, and the choice.

Per language, one chart of bytes (as served) against bits per byte on the dev half, every candidate a
point, the dense model and the chosen one marked and that language's Pareto front drawn; then the table
of every candidate with its worst upper interval end and which languages failed, and the chosen model's
check on the test half. Every string (language codes and names included) reaches the page through
`html_parts.esc`, and figure files are named by `Page.figure` (a slug and a number), never by a language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from babelprune.cache import atomic_write_text  # noqa: E402
from babelprune.report.figures import _save, plain  # noqa: E402
from babelprune.report.html_parts import Cell, Page, document, integer, link, num, paragraph, plural, source, table  # noqa: E402
from babelprune.shrink import ShrinkRecord, pareto_front  # noqa: E402

PAGE = "index.html"


def _language_chart(record: ShrinkRecord, language: str, path: Path) -> Path:
    """Bytes against bits per byte of one language: candidates, the front, dense and chosen."""
    dense = next(score for score in record.dense_dev if score.language == language)
    points = []  # (bytes, bits per byte, candidate)
    for candidate in record.candidates:
        for check in candidate.languages:
            if check.language == language:
                points.append((candidate.bytes, check.bits_per_byte, candidate))
    figure, axes = plt.subplots(figsize=(7.0, 4.2))
    passed = [p for p in points if p[2].passed]
    failed = [p for p in points if not p[2].passed]
    axes.scatter([p[0] for p in passed], [p[1] for p in passed], s=26, color="#1b6ca8", label="passed")
    axes.scatter([p[0] for p in failed], [p[1] for p in failed], s=26, color="#c0392b", marker="x", label="failed")
    front = [points[i] for i in pareto_front([(p[0], p[1]) for p in points] + [(record.dense_bytes, dense.bits_per_byte)])
             if i < len(points)]
    if front:
        axes.plot([p[0] for p in front], [p[1] for p in front], color="#555555", linewidth=1, label="Pareto front")
    axes.scatter([record.dense_bytes], [dense.bits_per_byte], s=60, color="#000000", marker="s", label="dense")
    axes.axhline(dense.bits_per_byte * (1 + record.settings.budget), color="#888888", linestyle="--", linewidth=1,
                 label=f"dense + {record.settings.budget:.1%}")
    chosen = [p for p in points if p[2].number == record.chosen]
    if chosen:
        axes.scatter([chosen[0][0]], [chosen[0][1]], s=140, facecolors="none", edgecolors="#27ae60", linewidths=2, label="chosen")
    for x, y, candidate in points:
        axes.annotate(str(candidate.number), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("bytes as served")
    axes.set_ylabel(f"bits per byte, {plain(language)} (dev half)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def _interval_text(interval) -> str:
    return f"[{interval[0]:+.2%}, {interval[1]:+.2%}]" if interval is not None else "-"


def _chosen_parts(record: ShrinkRecord, chosen) -> list[str]:
    """The chosen candidate, its bytes against the dense model's, and its check on the test half."""
    verdict = "holds" if record.test_passed else "does NOT hold"
    return [
        paragraph(f"Candidate {chosen.number}: {chosen.label}, {chosen.bytes:,} bytes as served "
                  f"({chosen.bytes / record.dense_bytes:.1%} of the dense model's {record.dense_bytes:,})."),
        paragraph(f"On the test half, text the search never read, the budget of {record.settings.budget:.2%} {verdict}."),
        table(
            ["language", "dense bits/byte", "bits/byte", "relative increase", "95% interval", "within budget"],
            [[check.language, num(check.dense_bits_per_byte), num(check.bits_per_byte), num(100 * check.relative, 2, signed=True),
              Cell(_interval_text(check.interval), check.interval[1] if check.interval else float("nan"), css="num"),
              "yes" if check.passed else "no"] for check in record.test],
            caption="The chosen model on the test half (relative increase in %)", name="test",
        ),
    ]


def render_shrink(record: ShrinkRecord, folder: Path) -> str:
    page = Page(folder)
    settings = record.settings
    chosen = next((c for c in record.candidates if c.number == record.chosen), None)
    parts = [page.heading(2, "The chosen model")]
    if chosen is not None:
        parts += _chosen_parts(record, chosen)
    parts.append(page.heading(2, "Every candidate"))
    rows = []
    for candidate in record.candidates:
        worst = max((check.interval[1] for check in candidate.languages if check.interval is not None), default=None)
        rows.append([
            integer(candidate.number), candidate.label, integer(candidate.bytes),
            num(100 * worst, 2, signed=True) if worst is not None else num(None),
            "yes" if candidate.passed else "no",
            ", ".join(candidate.failed_languages) or (candidate.error or ""),
            "yes" if candidate.number in record.front else "",
        ])
    parts.append(table(["#", "candidate", "bytes", "worst upper end (%)", "passed", "failed languages", "on the front"], rows,
                       caption="Dev half: upper end of the paired 95% interval of the relative bits-per-byte increase", name="candidates"))
    parts.append(page.heading(2, "Per language"))
    for language in settings.languages:
        parts.append(page.heading(3, language))
        parts.append(page.figure(lambda path, lang=language: _language_chart(record, lang, path), f"language-{language}",
                                 f"bytes against bits per byte for {language}",
                                 f"{language}: every candidate's bytes and dev-half bits per byte, the Pareto front, "
                                 "the dense model (square) and the chosen one (circle)."))
    parts.append(source(f"shrink.json: {len(record.candidates)} candidates of {settings.model}, {record.sampler} sampler, seed {settings.seed}; "
                        f"corpus {settings.corpus}, {settings.segments} segments per language and half."))
    title = f"shrink: {settings.model}"
    subtitle = (f"languages {', '.join(settings.languages)}; budget {settings.budget:.2%} on the upper end of each "
                f"language's paired 95% interval; goal {settings.goal}")
    return document(title, subtitle, page, "\n".join(parts), f"babelprune {record.babelprune_version}, {record.finished}")


def write_shrink_page(record: ShrinkRecord, folder: Path) -> Path:
    """Write `index.html` (and its figures) for a shrink record into `folder`; returns the page."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PAGE
    atomic_write_text(path, render_shrink(record, folder))
    return path





# ----- a shrink search shown inside a sweep's report (the demo's last step) ---------------------------


@dataclass(frozen=True)
class ShrinkSummary:
    """What a sweep's report shows of a shrink search run after it: the record, or the sentence of why none was chosen."""

    record: ShrinkRecord | None  # None when the search chose nothing
    page: str | None = None  # the shrink page's address relative to the report folder
    refusal: str | None = None  # the one sentence when no candidate was chosen
    speeds: list[Any] = field(default_factory=list)  # SpeedReports: the dense model, then the chosen one (PyTorch)
    gguf_speed: Any = None  # the chosen GGUF file's LlamaCppSpeedReport, when it is one
    notes: list[str] = field(default_factory=list)  # what was left out or substituted, and how to get it


def shrink_summary_section(page: Page, summary: ShrinkSummary, title: str) -> str:
    """A section of the sweep report: the chosen model, its per-language cost on the test half and its speed."""
    parts = [page.heading(2, title)]
    record = summary.record
    if record is None:
        parts.append(paragraph(f"No model was chosen: {summary.refusal}", "empty"))
        return "\n".join(parts + [paragraph(note) for note in summary.notes])
    settings = record.settings
    passed = sum(candidate.passed for candidate in record.candidates)
    parts.append(paragraph(
        f"`babelprune shrink` searched {plural(len(record.candidates), 'candidate')} of {settings.model} (trims: "
        f"{', '.join(record.space.trims)}; widths: {', '.join(record.space.widths)}; quantizations: "
        f"{', '.join(record.space.quants)}) for the smallest whose every language of {', '.join(settings.languages)} keeps "
        f"the upper end of its paired 95% interval of relative bits-per-byte increase within {settings.budget:.2%} on the dev "
        f"half of the {settings.corpus} evaluation split ({settings.segments} segments of at most {settings.seq_len} tokens "
        f"per language); {passed} passed."
    ))
    chosen = next(c for c in record.candidates if c.number == record.chosen)
    parts += _chosen_parts(record, chosen)
    if summary.speeds:
        dense = summary.speeds[0]
        rows = []
        for name, report in zip(("dense", "chosen"), summary.speeds):
            rows.append([name, integer(report.bytes_on_disk), integer(report.n_parameters),
                         num(report.throughput_tokens_per_s, 0), num(report.throughput_tokens_per_s / dense.throughput_tokens_per_s, 2),
                         num(1000 / report.generate_ms_per_token, 1) if report.generate_ms_per_token else num(None)])
        parts.append(table(["model", "bytes", "parameters", "evaluation tokens/s", "x dense", "generation tokens/s (batch 1)"], rows,
                           caption=f"Speed in PyTorch on the {dense.threads}-thread CPU (median of {dense.runs} runs after "
                                   f"{dense.warmup} warm-up)", name="shrink speed"))
    if summary.gguf_speed is not None:
        gguf = summary.gguf_speed
        parts.append(paragraph(f"The chosen model as a {gguf.file_type} GGUF file ({gguf.bytes_on_disk:,} bytes) in llama.cpp at batch 1: "
                               f"{gguf.prompt_tokens_per_s:,.0f} prompt and {gguf.generate_tokens_per_s or 0:,.1f} generation tokens per second."))
    parts += [paragraph(note) for note in summary.notes]
    if summary.page:
        parts.append(link(summary.page, "Every candidate, per language: the shrink page"))
    return "\n".join(parts)
