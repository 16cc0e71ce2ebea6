"""How many calibration windows CWL needs: the block ordering it gives, compared across seeds.

    python benchmarks/cwl_stability.py [--allocation-samples 1 2] [--seeds 0 1 2] [--allocation cwl|owl]

For each budget k (windows of 256 tokens per language, 8 Bible languages)
and each seed, the CWL pre-pass measures every block's cross-lingual
correlation on k windows per language drawn with that seed. The script prints,
for each k, the Spearman correlation between the blocks' values (their
ordering is what decides the sparsities) for every pair of seeds, and their
minimum, then how well each budget's seed-averaged values agree with those of
the largest budget. A budget is stable when every pair of seeds agrees at 0.9
or above. `--allocation owl` asks the same of OWL's outlier ratios, which
read the same pre-pass. Writes the table into docs/results/<allocation>_stability.md.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from _common import write_result_table
from babelprune.api import calibrate, load_model
from babelprune.models.adapters import adapter_for
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import allocate_blocks
from babelprune.report.compare import spearman

LANGUAGES = ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
STABLE = 0.9  # every pair of seeds must order the blocks at least this alike

BENCHMARK = {"minutes": 6}


def block_values(loaded, allocation: str, samples: int, seq_len: int, seed: int) -> list[float]:
    """The allocation's per-block measure (CWL: cross-lingual correlation) from `samples` windows per language."""
    calibration = calibrate(loaded, "bible", LANGUAGES, samples, seq_len, seed)
    config = PruneConfig(method="wanda", allocation=allocation, allocation_samples=samples)
    _, stats = allocate_blocks(loaded.model, adapter_for(loaded.model), config, calibration)
    return stats["cross_lingual_correlation" if allocation == "cwl" else "outlier_ratio"]


def ordering_agreement(first: list[float], second: list[float]) -> float:
    """Spearman correlation of two runs' block values: 1 means the same block ordering."""
    return spearman(first, second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--allocation-samples", type=int, nargs="+", default=[1, 2], help="windows per language to try")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--allocation", choices=["cwl", "owl"], default="cwl")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("give at least two --seeds to compare")

    loaded = load_model(args.model)
    pairs = list(itertools.combinations(args.seeds, 2))
    header = " ".join(f"{a}-{b}".rjust(6) for a, b in pairs)
    print(f"{args.model}: Spearman correlation of {args.allocation}'s block values between seeds ({len(LANGUAGES)} languages)")
    print(f"{'windows':>7s} {header} {'min':>6s} {'stable':>6s} {'s/run':>6s}")
    rows = [f"| windows per language | {' | '.join(f'seeds {a}-{b}' for a, b in pairs)} | min | stable |",
            "|---|" + "---|" * (len(pairs) + 2)]
    seed_means = {}
    for samples in args.allocation_samples:
        started = time.perf_counter()
        values = {seed: block_values(loaded, args.allocation, samples, args.seq_len, seed) for seed in args.seeds}
        seconds = (time.perf_counter() - started) / len(args.seeds)
        seed_means[samples] = torch.tensor(list(values.values()), dtype=torch.float64).mean(dim=0).tolist()
        agreement = [ordering_agreement(values[a], values[b]) for a, b in pairs]
        stable = "yes" if min(agreement) >= STABLE else "no"
        cells = " ".join(f"{value:6.3f}" for value in agreement)
        print(f"{samples:7d} {cells} {min(agreement):6.3f} {stable:>6s} {seconds:6.1f}", flush=True)
        rows.append(f"| {samples} | {' | '.join(f'{value:.3f}' for value in agreement)} | {min(agreement):.3f} | {stable} |")
    largest = max(seed_means)
    rows += ["", f"Agreement of each budget's seed-averaged block values with those of {largest} windows:", "",
             "| windows per language | Spearman |", "|---|---|"]
    print(f"agreement of the seed-averaged block values with those of {largest} windows:")
    for samples, means in seed_means.items():
        print(f"{samples:7d} {ordering_agreement(means, seed_means[largest]):6.3f}")
        rows.append(f"| {samples} | {ordering_agreement(means, seed_means[largest]):.3f} |")
    note = (
        f"\nModel {args.model}; calibration: Bible calibration split, {', '.join(LANGUAGES)}, windows of "
        f"{args.seq_len} tokens, seeds {', '.join(map(str, args.seeds))}. Stable: every pair of seeds at {STABLE} or above.\n"
    )
    title = f"{args.allocation.upper()} block ordering across calibration seeds"
    write_result_table(f"{args.allocation}_stability", title, "\n".join(rows) + "\n" + note)


if __name__ == "__main__":
    main()
