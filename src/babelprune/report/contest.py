"""Two pruned models against each other: whose increase of bits per byte over the dense model is smaller.

Increases are absolute (bits per byte of the pruned model minus that of the
dense model, on the same windows). Everything is paired: one bootstrap draw
of a language's windows serves the dense model and both pruned models, so
only the models' differences remain in the interval. Three views:

* per language: increase_candidate - increase_baseline (< 0: the candidate loses less);
* the mean over languages of the increase, and the candidate's share of the
  baseline's mean (the issue's "at most 0.8x" target reads this);
* the worst language: max_l increase_candidate - max_l increase_baseline, the
  maximum taken inside every bootstrap replicate (the worst language may
  differ between replicates and between the two models).

A difference whose interval contains 0 is "not resolved".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from babelprune.errors import BabelpruneError
from babelprune.records.eval import EvalResult
from babelprune.records.intervals import bits_per_byte_replicates, draws, percentile_interval, resolved

Interval = tuple[float, float]


@dataclass(frozen=True)
class LanguageContest:
    language: str
    dense: float  # dense bits per byte
    baseline_increase: float
    candidate_increase: float
    difference_interval: Interval  # of candidate_increase - baseline_increase

    @property
    def difference(self) -> float:
        return self.candidate_increase - self.baseline_increase


@dataclass(frozen=True)
class Contest:
    baseline: str
    candidate: str
    languages: list[LanguageContest]
    mean_difference_interval: Interval
    worst_difference_interval: Interval

    @property
    def baseline_mean(self) -> float:
        return float(np.mean([c.baseline_increase for c in self.languages]))

    @property
    def candidate_mean(self) -> float:
        return float(np.mean([c.candidate_increase for c in self.languages]))

    @property
    def mean_ratio(self) -> float:
        """The candidate's mean increase as a share of the baseline's."""
        return self.candidate_mean / self.baseline_mean if self.baseline_mean else float("nan")

    @property
    def baseline_worst(self) -> LanguageContest:
        return max(self.languages, key=lambda c: c.baseline_increase)

    @property
    def candidate_worst(self) -> LanguageContest:
        return max(self.languages, key=lambda c: c.candidate_increase)

    def verdict(self, interval: Interval) -> str:
        """'candidate' or 'baseline' when the interval excludes 0, else 'not resolved'."""
        if not resolved(interval):
            return "not resolved"
        return self.candidate if interval[1] < 0 else self.baseline


def _window_data(result: EvalResult, language: str) -> tuple[list[float], list[int]]:
    score = next(s for s in result.scores if s.language == language)
    if len(score.window_nll) == 0:
        raise BabelpruneError(f"{result.model.spec} has no per-window data for '{language}'; evaluate it again with this version.")
    return score.window_nll, score.window_bytes


def contest(dense: EvalResult, baseline: EvalResult, candidate: EvalResult, baseline_label: str, candidate_label: str) -> Contest:
    """Paired comparison of two pruned models' increases over `dense`, on the languages all three share."""
    if dense.kind != "lm" or baseline.kind != "lm" or candidate.kind != "lm":
        raise BabelpruneError("A contest compares bits per byte; give results of causal language models.")
    languages = [lang for lang in dense.languages() if lang in baseline.languages() and lang in candidate.languages()]
    if not languages:
        raise BabelpruneError("The three results share no language; evaluate them on the same languages.")
    rows, mean_diffs, base_reps, cand_reps = [], [], [], []
    for lang in languages:
        parts = [_window_data(result, lang) for result in (dense, baseline, candidate)]
        if any(list(p[1]) != list(parts[0][1]) for p in parts):
            raise BabelpruneError(f"The results scored different windows of '{lang}'; evaluate them with the same settings.")
        index = draws(len(parts[0][0]), lang)
        before, base, cand = (bits_per_byte_replicates(nll, size, index) for nll, size in parts)
        base_inc, cand_inc = base - before, cand - before  # (samples,) each
        point = [float(bits_per_byte_replicates(nll, size, np.arange(len(nll))[None, :])[0]) for nll, size in parts]
        rows.append(LanguageContest(lang, point[0], point[1] - point[0], point[2] - point[0], percentile_interval(cand_inc - base_inc)))
        mean_diffs.append(cand_inc - base_inc)
        base_reps.append(base_inc)
        cand_reps.append(cand_inc)
    worst = np.max(np.stack(cand_reps), axis=0) - np.max(np.stack(base_reps), axis=0)
    return Contest(
        baseline=baseline_label, candidate=candidate_label, languages=rows,
        mean_difference_interval=percentile_interval(np.mean(np.stack(mean_diffs), axis=0)),
        worst_difference_interval=percentile_interval(worst),
    )


def _cell(value: float, interval: Interval) -> str:
    mark = "" if resolved(interval) else " n.s."
    return f"{value:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]{mark}"


def contest_markdown(result: Contest) -> str:
    """The summary rows: mean and worst increase of each, their paired difference, and the verdict."""
    base_worst, cand_worst = result.baseline_worst, result.candidate_worst
    worst_diff = cand_worst.candidate_increase - base_worst.baseline_increase
    lines = [
        f"| | {result.baseline} | {result.candidate} | difference [95% interval] | verdict |",
        "|---|---|---|---|---|",
        f"| mean increase | {result.baseline_mean:+.4f} | {result.candidate_mean:+.4f} "
        f"({result.mean_ratio:.2f}x) | {_cell(result.candidate_mean - result.baseline_mean, result.mean_difference_interval)} "
        f"| {result.verdict(result.mean_difference_interval)} |",
        f"| worst language | {base_worst.language} {base_worst.baseline_increase:+.4f} | {cand_worst.language} "
        f"{cand_worst.candidate_increase:+.4f} | {_cell(worst_diff, result.worst_difference_interval)} "
        f"| {result.verdict(result.worst_difference_interval)} |",
    ]
    return "\n".join(lines)
