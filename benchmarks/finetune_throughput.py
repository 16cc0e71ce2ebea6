"""Fine-tuning throughput with and without gradual-pruning masks, in one process.

    python benchmarks/finetune_throughput.py [--model e5-small] [--steps 8] [--batch-size 16] [--threads 1]

Both sides run the same training steps (same batches of `bible-genre`
English verses, AdamW, clipping) on the same head; the masked side also
zeroes the pruned gradients before each optimizer step and re-applies the
masks after it (what `GradualPruner` does at every step between updates).
The two sides alternate, so they see the same machine state. Prints
examples per second of each, their ratio (masked / plain; >= 0.9 means the
masks cost at most 10%), and the time of one full mask update (a magnitude
ranking of every matrix, done only at the schedule's update steps). Each
side gets one untimed warm-up pass over the batches, then the medians of
--repeats alternating runs are compared. Writes
docs/results/finetune_throughput.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import repeats_arg, timed_median, write_result_table
from babelprune.data.tasks import get_task
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.heads import encode
from babelprune.finetune.trainer import build_head, make_optimizer
from babelprune.prune.gradual import GMPConfig, GradualPruner

BENCHMARK = {"minutes": 2, "args": ["--threads", "1"]}


def timed_steps(head, optimizer, batches, pruner: GradualPruner | None) -> float:
    """Seconds for one optimizer step per batch, masks handled when `pruner` is given."""
    head.train()
    started = time.perf_counter()
    for batch in batches:
        loss = head.loss(head(batch), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if pruner is not None:
            pruner.mask_gradients()
        torch.nn.utils.clip_grad_norm_([p for p in head.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        if pruner is not None:
            pruner.apply_masks()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=repeats_arg, default=3, help="timed runs of each side (at least 3)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = get_task("bible-genre", languages=["en"], max_per_label=40)
    config = FinetuneConfig(batch_size=args.batch_size)
    head, tokenizer = build_head(args.model, task, config)
    optimizer, _ = make_optimizer(head, config, total_steps=1000)
    examples = task.examples("en", "train")
    batches = [
        encode(tokenizer, examples[i * args.batch_size : (i + 1) * args.batch_size], task.kind, 128, config.text_prefix)
        for i in range(args.steps)
    ]
    pruner = GradualPruner(head.encoder, GMPConfig(final_sparsity=args.sparsity, end_step=0))
    # Updating again at the same sparsity redoes the same ranking: a fair repeat of the same work.
    update_seconds = timed_median(lambda: pruner.update_masks(args.sparsity), args.repeats)

    timed_steps(head, optimizer, batches, None)  # warm-up of both sides, untimed
    timed_steps(head, optimizer, batches, pruner)
    timings: dict[str, list[float]] = {"plain": [], "masked": []}
    for _ in range(args.repeats):
        timings["plain"].append(timed_steps(head, optimizer, batches, None))
        timings["masked"].append(timed_steps(head, optimizer, batches, pruner))
    n_examples = sum(len(b) for b in batches)
    rates = {side: n_examples / statistics.median(seconds) for side, seconds in timings.items()}
    setup = f"model {args.model}, {args.steps} steps of {args.batch_size} examples, {torch.get_num_threads()} threads"
    ratio = rates["masked"] / rates["plain"]
    update = f"one mask update ({len(pruner.targets)} matrices, {args.sparsity:.0%})"
    print(setup)
    for side, rate in rates.items():
        print(f"  {side:>6}: {rate:6.1f} examples/s")
    print(f"  ratio masked / plain: {ratio:.3f}")
    print(f"  {update}: {update_seconds:.2f} s")
    body = "\n".join([
        f"{setup}; one warm-up pass of each side, then the median of {args.repeats} alternating runs.",
        "",
        "| side | examples per second |",
        "|---|---|",
        *(f"| {side} | {rate:.1f} |" for side, rate in rates.items()),
        f"| **ratio masked / plain** | **{ratio:.3f}** |",
        "",
        f"Median time of {update}: {update_seconds:.2f} s.",
    ])
    write_result_table("finetune_throughput", "Fine-tuning throughput with gradual-pruning masks", body)


if __name__ == "__main__":
    main()
