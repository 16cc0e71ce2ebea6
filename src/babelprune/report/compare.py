"""How much each language lost: a pruned model's results against its dense parent's."""

from __future__ import annotations

import statistics

import numpy as np
from pydantic import BaseModel, ConfigDict

from babelprune.data.languages import RESOURCE_LEVELS, ResourceLevel, language_info
from babelprune.errors import BabelpruneError
from babelprune.records.eval import EvalResult, paired_parts
from babelprune.records.intervals import percentile_interval, relative_change_replicates


class LanguageChange(BaseModel):
    model_config = ConfigDict(frozen=True)
    language: str
    name: str
    resource: ResourceLevel
    dense: float
    pruned: float
    # 95% bootstrap interval of `relative`, paired over the windows, or the text segments, both were scored on (None: no per-window data).
    interval: tuple[float, float] | None = None

    @property
    def relative(self) -> float:
        """Relative change of the metric from dense: (pruned - dense) / dense."""
        return (self.pruned - self.dense) / self.dense


class Comparison(BaseModel):
    """One pruned result against the dense result, over the languages both have."""

    model_config = ConfigDict(frozen=True)
    label: str  # e.g. "wanda @ 50%"
    metric: str
    higher_is_better: bool
    changes: list[LanguageChange]
    # Languages left out because only one of the two results has them.
    only_dense: list[str] = []
    only_pruned: list[str] = []

    def dropped_note(self) -> str | None:
        """One sentence naming the languages that could not be compared, None when there are none."""
        parts = [f"{', '.join(langs)} (only in the {side} result)" for side, langs in
                 (("dense", self.only_dense), (self.label, self.only_pruned)) if langs]
        return f"Not compared for {self.label}: {'; '.join(parts)}." if parts else None

    # 95% interval of the mean degradation over the compared languages (None: no per-window data).
    mean_interval: tuple[float, float] | None = None

    def degradation(self, change: LanguageChange) -> float:
        """Relative loss of quality (> 0 is worse), whichever direction the metric goes."""
        return -change.relative if self.higher_is_better else change.relative

    def degradation_interval(self, change: LanguageChange) -> tuple[float, float] | None:
        """The interval of `degradation(change)`."""
        if change.interval is None:
            return None
        low, high = change.interval
        return (-high, -low) if self.higher_is_better else (low, high)

    @property
    def mean_degradation(self) -> float:
        return statistics.fmean(self.degradation(c) for c in self.changes)

    @property
    def spread(self) -> float:
        values = [self.degradation(c) for c in self.changes]
        return statistics.pstdev(values) if len(values) > 1 else 0.0

    @property
    def worst(self) -> LanguageChange:
        return max(self.changes, key=self.degradation)

    def by_resource(self) -> dict[str, float]:
        """Mean degradation per resource level (levels with no language are left out)."""
        out = {}
        for level in RESOURCE_LEVELS:
            values = [self.degradation(c) for c in self.changes if c.resource == level]
            if values:
                out[level] = statistics.fmean(values)
        return out

    def resource_correlation(self) -> float | None:
        """Spearman correlation between a language's resource class (Joshi et al.) and its degradation.

        Negative: lower-resource languages lose more. None with fewer than 3 languages of known class.
        """
        pairs = [(language_info(c.language).joshi_class, self.degradation(c)) for c in self.changes]
        pairs = [(cls, deg) for cls, deg in pairs if cls is not None]
        if len(pairs) < 3:
            return None
        return spearman([p[0] for p in pairs], [p[1] for p in pairs])


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties getting the mean of their positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson on tie-averaged ranks); None if either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var_x = sum((a - mx) ** 2 for a in rx)
    var_y = sum((b - my) ** 2 for b in ry)
    if var_x == 0 or var_y == 0:
        return None
    return cov / (var_x * var_y) ** 0.5


def result_label(result: EvalResult) -> str:
    """How a result is named in a comparison: its pruning ("wanda @ 50%"), and the GGUF type llama.cpp ran, if it did."""
    gguf = result.model.gguf
    runtime = f", llama.cpp {gguf.file_type}" if result.model.runtime == "llama.cpp" and gguf is not None else ""
    pruning = result.pruning
    if pruning.method == "dense":
        return "dense" + runtime
    pattern = pruning.config.get("pattern", "unstructured")
    amount = pattern if pattern != "unstructured" else f"{pruning.sparsity:.0%}"
    setting = f", {pruning.setting}" if pruning.setting and pruning.setting != "shared" else ""
    return f"{pruning.method} @ {amount}{setting}{runtime}"


# Evaluation settings that change what a score means (the batch size does not).
_MEASUREMENT_SETTINGS = ("seq_len", "max_tokens", "max_queries")


def measurement_differences(dense: EvalResult, pruned: EvalResult) -> list[str]:
    """What differs in how the two results were measured: corpus, split, window length, token budget."""
    pairs = [("corpus", dense.corpus, pruned.corpus), ("split", dense.split, pruned.split)]
    pairs += [(key, dense.settings.get(key), pruned.settings.get(key)) for key in _MEASUREMENT_SETTINGS]
    return [f"{name} {a} vs {b}" for name, a, b in pairs if a != b]


def _change_replicates(dense, pruned):
    """Bootstrap replicates of one language's relative change of the primary metric, None without item data."""
    before, after = paired_parts(dense, pruned)
    if before is None or after is None:
        return None
    return relative_change_replicates(before, after, dense.language)


def compare(dense: EvalResult, pruned: EvalResult, label: str | None = None) -> Comparison:
    """Per-language change of the primary metric (bits per byte for LMs) from `dense` to `pruned`.

    Both results must be measured the same way; languages only one of them
    has are left out and listed in the comparison.
    """
    if dense.kind != pruned.kind:
        raise BabelpruneError("These results measure different things (LM vs retrieval); compare results of one kind.")
    differences = measurement_differences(dense, pruned)
    if differences:
        raise BabelpruneError(
            f"The results were measured differently ({', '.join(differences)}); "
            "evaluate both with the same corpus, split, --seq-len and --max-tokens."
        )
    metric, higher_is_better = dense.primary_metric
    common = [lang for lang in dense.languages() if lang in set(pruned.languages())]
    if not common:
        raise BabelpruneError("The two results share no language; evaluate both on the same languages.")
    meta = {s.language: s for s in dense.scores}
    pruned_scores = {s.language: s for s in pruned.scores}
    replicates = {lang: _change_replicates(meta[lang], pruned_scores[lang]) for lang in common}
    changes = [
        LanguageChange(
            language=lang, name=meta[lang].name, resource=meta[lang].resource,
            dense=dense.value(lang, metric), pruned=pruned.value(lang, metric),
            interval=percentile_interval(replicates[lang]) if replicates[lang] is not None else None,
        )
        for lang in common
    ]
    mean_interval = None
    if all(r is not None for r in replicates.values()):  # languages resampled independently, then averaged
        sign = -1.0 if higher_is_better else 1.0
        mean_interval = percentile_interval(sign * np.mean([replicates[lang] for lang in common], axis=0))
    return Comparison(
        label=label or result_label(pruned), metric=metric, higher_is_better=higher_is_better, changes=changes,
        mean_interval=mean_interval,
        only_dense=[lang for lang in dense.languages() if lang not in common],
        only_pruned=[lang for lang in pruned.languages() if lang not in common],
    )
