"""A packaged recipe as it ran: its time on this machine and its headline comparisons with their intervals.

    python benchmarks/recipe_results.py --recipe ogueji2022 --store benchmark-results/recipes/ogueji2022.sqlite

Reads the store that `babelprune sweep --recipe NAME --store PATH` wrote and
writes docs/results/recipe_<NAME>.md:

- **time**: the recipe's planned runs against the store's (done, failed,
  missing), the sum of the runs' own seconds, the wall span from the first
  start to the last finish (and whether the sweep was interrupted, a pause of
  over 10 minutes between two runs), the commits and torch threads the runs
  recorded;
- **headline comparisons**, each with its 95% interval and whether the interval
  excludes 0 (resolved) or not:
  - fine-tuning runs (ogueji2022): per pruning condition, each resource
    level's mean relative change of the clean score from dense, the languages
    whose change is resolved, Spearman's rho with the resource class, and the
    perturbed-gap differences;
  - task-structured / task-dynamic runs (li2022): L0 against gradient
    importance, per-language against shared models, Dynamic Sparsification
    against separately pruned models, each paired over test items;
  - evaluation runs (mwanda): M-Wanda against Wanda and SparseGPT in each
    setting and evaluation set, the paired difference of the mean increase of
    bits per byte.

Nothing here runs a model: the recipe must have run first (it resumes, so
running the sweep command again finishes a store that was interrupted).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, write_result_table
from babelprune.errors import BabelpruneError
from babelprune.report.contest import contest
from babelprune.report.finetune_findings import ConditionFindings, Estimate, condition_findings
from babelprune.report.html_li2022 import all_languages, dynamic_levels, matched_runs, mean_difference, versus
from babelprune.prune.config import MWandaConfig, PruneConfig
from babelprune.report.intervals import resolved
from babelprune.sweep.experiment import recipe_path
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore, RunRecord

PAUSE_SECONDS = 600  # a gap this long between two runs means the sweep was stopped and resumed
LIMIT_SECONDS = 7200  # a recipe must finish in 2 hours on 2 cores


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def interval_text(value: float | None, interval: tuple[float, float] | None, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "-"
    shown = f"{scale * value:+.{digits}f}"
    if interval is None:
        return shown + " [no interval]"
    verdict = "" if resolved(interval) else " n.s."
    return f"{shown} [{scale * interval[0]:+.{digits}f}, {scale * interval[1]:+.{digits}f}]{verdict}"


# ----- time -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeTime:
    planned: int
    done: int
    failed: int
    missing: int
    run_seconds: float  # the sum of the runs' own seconds
    span: float  # first start to last finish
    pauses: list[float]  # gaps over PAUSE_SECONDS between two runs: the sweep was stopped and resumed
    longest: RunRecord | None

    @property
    def sweep_seconds(self) -> float:
        """The span without its pauses: what the recipe costs when it runs through."""
        return self.span - sum(self.pauses)


def recipe_time(planned: set[str], records: list[RunRecord]) -> RecipeTime:
    stored = {record.key: record for record in records if record.key in planned}
    finished = sorted((r for r in stored.values() if r.state in ("done", "failed") and r.started), key=lambda r: r.started)
    gaps = [(_time(b.started) - _time(a.finished)).total_seconds() for a, b in zip(finished, finished[1:])]
    return RecipeTime(
        planned=len(planned), done=sum(r.state == "done" for r in finished), failed=sum(r.state == "failed" for r in finished),
        missing=len(planned) - len(finished), run_seconds=sum(r.seconds for r in finished),
        span=(_time(finished[-1].finished) - _time(finished[0].started)).total_seconds() if finished else 0.0,
        pauses=[gap for gap in gaps if gap > PAUSE_SECONDS], longest=max(finished, key=lambda r: r.seconds, default=None),
    )


def same_code(commits: list[str], folder: str = "src", repo: Path = REPO) -> str:
    """Whether the package's code (`folder`) is the same at every commit, as a sentence, read from git."""
    import subprocess

    base = [commit.removesuffix("+dirty") for commit in commits]
    try:
        changed = [subprocess.run(["git", "diff", "--quiet", base[0], other, "--", folder], cwd=repo, capture_output=True).returncode
                   for other in base[1:]]
    except OSError:
        return "git is not available to compare them."
    if any(code not in (0, 1) for code in changed) or any(c.endswith("+dirty") for c in commits):
        return "whether their code differs is not known (a commit is missing here, or one had uncommitted changes)."
    if any(changed):
        return f"{folder}/ differs between them, so the runs did not all run the same code."
    return f"{folder}/ is the same at all of them, so every run ran the same code."


