"""The main job's budget: how long `babelprune demo` takes, and the intervals its token budget gives.

    python benchmarks/demo_budget.py [--store PATH]

Without --store, runs `babelprune demo` in a fresh process in a temporary
folder and times it (wall clock, from the command's start to its report),
then reads the store it wrote. With --store, reads the store of a demo that
already ran (its runs' own seconds and environment are in it; the wall time
of the command is then not known). Writes docs/results/demo_budget.md: the
seconds of every run, and per evaluation set the windows and tokens each
language got, the width of the dense model's 95% interval, and how many of
each method's per-language changes the paired intervals resolve.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result_table
from babelprune.report.compare import compare
from babelprune.report.contest import contest
from babelprune.sweep.store import ResultsStore

BENCHMARK = {"minutes": 15}
BASELINE = "wanda 50%"  # the run every other method is set against


def run_demo(folder: Path) -> tuple[Path, float]:
    """Run the demo as a user would; return its store and the command's wall time in seconds."""
    command = [sys.executable, "-m", "babelprune.cli", "demo", "--out", str(folder / "babelprune-report")]
    clock = time.perf_counter()
    subprocess.run(command, cwd=folder, check=True)
    return folder / "babelprune-report.sqlite", time.perf_counter() - clock


def runs_markdown(records) -> str:
    rows = [f"| {r.label} | {r.state} | {r.seconds:.1f} | {r.measurements.get('prune_seconds', 0):.1f} | "
            f"{r.measurements.get('eval_seconds', 0):.1f} |" for r in records]
    total = sum(r.seconds for r in records)
    return "\n".join(["| run | state | seconds | pruning s | evaluation s |", "|---|---|---:|---:|---:|", *rows,
                      f"| **all runs** | | {total:.1f} | | |"]) + "\n"


def set_markdown(name: str, dense, pruned: dict) -> str:
    """One evaluation set: windows, tokens and interval width per language, and resolved changes per method."""
    scores = dense.scores
    windows = [s.n_windows for s in scores]
    widths = {s.language: s.bits_per_byte_interval for s in scores}
    lines = [f"### {name}: {len(scores)} languages", "",
             f"Windows per language: {min(windows)} to {max(windows)}; predicted tokens per language: "
             f"{min(s.n_tokens for s in scores)} to {max(s.n_tokens for s in scores)}.", "",
             "| language | windows | tokens | dense bits/byte | 95% interval | width |", "|---|---:|---:|---:|---|---:|"]
    for s in scores:
        low, high = widths[s.language] or (float("nan"), float("nan"))
        lines.append(f"| {s.language} | {s.n_windows} | {s.n_tokens} | {s.bits_per_byte:.3f} | {low:.3f}-{high:.3f} | "
                     f"{high - low:.3f} |")
    lines += ["", "| method | languages resolved (interval excludes 0) | median width of the change's interval (points) |",
              "|---|---:|---:|"]
    for label, result in pruned.items():
        changes = compare(dense, result, label=label).changes
        with_interval = [c for c in changes if c.interval is not None]
        resolved = sum(1 for c in with_interval if not c.interval[0] <= 0 <= c.interval[1])
        median = statistics.median(100 * (c.interval[1] - c.interval[0]) for c in with_interval) if with_interval else float("nan")
        lines.append(f"| {label} | {resolved} of {len(changes)} | {median:.1f} |")
    lines += ["", f"Each method against {BASELINE}: mean increase of bits per byte over the languages, the paired "
              "difference with its 95% interval (bootstrap over windows), and whether the budget resolves it.", "",
              f"| method | mean increase | {BASELINE}'s | difference [95% interval] | verdict |", "|---|---:|---:|---|---|"]
    for label, result in pruned.items():
        if label == BASELINE or BASELINE not in pruned:
            continue
        match = contest(dense, pruned[BASELINE], result, BASELINE, label)
        low, high = match.mean_difference_interval
        difference = match.candidate_mean - match.baseline_mean
        lines.append(f"| {label} | {match.candidate_mean:+.4f} | {match.baseline_mean:+.4f} | {difference:+.4f} "
                     f"[{low:+.4f}, {high:+.4f}] | {match.verdict(match.mean_difference_interval)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="the store of a demo that already ran (default: run the demo now)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        store_path, wall = (args.store, None) if args.store else run_demo(Path(name))
        with ResultsStore(store_path, create=False) as store:
            records = sorted(store.records(state=None), key=lambda r: r.started)
    dense = next(r for r in records if r.kind == "dense")
    pruned = [r for r in records if r.kind != "dense" and r.state == "done"]
    environment = dense.environment
    timing = (f"`babelprune demo` took **{wall / 60:.1f} min** from start to report (wall clock), in a fresh process "
              "with the model already converted in the cache." if wall is not None else
              "The demo ran before this script (--store): the command's wall time is not known here; the runs' own "
              "seconds are below.")
    body = [timing, "", f"The runs recorded: commit {environment.get('commit')}, {environment.get('threads')} torch "
            f"threads, host {environment.get('host')}.", "", "## Runs", "", runs_markdown(records),
            "## What the token budget gives", ""]
    for set_name in dense.evaluations:
        body.append(set_markdown(set_name, dense.evaluations[set_name],
                                 {r.label: r.evaluations[set_name] for r in pruned if set_name in r.evaluations}))
    write_result_table("demo_budget", "The main job: time and intervals of `babelprune demo`", "\n".join(body))


if __name__ == "__main__":
    main()
