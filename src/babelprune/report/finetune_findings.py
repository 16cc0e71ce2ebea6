"""Findings of a fine-tuning sweep per pruning condition, with intervals (the `ogueji2022` recipe's questions).

A condition is a final sparsity and whether the word embeddings were pruned
too; the dense runs (sparsity 0) are the one baseline of every condition.
For each condition this module computes:

- each language's **relative change** of the clean score from dense,
  (sparse - dense) / dense, each side the mean over seeds and test items;
- the mean relative change of each **resource level** (high, medium, low);
- the **Spearman correlation** of the change with the language's resource
  (its Joshi class, and its training examples when they differ), with a
  two-sided permutation p-value;
- the **gap difference** per language and perturbation: the sparse gap
  (clean - perturbed) minus the dense gap, in score points. Positive: pruning
  made the language less robust; negative: more.

Intervals are 95% percentile intervals of a two-level bootstrap that resamples
seeds and test items. Seeds are paired when both sides have the same seeds
(a seed fixes the training sample, its order and dropout, dense or sparse),
and one seed draw serves every language, since one model per seed scores
them all. Items are paired everywhere: every run scores the same test items
of a language, clean and perturbed, so one item draw per language serves
both sides and both sets. Both come from the per-item results
(`TaskScore.correct`); results without them (older runs, entity F1) get no
interval, which shows as None.
"""

from __future__ import annotations

import statistics
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from babelprune.data.languages import RESOURCE_LEVELS, language_info
from babelprune.errors import BabelpruneError
from babelprune.records.finetune import FinetuneResult
from babelprune.records.intervals import BOOTSTRAP_SAMPLES, draws, percentile_interval, resolved
from babelprune.report import finetune_analysis as ft
from babelprune.report.compare import spearman

PERMUTATIONS = 10_000
Interval = tuple[float, float] | None


@dataclass(frozen=True)
class Condition:
    sparsity: float
    embeddings: bool  # the word-embedding matrix was pruned too

    @property
    def label(self) -> str:
        return f"{self.sparsity:.0%}" + (" + embeddings" if self.embeddings else "")


@dataclass(frozen=True)
class Estimate:
    value: float
    interval: Interval  # 95%; None: no per-item results to resample

    @property
    def resolved(self) -> bool:
        return resolved(self.interval)


@dataclass(frozen=True)
class Correlation:
    quantity: str  # "joshi_class" or "train_examples"
    rho: float
    p_value: float  # two-sided, from PERMUTATIONS permutations of the changes


@dataclass(frozen=True)
class ConditionFindings:
    condition: Condition
    seeds: tuple[int, ...]
    changes: dict[str, Estimate]  # language -> relative change of the clean score
    levels: dict[str, Estimate]  # resource level -> mean relative change of its languages
    correlations: list[Correlation]
    gap_differences: dict[str, dict[str, Estimate]]  # perturbation -> language -> sparse gap - dense gap


def condition_of(result: FinetuneResult) -> Condition:
    embeddings = bool(result.gmp is not None and result.gmp.include_embeddings)
    return Condition(result.sparsity, embeddings)


def by_condition(results: Sequence[FinetuneResult]) -> tuple[list[FinetuneResult], dict[Condition, list[FinetuneResult]]]:
    """(dense results, {pruned condition: results}), each sorted by seed; raise without a dense run."""
    dense = sorted((r for r in results if r.sparsity == 0), key=lambda r: r.seed)
    if not dense:
        raise BabelpruneError("The results hold no dense run (sparsity 0) to compare with; include one in the sweep.")
    groups: dict[Condition, list[FinetuneResult]] = {}
    for result in sorted(results, key=lambda r: (r.sparsity, condition_of(r).embeddings, r.seed)):
        if result.sparsity > 0:
            groups.setdefault(condition_of(result), []).append(result)
    return dense, groups


# --------------------------------------------------------------------------- per-item arrays


def _items(results: Sequence[FinetuneResult], lang: str, perturbation: str | None) -> np.ndarray | None:
    """(seeds, items) of 0/1 results; None when a result lacks them or the runs scored different numbers of items."""
    rows = [r.score(lang, perturbation).correct for r in results]
    if any(row is None for row in rows) or len({len(row) for row in rows}) != 1 or not rows[0]:
        return None
    return np.asarray(rows, dtype=np.float64)


def _values(results: Sequence[FinetuneResult], lang: str, perturbation: str | None) -> float:
    return statistics.fmean(r.score(lang, perturbation).value for r in results)


