"""The runs of a results store arranged for a report: each pruned run beside its dense baseline.

A run's method, sparsity, pattern and setting are read from what its record
holds, first found wins: the one-shot prune config (`config["prune"]`), the
pruning record (`pruning` and its `config`), then the top of `config`. A
field no record holds stays None (the report shows "-"), nothing is guessed.

The baseline of a run on an evaluation set is the dense run of the same model
on the same set, measured the same way (corpus, split, window length, token
budget; `compare` refuses anything else). When several dense runs qualify,
the one that finished last serves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from babelprune.data.languages import RESOURCE_LEVELS
from babelprune.errors import BabelpruneError
from babelprune.records.eval import EvalResult, paired_parts
from babelprune.records.intervals import percentile_interval, relative_change_replicates
from babelprune.records.run import RunRecord
from babelprune.report.compare import Comparison, compare, measurement_differences
from babelprune.report.contest import Contest, contest

Interval = tuple[float, float]
# The baseline every other method of a sparsity is contested against, when the group has it.
CONTEST_BASELINE = "wanda"


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class RunInfo:
    """What a report needs to know of one run, read tolerantly from its record."""

    record: RunRecord
    method: str
    sparsity: float | None
    pattern: str
    setting: str | None
    model: str | None  # the dense model it comes from (None: the record does not say)
    variant: str  # the prune config without its sparsity (JSON): runs of one variant make one curve

    @property
    def label(self) -> str:
        return self.record.label

    @property
    def amount(self) -> str:
        """'50%', '2:4', or '-' when the record holds no sparsity."""
        if self.pattern != "unstructured":
            return self.pattern
        return f"{self.sparsity:.0%}" if self.sparsity is not None else "-"

    @property
    def amount_key(self) -> tuple:
        """Sort key of `amount`: unstructured by sparsity, then N:M patterns, then none."""
        if self.pattern != "unstructured":
            return (1, 0.0, self.pattern)
        return (0, self.sparsity, "") if self.sparsity is not None else (2, 0.0, "")


def describe(record: RunRecord) -> RunInfo:
    config = _dict(record.config)
    prune = _dict(config.get("prune"))
    pruning = _dict(record.pruning)
    pruning_config = _dict(pruning.get("config"))
    method = _first(prune.get("method"), pruning.get("method"), config.get("method")) or record.kind
    sparsity = _first(prune.get("sparsity"), pruning.get("sparsity"), config.get("sparsity"))
    pattern = _first(prune.get("pattern"), pruning_config.get("pattern"), config.get("pattern")) or "unstructured"
    setting = _first(prune.get("setting"), pruning.get("setting"), pruning_config.get("setting"), config.get("setting"))
    model = _first(config.get("model"), prune.get("model"), pruning.get("parent"))
    base = prune or {"kind": record.kind, "method": method, "pattern": pattern, "setting": setting}
    variant = json.dumps({k: v for k, v in base.items() if k != "sparsity"}, sort_keys=True, default=str)
    return RunInfo(record, str(method), float(sparsity) if isinstance(sparsity, (int, float)) else None,
                   str(pattern), setting, str(model) if model is not None else None, variant)


# --------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class Compared:
    info: RunInfo
    result: EvalResult
    comparison: Comparison


@dataclass
class BaselineGroup:
    """One dense run on one evaluation set and the runs compared with it (those computed in its placement)."""

    dense: RunRecord
    result: EvalResult
    model: str
    runs: list[Compared] = field(default_factory=list)
    placement: tuple[str, str] = ("cpu", "float32")

    def amounts(self) -> list[tuple[str, list[Compared]]]:
        """The compared runs grouped by sparsity or pattern, in increasing order."""
        groups: dict[str, list[Compared]] = {}
        for run in sorted(self.runs, key=lambda r: r.info.amount_key):
            groups.setdefault(run.info.amount, []).append(run)
        return list(groups.items())


@dataclass
class EvalSetView:
    name: str
    groups: list[BaselineGroup]
    unmatched: list[tuple[RunInfo, str]]  # runs with no comparison, and why


def dense_model(record: RunRecord, result: EvalResult) -> str:
    return describe(record).model or result.model.spec


def placement_of(record: RunRecord) -> tuple[str, str]:
    """The device type and dtype a run computed in, as its key names them; records made before they were kept: the CPU in float32."""
    return (record.device or "cpu").split(":")[0], record.dtype or "float32"


def _baseline_for(info: RunInfo, result: EvalResult, groups: list[BaselineGroup],
                  placement: tuple[str, str] = ("cpu", "float32")) -> BaselineGroup | str:
    """The group whose dense run is this run's baseline, or why there is none.

    A bfloat16 run is compared with the bfloat16 dense model, a CUDA run with the CUDA one: the
    change pruning made, not the change of the type or device too.
    """
    alike = [g for g in groups if g.result.kind == result.kind and not measurement_differences(g.result, result)]
    if not alike:
        return "no dense run on this set was measured the same way (corpus, split, window length, token budget)"
    alike = [g for g in alike if g.placement == placement]
    if not alike:
        return f"no dense run on this set was computed on {placement[0]} in {placement[1]}, as this run was"
    if info.model is not None:
        alike = [g for g in alike if g.model == info.model]
        if not alike:
            return f"no dense run of {info.model} on this set"
    elif len({g.model for g in alike}) > 1:
        return "its record does not name its model, and dense runs of several models could be its baseline"
    return alike[-1]


def eval_set_view(name: str, records: list[RunRecord]) -> EvalSetView:
    """Every done run that evaluated set `name`, compared with its dense baseline."""
    latest: dict[tuple, BaselineGroup] = {}
    for record in records:  # in the order they finished: a later dense run replaces an earlier one
        if record.kind == "dense" and name in record.evaluations:
            result = record.evaluations[name]
            model = dense_model(record, result)
            signature = (model, result.kind, result.corpus, result.split, placement_of(record),
                         *(json.dumps(result.settings.get(k), default=str) for k in ("seq_len", "max_tokens", "max_queries")))
            latest[signature] = BaselineGroup(record, result, model, placement=placement_of(record))
    groups = sorted(latest.values(), key=lambda g: g.dense.finished)
    unmatched = []
    for record in records:
        if record.kind == "dense" or name not in record.evaluations:
            continue
        info, result = describe(record), record.evaluations[name]
        group = _baseline_for(info, result, groups, placement_of(record))
        if isinstance(group, str):
            unmatched.append((info, group))
            continue
        try:
            group.runs.append(Compared(info, result, compare(group.result, result, label=record.label)))
        except BabelpruneError as error:
            unmatched.append((info, str(error)))
    return EvalSetView(name, groups, unmatched)


def evaluation_sets(records: list[RunRecord]) -> list[str]:
    """Names of the evaluation sets of the done runs, in the order they first appear."""
    return list(dict.fromkeys(name for record in records for name in record.evaluations))


# --------------------------------------------------------------------------- resource levels


def resource_levels(dense: EvalResult, run: Compared) -> dict[str, tuple[float, Interval | None]]:
    """Mean degradation per resource level, with the 95% interval of that mean (None without window data).

    Each language is resampled on its own windows, paired between dense and
    pruned (the draws `compare` makes), and the level's mean is taken inside
    every replicate.
    """
    comparison = run.comparison
    sign = -1.0 if comparison.higher_is_better else 1.0
    before = {s.language: s for s in dense.scores}
    after = {s.language: s for s in run.result.scores}
    out = {}
    for level, mean in comparison.by_resource().items():
        replicates = []
        for change in (c for c in comparison.changes if c.resource == level):
            parts = paired_parts(before[change.language], after[change.language])
            if parts[0] is None or parts[1] is None:
                replicates = None
                break
            replicates.append(relative_change_replicates(*parts, change.language))
        interval = percentile_interval(sign * np.mean(replicates, axis=0)) if replicates else None
        out[level] = (mean, interval)
    return out


def levels_present(runs: list[Compared]) -> list[str]:
    present = {c.resource for run in runs for c in run.comparison.changes}
    return [level for level in RESOURCE_LEVELS if level in present]


# --------------------------------------------------------------------------- curves over sparsity


@dataclass(frozen=True)
class CurvePoint:
    sparsity: float
    mean: float  # mean degradation (relative, > 0 is worse)
    mean_interval: Interval | None
    worst_language: str
    worst: float
    worst_interval: Interval | None
    languages: tuple[tuple[str, str, float], ...] = ()  # (language, resource level, degradation) for every language


@dataclass(frozen=True)
class Curve:
    label: str
    points: list[CurvePoint]


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _variant_labels(runs: list[Compared]) -> dict[str, str]:
    """A short name per variant: its method, plus the settings that tell variants of one method apart."""
    by_method: dict[str, dict[str, dict]] = {}
    for run in runs:
        by_method.setdefault(run.info.method, {})[run.info.variant] = json.loads(run.info.variant)
    labels = {}
    for method, variants in by_method.items():
        keys = sorted({k for v in variants.values() for k in v})
        differing = [k for k in keys if len({json.dumps(v.get(k), sort_keys=True) for v in variants.values()}) > 1]
        for variant, fields in variants.items():
            extra = ", ".join(f"{k}={_short(fields.get(k))}" for k in differing if k != "method")
            labels[variant] = f"{method} ({extra})" if extra else method
    return labels


def sparsity_curves(runs: list[Compared]) -> list[Curve]:
    """One curve per variant with a known sparsity: mean and worst-language degradation at each sparsity."""
    usable = [run for run in runs if run.info.sparsity is not None]
    labels = _variant_labels(usable)
    curves: dict[str, list[CurvePoint]] = {}
    for run in sorted(usable, key=lambda r: r.info.sparsity):
        comparison = run.comparison
        worst = comparison.worst
        curves.setdefault(run.info.variant, []).append(CurvePoint(
            run.info.sparsity, comparison.mean_degradation, comparison.mean_interval, worst.language,
            comparison.degradation(worst), comparison.degradation_interval(worst),
            tuple((c.language, c.resource, comparison.degradation(c)) for c in comparison.changes),
        ))
    return [Curve(labels[variant], points) for variant, points in curves.items()]


# --------------------------------------------------------------------------- method against method


@dataclass(frozen=True)
class ContestRow:
    amount: str
    contest: Contest | None
    baseline: str
    candidate: str
    note: str | None = None  # why there is no contest


def contests(group: BaselineGroup) -> list[ContestRow]:
    """At each sparsity or pattern, every run against the `CONTEST_BASELINE` run (else the first), paired on windows."""
    rows = []
    for amount, runs in group.amounts():
        if len(runs) < 2 or group.result.kind != "lm":
            continue
        base = next((r for r in runs if r.info.method == CONTEST_BASELINE), runs[0])
        for run in runs:
            if run is base:
                continue
            try:
                result = contest(group.result, base.result, run.result, base.info.label, run.info.label)
                rows.append(ContestRow(amount, result, base.info.label, run.info.label))
            except BabelpruneError as error:
                rows.append(ContestRow(amount, None, base.info.label, run.info.label, str(error)))
    return rows


# --------------------------------------------------------------------------- measurements and masks

# Measurements the speed/size section knows, under the names runs may use: (names, header).
SIZE_FIELDS = (("bytes", "bytes_on_disk"), ("parameters", "n_parameters"))
SPEED_FIELDS = (("tokens_per_second", "throughput_tokens_per_s"), ("latency_ms", "latency_batch1_ms"))


def numeric_measurements(record: RunRecord) -> dict[str, float]:
    """The run's measurements that are plain numbers (booleans and nested values left out)."""
    return {key: float(value) for key, value in record.measurements.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def measured(values: dict[str, float], names: tuple[str, ...]) -> tuple[str, float] | None:
    """(name, value) of the first of `names` the run measured."""
    return next(((name, values[name]) for name in names if name in values), None)


def mask_overlap(record: RunRecord) -> dict[str, dict[str, float]] | None:
    """The run's language-by-language mask overlap (Jaccard of pruned sets), from its pruning record or measurements."""
    for source in (_dict(record.pruning), record.measurements):
        overlap = source.get("mask_overlap")
        if isinstance(overlap, dict) and overlap and all(isinstance(row, dict) for row in overlap.values()):
            return {str(a): {str(b): float(v) for b, v in row.items()} for a, row in overlap.items()}
    return None


def has_language_masks(record: RunRecord) -> bool:
    info = describe(record)
    return info.setting == "per-language" or bool(_dict(record.pruning).get("mask_bank_languages"))