def time_markdown(name: str, records: list[RunRecord]) -> str:
    planned = {run.key for run in plan_experiment(recipe_path(name), check_data=False).runs}
    took = recipe_time(planned, records)
    lines = [f"Planned runs: {took.planned}; done {took.done}, failed {took.failed}, not run {took.missing}.", ""]
    if took.longest is None:
        return "\n".join(lines + ["No run has finished yet."]) + "\n"
    ran = [r for r in records if r.key in planned and r.started]
    commits = sorted({str(r.environment.get("commit")) for r in ran})
    threads = sorted({str(r.environment.get("threads")) for r in ran})
    finished = took.done + took.failed
    lines += [
        "| measure | value |", "|---|---:|",
        f"| sum of the runs' own seconds | {took.run_seconds:.0f} s ({took.run_seconds / 60:.1f} min) |",
        f"| wall span, first start to last finish | {took.span:.0f} s ({took.span / 60:.1f} min) |",
        f"| pauses over {PAUSE_SECONDS // 60} min (the sweep was stopped and resumed) | {len(took.pauses)} ({sum(took.pauses):.0f} s) |",
        f"| the sweep's own time between runs (loading models, writing the store) | {max(0.0, took.sweep_seconds - took.run_seconds):.0f} s |",
        f"| mean / longest run | {took.run_seconds / finished:.0f} s / {took.longest.seconds:.0f} s ({took.longest.label}) |",
        "",
        f"The runs recorded commit {', '.join(commits)} and {', '.join(threads)} torch threads."
        + (f" **The runs come from more than one commit**; {same_code(commits)}" if len(commits) > 1 else ""),
    ]
    if took.missing:
        lines += ["", f"The recipe is not finished: {took.missing} runs are missing, so its full time is not known yet."]
    else:
        verdict = "met" if took.sweep_seconds <= LIMIT_SECONDS else "not met"
        lines += ["", f"The whole recipe took **{took.sweep_seconds / 60:.1f} min** of sweep time (the wall span without "
                  f"pauses); limit {LIMIT_SECONDS // 60} min on 2 cores: {verdict}."]
    return "\n".join(lines) + "\n"


# ----- fine-tuning runs -------------------------------------------------------------------


def _resolved_names(changes: dict[str, Estimate], sign: int) -> str:
    names = [lang for lang, e in changes.items() if e.resolved and sign * e.value > 0]
    return ", ".join(names) or "-"


def finetune_markdown(records: list[RunRecord]) -> str:
    results = [r.finetune for r in records if r.finetune is not None]
    if not results:
        return ""
    found: list[ConditionFindings] = condition_findings(results)
    levels = [level for level in ("high", "medium", "low") if any(level in f.levels for f in found)]
    lines = ["## Fine-tuning with gradual magnitude pruning", "",
             "Relative change of each language's clean score from the dense runs, in percent, mean of the resource "
             "level's languages, with its 95% interval (two-level bootstrap over seeds and test items); n.s.: the "
             "interval contains 0.", "",
             "| condition | seeds | " + " | ".join(levels) + " | resolved losses | resolved gains | Spearman rho with Joshi class (p) |",
             "|---|---|" + "---|" * len(levels) + "---|---|---|"]
    for f in found:
        joshi = next((c for c in f.correlations if c.quantity == "joshi_class"), None)
        rho = f"{joshi.rho:+.2f} (p {joshi.p_value:.2f})" if joshi else "-"
        cells = [interval_text(f.levels[level].value, f.levels[level].interval, 100, 1) if level in f.levels else "-"
                 for level in levels]
        lines.append(f"| {f.condition.label} | {len(f.seeds)} | " + " | ".join(cells)
                     + f" | {_resolved_names(f.changes, -1)} | {_resolved_names(f.changes, +1)} | {rho} |")
    lines += ["", "Robustness: the perturbed gap (clean - perturbed score) of the pruned runs minus that of the dense "
              "runs, in points; the languages whose difference is resolved (a wider gap: pruning made the language "
              "less robust; narrower: more robust).", "",
              "| condition | perturbation | mean gap difference | less robust | more robust |", "|---|---|---:|---|---|"]
    for f in found:
        for kind, per_language in f.gap_differences.items():
            mean = statistics.fmean(e.value for e in per_language.values())
            lines.append(f"| {f.condition.label} | {kind} | {100 * mean:+.1f} | {_resolved_names(per_language, +1)} | "
                         f"{_resolved_names(per_language, -1)} |")
    return "\n".join(lines) + "\n"


# ----- task-structured runs ---------------------------------------------------------------


