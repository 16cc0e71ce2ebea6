"""The fine-tuning tables of the HTML report: robustness, resources, and the findings per condition with intervals.

The numbers come from `babelprune.report.finetune_analysis` (means over
seeds: each language's score or gap per sparsity, the mean gap per
perturbation, the low-resource analysis with its Spearman correlations and
the languages that gain and lose) and `babelprune.report.finetune_findings`
(per condition, with intervals: one summary table of the conditions, one
table of each language's relative change, one table per perturbation of the
gap differences, and the training sizes when the runs asked for sizes per
language); this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence

from babelprune.data.languages import language_info
from babelprune.errors import BabelpruneError
from babelprune.records.finetune import FinetuneResult
from babelprune.report import finetune_analysis as ft
from babelprune.report.finetune_findings import Estimate, condition_findings, condition_of
from babelprune.report.html_parts import Cell, Page, integer, paragraph, source, table

HOW = ("95% intervals from a bootstrap over seeds (paired by seed, one draw for every language) and test items "
       "(paired: the same items dense and sparse, clean and perturbed), 2,000 resamples; n.s.: the interval contains 0. "
       "Spearman p-values from 10,000 permutations of the changes over languages.")


def sparsity_text(value: float) -> str:
    return f"{value:.0%}" if value else "dense"


def language_table(results: Sequence[FinetuneResult], name: str, perturbation: str | None = None,
                   field: str = "value") -> str:
    """Each language's score (or, field="gap", its gap under `perturbation`) at each sparsity, mean ± std over seeds."""
    scores = ft.language_scores(results, perturbation, field)
    rows = [[lang, language_info(lang).resource, *(Cell(str(scores[s][lang]), scores[s][lang].mean, css="num") for s in scores)]
            for lang in scores[0.0]]
    return table(["language", "resource", *(sparsity_text(s) for s in scores)], rows, name=name)


def robustness_parts(results: Sequence[FinetuneResult], title: str) -> list[str]:
    """The mean gap of each perturbation per sparsity, then each language's gap: none without perturbed sets."""
    found = ft.robustness(results)
    if not found:
        return []
    rows = [[r.perturbation, Cell(sparsity_text(r.sparsity), r.sparsity), Cell(str(r.gap), r.gap.mean, css="num"),
             Cell(f"{r.share:.0%}" if r.share is not None else "-", r.share, css="num"), integer(r.smaller)] for r in found]
    parts = [
        source("Robustness: the gap (clean - perturbed score) per perturbation, mean ± std over seeds of the mean over "
               "languages, also as a share of the clean score, and how many languages have a smaller gap than dense. "
               "A model near chance has nothing left to lose: read a gap with its clean score."),
        table(["perturbation", "sparsity", "mean gap", "gap / clean score", "languages with a smaller gap than dense"], rows,
              name=f"finetune robustness {title}"),
    ]
    for kind in results[0].perturbations():
        parts += [source(f"Each language's gap under {kind} (clean - perturbed), mean ± std over seeds."),
                  language_table(results, f"finetune gaps {kind} {title}", kind, "gap")]
    return parts


RHO_QUANTITIES = {"joshi_class": "rho with Joshi class", "cc100_gib": "rho with CC-100 size",
                  "train_examples": "rho with training examples"}


def _rho_cell(rho: float | None) -> Cell:
    return Cell("n/a" if rho is None else f"{rho:+.2f}", rho, css="num")


def _changed_cell(langs: list[str], changes: dict[str, float]) -> Cell:
    """"sw +15.0, id +5.0": languages with their change in points, sorted by how many there are."""
    return Cell(", ".join(f"{lang} {100 * changes[lang]:+.1f}" for lang in langs) or "none", len(langs))


def resource_parts(results: Sequence[FinetuneResult], title: str) -> list[str]:
    """The low-resource analysis: each sparsity's change against the languages' resources, and who gains and loses."""
    found = ft.resource_analysis(results)
    if not found:
        return []
    metric = results[0].scores[0].metric if results[0].scores else "score"
    languages = len(found[0].changes)
    critical = ft.critical_rho(languages)
    rows = [[Cell(sparsity_text(a.sparsity), a.sparsity), Cell(f"{100 * a.mean_change:+.1f}", a.mean_change, css="num"),
             *(_rho_cell(a.correlations[q]) for q in RHO_QUANTITIES), _changed_cell(a.gain, a.changes),
             _changed_cell(a.loss, a.changes)] for a in found]
    significance = (f" With {languages} languages, |rho| above about {critical:.2f} differs from 0 at the 5% level "
                    "(normal approximation, 1.96 / sqrt(n - 1)).") if critical is not None else ""
    return [
        source(f"Low-resource analysis: each language's change of clean {metric} from dense (sparse - dense, means over "
               "seeds, in points) against its resources: Spearman rho with its Joshi class, the size of its CC-100 text "
               "(the pretraining data of XLM-R, which the e5 encoders start from) and its training examples; n/a: fewer "
               "than three distinct values. A positive rho: higher-resource languages fare better (or lose less), a "
               f"negative one: lower-resource languages do.{significance} Gaining and losing languages are listed largest "
               "change first."),
        table(["sparsity", "mean change (points)", *RHO_QUANTITIES.values(), "languages gaining", "languages losing"], rows,
              name=f"finetune resources {title}"),
    ]


