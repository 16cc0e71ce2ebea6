"""Throughput of `evaluate` against a plain forward pass over the same tokens.

    python benchmarks/eval_throughput.py [--model gemma3-270m] [--langs en,fr,sw,zh] [--tokens 1024]

Both sides see the same windows in the same batches. The plain pass is
`model(input_ids, attention_mask)` with its full (B, T, V) logits and nothing
else; evaluation runs the body, then the LM head on real target positions
only, and sums the log-likelihoods. Prints tokens per second of each and
their ratio (evaluate / plain; >= 0.9 means evaluation costs no more than a
forward pass). One untimed call of each side first, then the medians of
--repeats alternating runs. Writes docs/results/eval_throughput.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import repeats_arg, write_result_table
from babelprune.api import get_corpus, load_model
from babelprune.evaluate.lm import length_batches, pad_batch, score_windows
from babelprune.evaluate.windows import make_windows

BENCHMARK = {"minutes": 3}


def plain_forward(model, windows, pad_id, batch_size) -> None:
    with torch.inference_mode():
        for rows in length_batches(windows, batch_size):  # the batches score_windows makes
            ids, mask = pad_batch([windows[i] for i in rows], pad_id, model.device)
            model(input_ids=ids, attention_mask=mask, use_cache=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default="en,fr,sw,zh")
    parser.add_argument("--tokens", type=int, default=1024, help="predicted tokens per language")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=repeats_arg, default=3, help="timed runs of each side (at least 3)")
    args = parser.parse_args()

    loaded = load_model(args.model)
    corpus = get_corpus("bible")
    windows = [w for lang in args.langs.split(",") for w in make_windows(loaded.tokenizer, corpus.texts(lang, "eval"), 256, args.tokens)]
    n_tokens = sum(len(w.ids) for w in windows)
    pad_id = loaded.tokenizer.pad_token_id or 0
    sides = {
        "evaluate": lambda: score_windows(loaded.model, windows, pad_id, args.batch_size),
        "plain forward": lambda: plain_forward(loaded.model, windows, pad_id, args.batch_size),
    }
    for call in sides.values():  # warm-up: first-call allocations and lazy initialisation stay out of the timings
        call()
    timings = {name: [] for name in sides}
    for _ in range(args.repeats):  # alternate, so both sides see the same machine state
        for name, call in sides.items():
            started = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - started)
    setup = f"{args.model}: {len(windows)} windows, {n_tokens} tokens, batch {args.batch_size}, {torch.get_num_threads()} threads"
    print(setup)
    medians = {name: statistics.median(seconds) for name, seconds in timings.items()}
    rates = {name: n_tokens / median for name, median in medians.items()}
    for name in sides:
        print(f"  {name:14s} median {medians[name]:6.2f} s  {rates[name]:8.1f} tokens/s")
    ratio = rates["evaluate"] / rates["plain forward"]
    print(f"  ratio evaluate / plain forward (tokens per second): {ratio:.2f}")
    write_result_table("eval_throughput", "Evaluation throughput", result_markdown(setup, args, medians, rates, ratio))


def result_markdown(setup: str, args, medians: dict[str, float], rates: dict[str, float], ratio: float) -> str:
    return "\n".join([
        f"{setup}; languages {args.langs}, {args.tokens} predicted tokens each. One warm-up call of each side, "
        f"then the median of {args.repeats} alternating runs.",
        "",
        "| | median time | tokens per second |",
        "|---|---|---|",
        f"| `evaluate` | {medians['evaluate']:.2f} s | {rates['evaluate']:.1f} |",
        f"| plain forward pass (full logits) | {medians['plain forward']:.2f} s | {rates['plain forward']:.1f} |",
        f"| **ratio evaluate / plain** | | **{ratio:.2f}** |",
    ])


if __name__ == "__main__":
    main()
