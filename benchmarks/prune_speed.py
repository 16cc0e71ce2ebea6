"""Pruning time and memory on a real model, as ratios measured in one run.

    python benchmarks/prune_speed.py [--model gemma3-270m] [--langs en,es,fr,zh,ru,ar,hi,sw] [--samples 8]
        [--repeats 3] [--warmup 1] [--only wanda,sparsegpt,...] [--orders one-pass] [--batches 0,8]

For each method, a fresh process loads the model and keeps a copy of its
dense block weights. It then alternates, after --warmup untimed rounds:
one forward pass of the model's blocks (no LM head) over the calibration
tokens on the dense weights, then pruning at 50%, then the dense weights
back. With the medians over --repeats rounds it reports:
  time ratio   = median pruning wall time / median forward pass
  memory ratio = median over rounds of (peak RSS while pruning - RSS before the model was loaded
                 - the dense copy this script keeps) / dense model bytes
Methods: magnitude, wanda and sparsegpt (one-pass and two-pass, all windows in one forward or 8 at a
time), mwanda (uniform allocation, with CWL (its default), with --reconstruct, with both; 8 windows at a time);
--only picks rows by label.
Writes docs/results/prune_speed.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import repeats_arg, write_result_table

BENCHMARK = {"minutes": 150}  # every row at 16k calibration tokens

# (label, method, order, allocation, windows per forward: 0 = all at once, --reconstruct)
RUNS = [
    ("magnitude", "magnitude", "one-pass", "uniform", 0, False),
    ("wanda", "wanda", "one-pass", "uniform", 0, False),
    ("wanda", "wanda", "one-pass", "uniform", 8, False),
    ("wanda", "wanda", "two-pass", "uniform", 0, False),
    ("wanda", "wanda", "two-pass", "uniform", 8, False),
    ("mwanda (uniform)", "mwanda", "one-pass", "uniform", 8, False),
    ("mwanda + CWL", "mwanda", "one-pass", "cwl", 8, False),
    ("mwanda + refit", "mwanda", "one-pass", "uniform", 8, True),
    ("mwanda + CWL + refit", "mwanda", "one-pass", "cwl", 8, True),
    ("sparsegpt", "sparsegpt", "one-pass", "uniform", 0, False),
    ("sparsegpt", "sparsegpt", "one-pass", "uniform", 8, False),
    ("sparsegpt", "sparsegpt", "two-pass", "uniform", 8, False),
]


def measure(args) -> dict:
    """One method, in this process."""
    import torch

    from _common import PeakRSS, restore, rss, seconds_of, snapshot
    from babelprune.api import calibrate, load_model
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.config import PruneConfig, ReconstructConfig
    from babelprune.prune.engine import prune
    from babelprune.prune.sequential import capture_block_inputs, run_block

    before_model = rss()
    loaded = load_model(args.model)
    dense_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    calibration = calibrate(loaded, "bible", args.langs.split(","), args.samples, args.seq_len)
    adapter = adapter_for(loaded.model)
    dense_weights = snapshot(loaded.model)
    copy_bytes = sum(w.numel() * w.element_size() for w in dense_weights.values())
    # Windows per forward shape the calibration statistics only: magnitude, which reads none, takes no batch.
    from babelprune.prune.methods import METHODS

    reads_calibration = METHODS[args.method].needs_calibration or args.reconstruct
    batch = {"calib_batch": args.calib_batch or None} if reads_calibration else {}
    config = PruneConfig(
        method=args.method, sparsity=0.5, order=args.order, allocation=args.allocation, **batch,
        reconstruct=ReconstructConfig() if args.reconstruct else None,
    )

    def forward() -> None:
        with torch.no_grad():
            inputs = capture_block_inputs(loaded.model, adapter, calibration.ids)
            for index, block in enumerate(adapter.get_blocks(loaded.model)):
                inputs.hidden = run_block(block, adapter, inputs, index)

    forwards, prunes, peaks, achieved = [], [], [], 0.0
    for round_index in range(args.warmup + args.repeats):
        restore(loaded.model, dense_weights)
        forward_s = seconds_of(forward)
        with PeakRSS() as peak:
            started = time.perf_counter()
            achieved = prune(loaded, config, calibration, progress=False).achieved_sparsity
            prune_s = time.perf_counter() - started
        if round_index >= args.warmup:
            forwards.append(forward_s)
            prunes.append(prune_s)
            peaks.append(peak.peak - before_model - copy_bytes)
    forward_s, prune_s = statistics.median(forwards), statistics.median(prunes)
    return {
        "method": args.method, "order": args.order, "allocation": args.allocation, "calib_batch": args.calib_batch,
        "tokens": int(calibration.ids.numel()), "forward_s": forward_s, "prune_s": prune_s,
        "time_ratio": prune_s / forward_s, "memory_ratio": statistics.median(peaks) / dense_bytes,
        "achieved": achieved, "dense_gb": dense_bytes / 1e9,
    }


def child_command(args, method: str, order: str, allocation: str, batch: int, refit: bool) -> list[str]:
    return [sys.executable, __file__, "--model", args.model, "--langs", args.langs, "--samples", str(args.samples),
            "--seq-len", str(args.seq_len), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
            "--method", method, "--order", order, "--allocation", allocation, "--calib-batch", str(batch)] + (
                ["--reconstruct"] if refit else [])


def result_markdown(args, rows: list[tuple[str, dict]], planned: int) -> str:
    first = rows[0][1]
    lines = [
        *([f"Rows measured so far: {len(rows)} of {planned} (the run was still going when this was written).", ""]
          if len(rows) < planned else []),
        f"{args.model}, calibration {len(args.langs.split(','))} Bible languages ({args.langs}) x {args.samples} windows "
        f"x {args.seq_len} tokens = {first['tokens']} tokens, 50% sparsity; each row in a fresh process, "
        f"{args.warmup} warm-up round(s), then medians of {args.repeats} rounds of (forward pass, pruning). "
        f"The forward pass is the model's blocks (no LM head) over the calibration tokens, as one batch. "
        f"Memory ratio: peak resident memory while pruning, minus what the process held before loading the model "
        f"(and minus the dense copy the script keeps between rounds), over the dense model's bytes "
        f"({first['dense_gb']:.2f} GB), so it includes the model itself.",
        "",
        "| method | order | allocation | windows per forward | forward s | prune s | time ratio | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows:
        order = "-" if row["method"] == "magnitude" else row["order"]
        batch = "-" if row["method"] == "magnitude" else (row["calib_batch"] or "all")
        lines.append(f"| {label} | {order} | {row['allocation']} | {batch} | {row['forward_s']:.1f} | "
                     f"{row['prune_s']:.1f} | {row['time_ratio']:.2f} | {row['memory_ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default="en,es,fr,zh,ru,ar,hi,sw")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=repeats_arg, default=3, help="timed rounds per method (at least 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    parser.add_argument("--method", help="(internal) measure this method only and print JSON")
    parser.add_argument("--order", default="one-pass")
    parser.add_argument("--allocation", default="uniform")
    parser.add_argument("--calib-batch", type=int, default=0, help="(internal) windows per forward (0: all)")
    parser.add_argument("--reconstruct", action="store_true", help="(internal) refit after the mask")
    parser.add_argument("--only", help="comma-separated labels of the rows to run (default: all)")
    parser.add_argument("--orders", default="one-pass,two-pass", help="with --only: the orders of its rows to run")
    parser.add_argument("--batches", default="0,8", help="with --only: the windows per forward of its rows to run (0: all)")
    args = parser.parse_args()
    if args.method:  # child process: one measurement, as JSON
        print(json.dumps(measure(args)))
        return
    print(f"{args.model}: calibration {len(args.langs.split(','))} languages x {args.samples} x {args.seq_len} tokens, 50% sparsity")
    print(f"{'method':18s} {'order':9s} {'alloc':8s} {'batch':>5s} {'forward s':>9s} {'prune s':>8s} {'time ratio':>10s} {'memory ratio':>12s}")
    rows = []
    batches = [int(b) for b in args.batches.split(",")]
    chosen = [run for run in RUNS if not args.only or (
        run[0] in args.only.split(",") and run[2] in args.orders.split(",") and run[4] in batches)]
    if not chosen:
        parser.error(f"--only names no row; rows: {', '.join(dict.fromkeys(run[0] for run in RUNS))}")
    for label, method, order, allocation, batch, refit in chosen:
        done = subprocess.run(child_command(args, method, order, allocation, batch, refit), capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{label} ({order}, {allocation}) failed:\n{done.stderr[-4000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((label, row))
        print(f"{label:18s} {order:9s} {allocation:8s} {batch or 'all':>5} {row['forward_s']:9.1f} {row['prune_s']:8.1f} "
              f"{row['time_ratio']:10.2f} {row['memory_ratio']:12.2f}", flush=True)
        # Written after every row: a long run that is stopped keeps the rows it measured, and says so.
        write_result_table("prune_speed", "One-shot pruning: time and memory", result_markdown(args, rows, len(chosen)))


if __name__ == "__main__":
    main()
