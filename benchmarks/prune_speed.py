"""Pruning time and memory on a real model, as ratios measured in one run.

    python benchmarks/prune_speed.py [--model gemma3-270m] [--langs en,es,fr,zh,ru,ar,hi,sw] [--samples 8]

For each method, a fresh process loads the model, times one forward pass of
the model's blocks (no LM head) over the calibration tokens, then prunes at
50% and reports:
  time ratio   = pruning wall time / that forward pass
  memory ratio = (peak RSS while pruning - RSS before the model was loaded) / dense model bytes
Methods: magnitude, wanda (one-pass and two-pass), mwanda, sparsegpt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

# (method, order, allocation, windows per forward: 0 = all at once)
RUNS = [
    ("magnitude", "one-pass", "uniform", 0),
    ("wanda", "one-pass", "uniform", 0),
    ("wanda", "two-pass", "uniform", 0),
    ("wanda", "two-pass", "uniform", 8),
    ("mwanda", "one-pass", "cwl", 0),
    ("sparsegpt", "one-pass", "uniform", 0),
    ("sparsegpt", "two-pass", "uniform", 8),
]


def measure(args) -> dict:
    """One method, in this process."""
    import torch

    from _common import PeakRSS, rss
    from babelprune.api import calibrate, load_model
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.config import PruneConfig
    from babelprune.prune.engine import prune
    from babelprune.prune.sequential import capture_block_inputs, run_block

    before_model = rss()
    loaded = load_model(args.model)
    dense_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    calibration = calibrate(loaded, "bible", args.langs.split(","), args.samples, args.seq_len)
    adapter = adapter_for(loaded.model)
    with torch.no_grad():
        started = time.perf_counter()
        inputs = capture_block_inputs(loaded.model, adapter, calibration.ids)
        for index, block in enumerate(adapter.get_blocks(loaded.model)):
            inputs.hidden = run_block(block, adapter, inputs, index)
        forward = time.perf_counter() - started
    del inputs
    config = PruneConfig(
        method=args.method, sparsity=0.5, order=args.order, allocation=args.allocation, calib_batch=args.calib_batch or None
    )
    with PeakRSS() as peak:
        started = time.perf_counter()
        result = prune(loaded, config, calibration, progress=False)
        seconds = time.perf_counter() - started
    return {
        "method": args.method, "order": args.order, "allocation": args.allocation, "calib_batch": args.calib_batch,
        "tokens": int(calibration.ids.numel()), "forward_s": forward, "prune_s": seconds,
        "time_ratio": seconds / forward, "memory_ratio": (peak.peak - before_model) / dense_bytes,
        "achieved": result.achieved_sparsity, "dense_gb": dense_bytes / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default="en,es,fr,zh,ru,ar,hi,sw")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--method")
    parser.add_argument("--order", default="one-pass")
    parser.add_argument("--allocation", default="uniform")
    parser.add_argument("--calib-batch", type=int, default=0, help="windows per forward in two-pass (0: all)")
    args = parser.parse_args()
    if args.method:  # child process: one measurement, as JSON
        print(json.dumps(measure(args)))
        return
    print(f"{args.model}: calibration {len(args.langs.split(','))} languages x {args.samples} x {args.seq_len} tokens, 50% sparsity")
    print(f"{'method':10s} {'order':9s} {'alloc':8s} {'batch':>5s} {'forward s':>9s} {'prune s':>8s} {'time ratio':>10s} {'memory ratio':>12s}")
    for method, order, allocation, batch in RUNS:
        command = [sys.executable, __file__, "--model", args.model, "--langs", args.langs, "--samples", str(args.samples),
                   "--seq-len", str(args.seq_len), "--method", method, "--order", order, "--allocation", allocation,
                   "--calib-batch", str(batch)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(output)
        print(f"{method:10s} {order:9s} {allocation:8s} {batch or 'all':>5} {row['forward_s']:9.1f} {row['prune_s']:8.1f} "
              f"{row['time_ratio']:10.2f} {row['memory_ratio']:12.2f}", flush=True)


if __name__ == "__main__":
    main()