def _describe(result, skip: str) -> str:
    parts = {"units": "+".join(result.units), "importance": result.importance, "setting": result.setting,
             "sparsity": f"{result.target_sparsity:.0%}"}
    return " ".join(value for name, value in parts.items() if name != skip)


def _versus_rows(results, field: str, a: str, b: str) -> list[str]:
    rows = []
    for first, second in matched_runs(results, field, a, b):
        point, interval, _ = versus(first, second)
        rows.append(f"| {_describe(first, field)} | {interval_text(point, interval, 100, 1)} |")
    return rows


def l0_gates_markdown(results) -> str:
    """What the L0 gates learned in each run: how far their expected sparsity got, and how much of the cut they made."""
    trained = sorted((r for r in results if r.l0), key=lambda r: (r.units, r.setting, r.target_sparsity))
    rows = []
    for result in trained:
        gates = list(result.l0.values())  # one entry per model (shared: one; per-language: one per language)
        closed = sum(g["closed_units"] - g["closed_kept"] for g in gates)
        removed = sum(g["removed_units"] for g in gates)
        rows.append(f"| {_describe(result, 'importance')} | {statistics.fmean(g['expected_sparsity_last'] for g in gates):.3f} "
                    f"| {statistics.fmean(g['gate_sparsity'] for g in gates):.3f} | {closed / max(removed, 1):.0%} |")
    if not rows:
        return ""
    steps = "/".join(str(n) for n in sorted({r.steps.get("joint_l0") for r in trained}))
    return "\n".join(["### What the L0 gates learned", "",
                      f"Each L0 run trained its gates with the weights for {steps} steps. Expected sparsity: the gates' "
                      "cost-weighted P(closed) at the last step (the target is the run's sparsity); closed by the gates: the "
                      "block parameters whose deterministic gate is 0; units cut by the gates: the share of the removed heads "
                      "and neurons that the gates had closed (the rest were the open units with the lowest P(open), removed to "
                      "reach the target). Per-language runs: the mean over their models.", "",
                      "| run | expected sparsity, last step | closed by the gates | units cut by the gates |",
                      "|---|---:|---:|---:|", *rows]) + "\n"


def task_markdown(records: list[RunRecord]) -> str:
    results = [r.task_pruning for r in records if r.task_pruning is not None]
    if not results:
        return ""
    separate = [r for r in results if r.kind == "task-structured"]
    dynamic = [r for r in results if r.kind == "task-dynamic"]
    items = statistics.fmean(len(item.keys) for item in results[0].dense.languages)
    lines = ["## Structured pruning after fine-tuning", "",
             f"Accuracy differences in points, paired over the same test items (about {items:.0f} per language), mean "
             "over languages, 95% bootstrap interval; n.s.: the interval contains 0.", ""]
    lines += ["### Against the dense fine-tuned model", "", "| run | pruned - dense |", "|---|---:|"]
    for result in sorted(separate, key=lambda r: (r.units, r.importance, r.setting, r.target_sparsity)):
        lines.append(f"| {_describe(result, '')} | {interval_text(*mean_difference(all_languages(result)), 100, 1)} |")
    for field, a, b, title in (("importance", "gradient", "l0", "L0 against gradient importance"),
                               ("importance", "magnitude", "gradient", "Gradient against magnitude importance"),
                               ("setting", "shared", "per-language", "Per-language against shared models")):
        rows = _versus_rows(separate, field, a, b)
        if rows:
            lines += ["", f"### {title}", "", f"| run | {b} - {a} |", "|---|---:|", *rows]
    gates = l0_gates_markdown(separate)
    if gates:
        lines += ["", gates.rstrip("\n")]
    levels = dynamic_levels(dynamic, separate)
    if levels:
        lines += ["", "### Dynamic Sparsification against separately pruned models", "",
                  "| level | dynamic - dense | dynamic - separate (shared, same units) |", "|---|---:|---:|"]
    for row in levels:
        against = "-" if row.separate is None else f"{interval_text(*row.against_separate, 100, 1)} (vs {row.separate.importance})"
        lines.append(f"| {row.level:.0%} | {interval_text(*row.against_dense, 100, 1)} | {against} |")
    return "\n".join(lines) + "\n"


# ----- one-shot evaluation runs -----------------------------------------------------------


def _prune(record: RunRecord) -> PruneConfig:
    return PruneConfig.model_validate(record.config["verb"])


def _amount(config: PruneConfig) -> str:
    return config.pattern if config.nm else f"{config.sparsity:.0%}"


def _is_plain(config: PruneConfig) -> bool:
    """The base the tables compare: no M-Wanda option changed, uniform allocation, no refit.

    Uniform is every other method's default; mwanda's own default is CWL, so its base here is
    mwanda with a uniform allocation (the recipe names it) and CWL is one of its variants.
    """
    return config.mwanda == MWandaConfig() and config.allocation == "uniform" and config.reconstruct is None