def seed_draws(dense: Sequence[FinetuneResult], sparse: Sequence[FinetuneResult],
               samples: int = BOOTSTRAP_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Resampled seed positions (samples, seeds) of each side: one draw for both when they have the same seeds."""
    rng = np.random.default_rng(zlib.crc32(b"seeds"))
    dense_draw = rng.integers(0, len(dense), size=(samples, len(dense)))
    if [r.seed for r in dense] == [r.seed for r in sparse]:
        return dense_draw, dense_draw
    return dense_draw, rng.integers(0, len(sparse), size=(samples, len(sparse)))


def _resampled_means(items: np.ndarray, seeds: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds and items of each resample: (samples,)."""
    return items[seeds[:, :, None], index[:, None, :]].mean(axis=(1, 2))


# --------------------------------------------------------------------------- the findings


def relative_change(dense: Sequence[FinetuneResult], sparse: Sequence[FinetuneResult], lang: str,
                    seeds: tuple[np.ndarray, np.ndarray]) -> tuple[Estimate, np.ndarray | None]:
    """A language's relative change of the clean score, and its bootstrap replicates (None without items)."""
    before, after = _values(dense, lang, None), _values(sparse, lang, None)
    value = (after - before) / before if before else float("nan")
    dense_items, sparse_items = _items(dense, lang, None), _items(sparse, lang, None)
    if dense_items is None or sparse_items is None or dense_items.shape[1] != sparse_items.shape[1] or not before:
        return Estimate(value, None), None
    index = draws(dense_items.shape[1], lang)
    base = _resampled_means(dense_items, seeds[0], index)
    with np.errstate(divide="ignore", invalid="ignore"):
        replicates = (_resampled_means(sparse_items, seeds[1], index) - base) / base
    return Estimate(value, percentile_interval(replicates[np.isfinite(replicates)])), replicates


def gap_difference(dense: Sequence[FinetuneResult], sparse: Sequence[FinetuneResult], lang: str, kind: str,
                   seeds: tuple[np.ndarray, np.ndarray]) -> Estimate:
    """Sparse gap minus dense gap (clean - perturbed, score points) of one language and perturbation."""

    def gap(results):
        return _values(results, lang, None) - _values(results, lang, kind)

    value = gap(sparse) - gap(dense)
    sides = [(_items(side, lang, None), _items(side, lang, kind)) for side in (dense, sparse)]
    if any(part is None for pair in sides for part in pair) or len({part.shape[1] for pair in sides for part in pair}) != 1:
        return Estimate(value, None)
    index = draws(sides[0][0].shape[1], f"{lang}:{kind}")
    (dense_clean, dense_perturbed), (sparse_clean, sparse_perturbed) = sides
    replicates = (_resampled_means(sparse_clean - sparse_perturbed, seeds[1], index)
                  - _resampled_means(dense_clean - dense_perturbed, seeds[0], index))
    return Estimate(value, percentile_interval(replicates))


def permutation_p(xs: Sequence[float], ys: Sequence[float], rho: float, permutations: int = PERMUTATIONS) -> float:
    """Two-sided p-value of Spearman's rho: the share of random pairings at least as far from 0 (counting this one)."""
    rng = np.random.default_rng(zlib.crc32(b"spearman"))
    ys = list(ys)
    beyond = 0
    for _ in range(permutations):
        shuffled = [ys[i] for i in rng.permutation(len(ys))]
        value = spearman(list(xs), shuffled)
        beyond += value is not None and abs(value) >= abs(rho) - 1e-12
    return (1 + beyond) / (1 + permutations)


def resource_correlations(changes: dict[str, float], train_counts: dict[str, int],
                          permutations: int = PERMUTATIONS) -> list[Correlation]:
    """Spearman rho of the changes with the Joshi class and the training examples (`ft.correlations`), with p-values."""
    rhos = ft.correlations(changes, train_counts)
    quantities = {
        "joshi_class": {lang: language_info(lang).joshi_class for lang in changes},
        "train_examples": dict(train_counts),
    }
    found = []
    for name, quantity in quantities.items():
        rho = rhos[name]
        if rho is None:
            continue
        langs = [lang for lang in changes if quantity.get(lang) is not None]
        xs = [float(quantity[lang]) for lang in langs]
        found.append(Correlation(name, rho, permutation_p(xs, [changes[lang] for lang in langs], rho, permutations)))
    return found


def level_means(changes: dict[str, Estimate], replicates: dict[str, np.ndarray | None]) -> dict[str, Estimate]:
    """Mean relative change of each resource level's languages; its interval averages inside each resample."""
    levels = {}
    for level in RESOURCE_LEVELS:
        langs = [lang for lang in changes if language_info(lang).resource == level]
        if not langs:
            continue
        value = statistics.fmean(changes[lang].value for lang in langs)
        drawn = [replicates[lang] for lang in langs]
        interval = None
        if all(d is not None for d in drawn):
            mean = np.mean(np.stack(drawn), axis=0)  # (samples,)
            interval = percentile_interval(mean[np.isfinite(mean)])
        levels[level] = Estimate(value, interval)
    return levels


def condition_findings(results: Sequence[FinetuneResult], permutations: int = PERMUTATIONS) -> list[ConditionFindings]:
    """The findings of every pruned condition against the dense runs, in order of sparsity (embeddings kept first)."""
    dense, groups = by_condition(results)
    langs = ft.common_languages(list(results))
    counts = ft.training_counts(dense, langs)
    kinds = dense[0].perturbations()
    found = []
    for condition, sparse in groups.items():
        seeds = seed_draws(dense, sparse)
        changes, replicates = {}, {}
        for lang in langs:
            changes[lang], replicates[lang] = relative_change(dense, sparse, lang, seeds)
        finite = {lang: e.value for lang, e in changes.items() if np.isfinite(e.value)}
        gaps = {kind: {lang: gap_difference(dense, sparse, lang, kind, seeds) for lang in langs}
                for kind in kinds if kind in sparse[0].perturbations()}
        found.append(ConditionFindings(
            condition, tuple(r.seed for r in sparse), changes, level_means(changes, replicates),
            resource_correlations(finite, counts, permutations), gaps,
        ))
    return found
