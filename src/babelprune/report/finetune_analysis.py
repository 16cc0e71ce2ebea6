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

The HTML report (`babelprune.report.html`, `babelprune.report.html_finetune`)
lays all of it out, with the figures drawn here.
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


def critical_rho(languages: int) -> float | None:
    """|rho| above which a Spearman correlation over `languages` differs from 0 at the 5% level (normal approximation)."""
    return 1.96 / math.sqrt(languages - 1) if languages > 1 else None


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


# --------------------------------------------------------------------------- robustness and resources


@dataclass(frozen=True)
class Robustness:
    """The mean gap (clean - perturbed) of one perturbation at one sparsity."""

    perturbation: str
    sparsity: float
    gap: MeanStd  # over seeds, of the per-seed mean over languages
    share: float | None  # the mean gap over the mean clean score; None when the clean score is 0
    smaller: int | None  # languages whose gap is smaller than dense (None for the dense runs themselves)


def robustness(results: Sequence[FinetuneResult]) -> list[Robustness]:
    """Every perturbation's mean gap at every sparsity, also as a share of the clean score.

    A model at chance level has nothing left to lose, so its gap is small:
    the share of the clean score, and how many languages narrow their gap,
    say more than the gap alone.
    """
    clean = average_over_languages(results)
    found = []
    for kind in results[0].perturbations():
        per_language = language_scores(results, kind, "gap")
        dense = per_language[0.0]
        for sparsity, gap in average_over_languages(results, kind, "gap").items():
            smaller = None if sparsity == 0 else sum(per_language[sparsity][lang].mean < dense[lang].mean for lang in dense)
            share = gap.mean / clean[sparsity].mean if clean[sparsity].mean else None
            found.append(Robustness(kind, sparsity, gap, share, smaller))
    return found


@dataclass(frozen=True)
class ResourceAnalysis:
    """How one sparsity changed each language's clean score from dense, against the language's resources."""

    sparsity: float
    changes: dict[str, float]  # language -> mean over seeds, sparse - dense
    correlations: dict[str, float | None]  # `correlations`: joshi_class, cc100_gib, train_examples
    gain: list[str]  # largest gain first
    loss: list[str]  # largest loss first

    @property
    def mean_change(self) -> float:
        return statistics.fmean(self.changes.values())


def resource_analysis(results: Sequence[FinetuneResult]) -> list[ResourceAnalysis]:
    """The low-resource analysis of every pruned sparsity, in increasing order."""
    counts = training_counts(results, common_languages(results))
    found = []
    for sparsity in [s for s in by_sparsity(results) if s > 0]:
        changes = language_changes(results, sparsity)
        gain, loss = gainers_and_losers(changes)
        found.append(ResourceAnalysis(sparsity, changes, correlations(changes, counts), gain, loss))
    return found