def _variant(config: PruneConfig) -> str:
    """What an M-Wanda variant changes from the default: "+ activation probability", "+ CWL", both."""
    parts = ["+ activation probability"] if config.mwanda.activation_prob and not MWandaConfig().activation_prob else []
    parts += [f"+ {config.allocation.upper()}"] if config.allocation != "uniform" else []
    changed = {name for name in MWandaConfig.model_fields if getattr(config.mwanda, name) != getattr(MWandaConfig(), name)}
    parts += [f"{name}={getattr(config.mwanda, name)}" for name in sorted(changed - {"activation_prob"})]
    return " ".join(parts) or "default"


def _contest_row(dense: RunRecord, baseline: RunRecord, candidate: RunRecord, names: tuple[str, str], setting: str) -> list[str]:
    """One table row per evaluation set: candidate against baseline in `setting`, paired over the same windows."""
    rows = []
    for set_name, dense_result in dense.evaluations.items():
        mine, theirs = candidate.evaluations.get(set_name), baseline.evaluations.get(set_name)
        if mine is None or theirs is None:
            continue
        match = contest(dense_result, theirs, mine, *names)
        difference = match.candidate_mean - match.baseline_mean
        rows.append(f"| {setting} | {set_name} | {names[0]} | {match.candidate_mean:+.4f} | {match.baseline_mean:+.4f} | "
                    f"{interval_text(difference, match.mean_difference_interval, 1, 4)} | {match.verdict(match.mean_difference_interval)} |")
    return rows


def oneshot_markdown(records: list[RunRecord], candidate: str = "mwanda", baselines: tuple[str, ...] = ("wanda", "sparsegpt")) -> str:
    """The candidate (its default scoring, uniform allocation) against each baseline in every setting; then each variant of it against that."""
    dense = next((r for r in records if r.kind == "dense" and r.state == "done"), None)
    oneshot = [(r, _prune(r)) for r in records if r.kind == "oneshot" and r.state == "done"]
    plain = {(config.method, _amount(config)): r for r, config in oneshot if _is_plain(config)}
    variants = [(r, config) for r, config in oneshot if config.method == candidate and not _is_plain(config)]
    if dense is None or not plain:
        return ""
    header = ["| setting | evaluation set | baseline | candidate mean | baseline mean | difference [95%] | verdict |",
              "|---|---|---|---:|---:|---|---|"]
    lines = ["## One-shot pruning", "",
             f"{candidate} (its default scoring, uniform allocation) against each baseline in the same setting: the mean over languages of the increase "
             "of bits per byte from dense, and the paired difference (candidate - baseline) with its 95% interval "
             "(bootstrap over evaluation windows); negative: the candidate loses less.", "", *header]
    for amount in sorted({amount for method, amount in plain if method == candidate}):
        for baseline in baselines:
            if (baseline, amount) in plain:
                lines += _contest_row(dense, plain[(baseline, amount)], plain[(candidate, amount)], (baseline, candidate), amount)
    if variants:
        lines += ["", f"### {candidate}'s ablation", "",
                  f"Each variant of {candidate} against {candidate} with its default scoring and a uniform allocation (the baseline column) and against "
                  "wanda, in the same setting and on the same windows.", "", *header]
        for record, config in sorted(variants, key=lambda item: (_amount(item[1]), _variant(item[1]))):
            amount, name = _amount(config), f"{candidate} {_variant(config)}"
            for baseline in (candidate, "wanda"):
                if (baseline, amount) in plain:
                    label = f"{candidate} (uniform)" if baseline == candidate else baseline
                    lines += _contest_row(dense, plain[(baseline, amount)], record, (label, name), f"{amount}, {name}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="the recipe's name (babelprune recipes)")
    parser.add_argument("--store", type=Path, required=True, help="the store the recipe's sweep wrote")
    args = parser.parse_args()
    try:
        with ResultsStore(args.store, create=False) as store:
            records = store.records(sweep=args.recipe, state=None)
        timing = time_markdown(args.recipe, records)
    except BabelpruneError as exc:  # an unknown recipe, a missing or foreign store: one sentence
        raise SystemExit(f"error: {exc}") from None
    done = [r for r in records if r.state == "done"]
    body = ["## Time", "", timing]
    body += [part for part in (finetune_markdown(done), task_markdown(done), oneshot_markdown(done)) if part]
    write_result_table(f"recipe_{args.recipe}", f"The `{args.recipe}` recipe: time and headline comparisons", "\n".join(body))


if __name__ == "__main__":
    main()