def estimate_cell(estimate: Estimate, scale: float = 100.0, unit: str = "%") -> Cell:
    """"-3.1% [-6.0, -0.4]": the value and its interval times `scale`; n.s. when the interval contains 0."""
    text = f"{scale * estimate.value:+.1f}{unit}"
    if estimate.interval is not None:
        low, high = (scale * bound for bound in estimate.interval)
        text += f" [{low:+.1f}, {high:+.1f}]"
    note = "n.s." if estimate.interval is not None and not estimate.resolved else ""
    return Cell(text, estimate.value, note=note, css="num")


def split_by_embeddings(results: Sequence[FinetuneResult]) -> list[tuple[str, list[FinetuneResult]]]:
    """The results as one group, or, when some pruned the embeddings, two groups that share the dense runs."""
    if not any(condition_of(r).embeddings for r in results):
        return [("", list(results))]
    dense = [r for r in results if r.sparsity == 0]
    kept = [r for r in results if r.sparsity > 0 and not condition_of(r).embeddings]
    pruned = [r for r in results if condition_of(r).embeddings]
    return [(", embeddings kept", dense + kept), (", embeddings pruned", dense + pruned)]


def _training_sizes(results: Sequence[FinetuneResult], title: str) -> list[str]:
    asked = results[0].train_asked
    if not asked:
        return []
    used = results[0].train_examples
    short = [lang for lang in asked if used.get(lang, 0) < asked[lang]]
    rows = [[lang, language_info(lang).resource, integer(asked[lang]), integer(used.get(lang, 0))] for lang in asked]
    note = (f"{', '.join(short)} had fewer training examples than asked and trained on all they had." if short
            else "Every language trained on the number of examples asked.")
    return [source(f"Training examples per language (train_per_language), as asked and as used. {note}"),
            table(["language", "resource", "asked", "used"], rows, name=f"finetune training sizes {title}")]


def findings_parts(page: Page, results: Sequence[FinetuneResult], title: str) -> list[str]:
    """Headed tables of the findings of one group of fine-tuning results (model, task, mode)."""
    parts = [page.heading(3, f"Findings by condition: {title}")]
    try:
        found = condition_findings(results)
    except BabelpruneError as error:
        return parts + [paragraph(str(error), "empty")]
    if not found:
        return parts + [paragraph("Only dense runs: there is no pruned condition to compare.", "empty")]
    metric = results[0].scores[0].metric if results[0].scores else "score"
    levels = list(dict.fromkeys(level for item in found for level in item.levels))
    quantities = list(dict.fromkeys(c.quantity for item in found for c in item.correlations))
    rows = []
    for item in found:
        rhos = {c.quantity: c for c in item.correlations}
        rows.append([
            Cell(item.condition.label, item.condition.sparsity + 0.001 * item.condition.embeddings),
            ", ".join(map(str, item.seeds)),
            *(estimate_cell(item.levels[level]) if level in item.levels else Cell("-") for level in levels),
            *(Cell(f"{rhos[q].rho:+.2f} (p = {rhos[q].p_value:.3f})", rhos[q].rho, css="num") if q in rhos else Cell("-")
              for q in quantities),
        ])
    parts += [
        source(f"Relative change of clean {metric} from the dense runs, (sparse - dense) / dense, each side the mean over "
               f"seeds and test items; resource levels average their languages. {HOW}"),
        table(["condition", "seeds", *(f"{level} resource" for level in levels), *(RHO_QUANTITIES[q] for q in quantities)], rows,
              name=f"findings {title}"),
    ]
    langs = list(found[0].changes)
    per_language = [[lang, language_info(lang).resource, *(estimate_cell(item.changes[lang]) for item in found)] for lang in langs]
    header = ["language", "resource", *(item.condition.label for item in found)]
    parts += [source(f"Each language's relative change of clean {metric} from dense, with its interval."),
              table(header, per_language, name=f"findings languages {title}")]
    for kind in found[0].gap_differences:
        rows = [[lang, language_info(lang).resource,
                 *(estimate_cell(item.gap_differences[kind][lang], unit=" pt") for item in found if kind in item.gap_differences)]
                for lang in langs]
        parts += [source(f"Robustness to {kind}: the sparse gap (clean - perturbed) minus the dense gap, in {metric} points; "
                         "positive: pruning widened the gap (less robust), negative: narrowed it."),
                  table(header, rows, name=f"findings gap {kind} {title}")]
    return parts + _training_sizes(results, title)
