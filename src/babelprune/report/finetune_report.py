"""Analysis of a fine-tuning sweep: dense against each sparsity, per language, clean and perturbed.

Given the `FinetuneResult`s of a sweep (several final sparsities, several
seeds, sparsity 0 being the dense baseline), this module computes:

- each language's score at each sparsity, as mean ± standard deviation over
  seeds (sample std, n - 1);
- robustness: the gap (clean - perturbed) per perturbation, averaged over
  languages, dense against sparse, and per language;
- the low-resource analysis: each language's change (sparse - dense, means
  over seeds) against its resource level (Joshi et al. class) and against
  the amount of its data, with Spearman correlations: the XLM-R pretraining
  data (CC-100 size, which the e5 encoders inherit from XLM-R), and the
  task's training examples in that language when at least three languages
  differ in it (in zero-shot mode only the source language has any);
- which languages gain and which lose.

`write_finetune_report` writes all of it as Markdown with PNG figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from babelprune.cache import atomic_write_text  # noqa: E402
from babelprune.data.languages import RESOURCE_LEVELS, language_info  # noqa: E402
from babelprune.errors import BabelpruneError  # noqa: E402
from babelprune.records.finetune import FinetuneResult  # noqa: E402
from babelprune.report.compare import spearman  # noqa: E402

# Size in GiB of each language's CC-100 text, the pretraining data of XLM-R
# (Conneau et al. 2020, appendix table 6), which multilingual-e5 starts from.
CC100_GIB: dict[str, float] = {
    "en": 300.8, "ru": 278.0, "id": 148.3, "vi": 137.3, "fa": 111.6, "uk": 84.6, "sv": 85.0, "th": 71.7,
    "ja": 69.3, "de": 66.6, "ro": 61.4, "hu": 58.4, "bg": 57.5, "fr": 56.8, "fi": 54.3, "ko": 54.2,
    "es": 53.3, "pt": 49.1, "no": 49.0, "el": 46.9, "zh": 46.9, "zh-Hans": 46.9, "zh-Hant": 16.6,
    "da": 45.6, "pl": 44.6, "he": 31.6, "it": 30.2, "nl": 29.3, "ar": 28.0, "sk": 23.2, "tr": 20.9,
    "hr": 20.5, "hi": 20.2, "cs": 16.3, "lt": 13.7, "ta": 12.2, "sl": 10.3, "ca": 10.1, "ka": 9.1,
    "sr": 9.1, "lv": 8.8, "ms": 8.5, "bn": 8.4, "ml": 7.6, "az": 6.5, "kk": 6.4, "et": 6.1, "ur": 5.7,
    "hy": 5.5, "sq": 5.4, "mk": 4.8, "te": 4.7, "be": 4.3, "ne": 3.8, "si": 3.6, "kn": 3.3, "is": 3.2,
    "tl": 3.1, "mn": 3.0, "gl": 2.9, "mr": 2.8, "la": 2.5, "eu": 2.0, "gu": 1.9, "sw": 1.6, "my": 1.6,
    "km": 1.5, "af": 1.3, "ky": 1.2, "eo": 0.9, "am": 0.8, "pa": 0.8, "cy": 0.8, "ps": 0.7, "uz": 0.7,
    "lo": 0.6, "or": 0.6, "ga": 0.5, "ku": 0.4, "so": 0.4, "sd": 0.4, "ug": 0.4, "ha": 0.3, "yi": 0.3,
    "sa": 0.3, "jv": 0.2, "mg": 0.2, "fy": 0.2, "gd": 0.1, "br": 0.1, "bs": 0.1, "xh": 0.1, "su": 0.1,
    "om": 0.1, "as": 0.1,
}  # fmt: skip


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float  # sample standard deviation over seeds (0 for a single seed)
    n: int

    def __str__(self) -> str:
        mean = round(self.mean, 3) + 0.0  # + 0.0 turns -0.0 into 0.0
        return f"{mean:.3f} ± {self.std:.3f}" if self.n > 1 else f"{mean:.3f}"


def mean_std(values: Sequence[float]) -> MeanStd:
    if not values:
        raise BabelpruneError("No values to average; check that the results hold the languages asked for.")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return MeanStd(statistics.fmean(values), std, len(values))


def by_sparsity(results: Sequence[FinetuneResult]) -> dict[float, list[FinetuneResult]]:
    """Results grouped by final sparsity, in increasing order; there must be a dense group (0)."""
    if not results:
        raise BabelpruneError("No fine-tuning results to report on; run a sweep first.")
    groups: dict[float, list[FinetuneResult]] = {}
    for result in sorted(results, key=lambda r: (r.sparsity, r.seed)):
        groups.setdefault(result.sparsity, []).append(result)
    if 0.0 not in groups:
        raise BabelpruneError("The results hold no dense run (sparsity 0) to compare with; include one in the sweep.")
    return groups


def common_languages(results: Sequence[FinetuneResult]) -> list[str]:
    """Languages scored in every result, in the first result's order."""
    shared = set.intersection(*(set(r.languages()) for r in results))
    return [lang for lang in results[0].languages() if lang in shared]


def _value(result: FinetuneResult, lang: str, perturbation: str | None, field: str) -> float:
    score = result.score(lang, perturbation)
    return score.value if field == "value" else float(score.gap or 0.0)


def language_scores(
    results: Sequence[FinetuneResult], perturbation: str | None = None, field: str = "value"
) -> dict[float, dict[str, MeanStd]]:
    """{sparsity: {language: mean ± std over seeds}} of the score (or, field="gap", of the gap)."""
    langs = common_languages(results)
    return {
        sparsity: {lang: mean_std([_value(r, lang, perturbation, field) for r in group]) for lang in langs}
        for sparsity, group in by_sparsity(results).items()
    }


def language_changes(
    results: Sequence[FinetuneResult], sparsity: float, perturbation: str | None = None, field: str = "value"
) -> dict[str, float]:
    """{language: mean over seeds at `sparsity` - mean over seeds of the dense runs}."""
    table = language_scores(results, perturbation, field)
    if sparsity not in table:
        raise BabelpruneError(f"No results at sparsity {sparsity}; the sweep has {', '.join(map(str, table))}.")
    return {lang: table[sparsity][lang].mean - table[0.0][lang].mean for lang in table[0.0]}


def average_over_languages(
    results: Sequence[FinetuneResult], perturbation: str | None = None, field: str = "value",
    keep: Callable[[str], bool] = lambda lang: True,
) -> dict[float, MeanStd]:
    """{sparsity: mean ± std over seeds of the per-seed average over (kept) languages}."""
    langs = [lang for lang in common_languages(results) if keep(lang)]
    if not langs:
        return {}
    return {
        sparsity: mean_std([statistics.fmean(_value(r, lang, perturbation, field) for lang in langs) for r in group])
        for sparsity, group in by_sparsity(results).items()
    }


def training_counts(results: Sequence[FinetuneResult], langs: Sequence[str]) -> dict[str, int]:
    counts = results[0].train_examples
    return {lang: counts.get(lang, 0) for lang in langs}


def correlations(changes: dict[str, float], train_counts: dict[str, int]) -> dict[str, float | None]:
    """Spearman correlation of each language's change with its Joshi class, CC-100 size and training examples.

    None where fewer than three languages have the quantity, or fewer than
    three distinct values of it.
    """

    def rho(quantity: dict[str, float]) -> float | None:
        langs = [lang for lang in changes if quantity.get(lang) is not None]
        if len(langs) < 3 or len({quantity[lang] for lang in langs}) < 3:
            return None
        return spearman([quantity[lang] for lang in langs], [changes[lang] for lang in langs])

    joshi = {lang: language_info(lang).joshi_class for lang in changes}
    return {
        "joshi_class": rho({lang: float(c) for lang, c in joshi.items() if c is not None}),
        "cc100_gib": rho({lang: CC100_GIB[lang] for lang in changes if lang in CC100_GIB}),
        "train_examples": rho({lang: float(n) for lang, n in train_counts.items()}),
    }


def gainers_and_losers(changes: dict[str, float]) -> tuple[list[str], list[str]]:
    """Languages whose score rose (largest gain first) and fell (largest loss first)."""
    gain = sorted((lang for lang, c in changes.items() if c > 0), key=lambda lang: -changes[lang])
    loss = sorted((lang for lang, c in changes.items() if c < 0), key=lambda lang: changes[lang])
    return gain, loss


# --------------------------------------------------------------------------- figures

_SPARSITY_COLOURS = plt.get_cmap("viridis")


def _colour(index: int, count: int):
    return _SPARSITY_COLOURS(0.15 + 0.7 * index / max(1, count - 1))


def change_scatter(results: Sequence[FinetuneResult], path: Path, against: str = "joshi_class") -> Path:
    """Each language's change from dense (clean score) against its Joshi class or log CC-100 size."""
    sparsities = [s for s in by_sparsity(results) if s > 0]
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for index, sparsity in enumerate(sparsities):
        changes = language_changes(results, sparsity)
        if against == "joshi_class":
            classes = {lang: language_info(lang).joshi_class for lang in changes}
            points = [(classes[lang], c, lang) for lang, c in changes.items() if classes[lang] is not None]
            offset = (index - (len(sparsities) - 1) / 2) * 0.12  # side by side within each class
            xs = [x + offset for x, _, _ in points]
        else:
            points = [(CC100_GIB[lang], c, lang) for lang, c in changes.items() if lang in CC100_GIB]
            xs = [math.log10(x) for x, _, _ in points]
        ys = [100 * c for _, c, _ in points]
        axes.scatter(xs, ys, s=22, color=_colour(index, len(sparsities)), label=f"{sparsity:.0%} sparse")
        if index == len(sparsities) - 1:
            for x, y, (_, _, lang) in zip(xs, ys, points):
                axes.annotate(lang, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    axes.axhline(0, color="black", linewidth=0.6)
    axes.set_xlabel("Joshi et al. resource class" if against == "joshi_class" else "log10 CC-100 size (GiB)")
    metric = results[0].scores[0].metric
    axes.set_ylabel(f"{metric} change from dense (points)")
    axes.set_title("Per-language change under gradual pruning (mean over seeds)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def _curve(axes, curve: dict[float, MeanStd], label: str) -> None:
    values = list(curve.values())
    xs = [100 * sparsity for sparsity in curve]
    axes.errorbar(xs, [m.mean for m in values], yerr=[m.std for m in values], marker="o", capsize=3, label=label)


def sparsity_curves(results: Sequence[FinetuneResult], path: Path) -> Path:
    """Mean clean score per resource level, and mean gap per perturbation, against sparsity."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for level in RESOURCE_LEVELS:
        curve = average_over_languages(results, keep=lambda lang, level=level: language_info(lang).resource == level)
        if curve:
            _curve(left, curve, f"{level} resource")
    left.set_xlabel("final sparsity (%)")
    left.set_ylabel(f"clean {results[0].scores[0].metric}")
    left.legend(fontsize=8)
    for kind in results[0].perturbations():
        curve = average_over_languages(results, kind, "gap")
        _curve(right, curve, kind)
    right.set_xlabel("final sparsity (%)")
    right.set_ylabel("gap: clean - perturbed")
    right.axhline(0, color="black", linewidth=0.6)
    if results[0].perturbations():  # a legend with no entries only warns
        right.legend(fontsize=8)
    for axes in (left, right):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


# --------------------------------------------------------------------------- Markdown


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def summary_lines(results: Sequence[FinetuneResult]) -> list[str]:
    groups = by_sparsity(results)
    kinds = results[0].perturbations()
    overall = average_over_languages(results)
    per_level = {
        level: average_over_languages(results, keep=lambda lang, level=level: language_info(lang).resource == level)
        for level in RESOURCE_LEVELS
    }
    gaps = {kind: average_over_languages(results, kind, "gap") for kind in kinds}
    levels = [level for level in RESOURCE_LEVELS if per_level[level]]
    header = ["sparsity", "achieved", "runs", "all languages", *(f"{lv} resource" for lv in levels), *(f"gap {k}" for k in kinds)]
    rows = []
    for sparsity, group in groups.items():
        achieved = statistics.fmean(r.achieved_sparsity for r in group)
        rows.append([
            f"{sparsity:.0%}" if sparsity else "dense", f"{achieved:.3f}", len(group), overall[sparsity],
            *(per_level[lv][sparsity] for lv in levels), *(gaps[k][sparsity] for k in kinds),
        ])
    return _table(header, rows)


def robustness_lines(results: Sequence[FinetuneResult]) -> list[str]:
    """Mean gap per perturbation and sparsity, also as a share of the clean score, and how many languages improve.

    A model at chance level has nothing left to lose, so its gap is small:
    compare gaps together with the clean scores, or as a share of them.
    """
    clean = average_over_languages(results)
    rows = []
    for kind in results[0].perturbations():
        gaps = average_over_languages(results, kind, "gap")
        per_language = language_scores(results, kind, "gap")
        dense = per_language[0.0]
        for sparsity, gap in gaps.items():
            smaller = "" if sparsity == 0 else sum(per_language[sparsity][lang].mean < dense[lang].mean for lang in dense)
            share = gap.mean / clean[sparsity].mean if clean[sparsity].mean else float("nan")
            rows.append([kind, f"{sparsity:.0%}" if sparsity else "dense", gap, f"{share:.0%}", smaller])
    header = ["perturbation", "sparsity", "mean gap", "gap / clean score", "languages with a smaller gap than dense"]
    return _table(header, rows)


def language_lines(results: Sequence[FinetuneResult], perturbation: str | None = None, field: str = "value") -> list[str]:
    table = language_scores(results, perturbation, field)
    sparsities = list(table)
    header = ["language", "resource (class)", *(f"{s:.0%}" if s else "dense" for s in sparsities)]
    rows = []
    for lang in table[0.0]:
        info = language_info(lang)
        rows.append([f"{lang} ({info.name})", f"{info.resource} ({info.joshi_class})", *(table[s][lang] for s in sparsities)])
    return _table(header, rows)


def analysis_lines(results: Sequence[FinetuneResult]) -> list[str]:
    langs = common_languages(results)
    counts = training_counts(results, langs)
    lines = ["Spearman correlation of each language's change (sparse - dense, clean score) with:", ""]
    rows, verdicts = [], []
    for sparsity in [s for s in by_sparsity(results) if s > 0]:
        changes = language_changes(results, sparsity)
        rho = correlations(changes, counts)
        gain, loss = gainers_and_losers(changes)
        mean_change = statistics.fmean(changes.values())
        rows.append([
            f"{sparsity:.0%}", f"{100 * mean_change:+.1f}", _fmt(rho["joshi_class"]), _fmt(rho["cc100_gib"]),
            _fmt(rho["train_examples"]), len(gain), len(loss),
        ])
        gained = ", ".join(f"{lang} {100 * changes[lang]:+.1f}" for lang in gain) or "none"
        lost = ", ".join(f"{lang} {100 * changes[lang]:+.1f}" for lang in loss) or "none"
        verdicts += [f"- **{sparsity:.0%}**: gain: {gained}; lose: {lost}."]
    header = ["sparsity", "mean change (points)", "Joshi class", "CC-100 size", "training examples",
              "languages gaining", "languages losing"]
    lines += _table(header, rows)
    critical = 1.96 / math.sqrt(len(langs) - 1) if len(langs) > 1 else float("nan")
    lines += [
        "A positive correlation means that higher-resource languages change for the better (or lose less),",
        "a negative one that lower-resource languages do. n/a: fewer than three distinct values.",
        f"With {len(langs)} languages, |rho| above about {critical:.2f} differs from 0 at the 5% level",
        "(normal approximation, 1.96 / sqrt(n - 1)).", "",
    ]
    return lines + ["Changes per language (points, mean over seeds):", "", *verdicts, ""]


def write_finetune_report(results: Sequence[FinetuneResult], out_dir: Path, title: str | None = None) -> Path:
    """Write ``finetune_report.md`` and its PNG figures into `out_dir`; return the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = results[0]
    groups = by_sparsity(results)
    seeds = sorted({r.seed for r in results})
    change_scatter(results, out_dir / "change_vs_resource.png", "joshi_class")
    change_scatter(results, out_dir / "change_vs_pretraining.png", "cc100_gib")
    sparsity_curves(results, out_dir / "sparsity_curves.png")
    lines = [
        f"# {title or f'{first.model} on {first.task}: gradual magnitude pruning during fine-tuning'}", "",
        f"Mode {first.mode}, trained on {', '.join(first.train_languages) or 'nothing'}; "
        f"{len(common_languages(results))} evaluation languages; sparsities {', '.join(f'{s:.0%}' for s in groups)}; "
        f"seeds {', '.join(map(str, seeds))}; {first.steps} steps per run. Values are {first.scores[0].metric}, "
        "mean ± std over seeds.", "",
        "## Summary", "", *summary_lines(results),
        "## Robustness", "", *robustness_lines(results),
        "## Clean score per language", "", *language_lines(results),
    ]
    for kind in first.perturbations():
        lines += [f"## Robustness gap per language: {kind} (clean - perturbed)", "", *language_lines(results, kind, "gap")]
    lines += [
        "## Low-resource analysis", "", *analysis_lines(results),
        "![change vs resource class](change_vs_resource.png)", "",
        "![change vs pretraining data](change_vs_pretraining.png)", "",
        "![score and gaps vs sparsity](sparsity_curves.png)", "",
    ]
    path = out_dir / "finetune_report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
