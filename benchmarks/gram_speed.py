"""How much the banded Gram product saves: `stats.gram(X)` against `X.T @ X`.

Every Hessian the pruners use (SparseGPT, reconstruction) is a sum of
X^T X over calibration batches, so this product is a large share of their
time. `gram` computes only the bands on and above the diagonal and mirrors
them. For each width (gemma3-270m's linear inputs: 640 for attention and
the FFN up/gate projections, 1024 for the attention output, 2048 for the
FFN down projection) and token count, both products run on the same
float32 tokens, once untimed, then `--repeats` times; the table gives both
medians and their ratio, and the largest difference between the results.

    python benchmarks/gram_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch

from _common import repeats_arg, timed_median, write_result_table
from babelprune.prune.stats import gram

BENCHMARK = {"minutes": 2}

WIDTHS = (640, 1024, 2048)
TOKEN_COUNTS = (1024, 2048)


def compare(width: int, tokens: int, repeats: int) -> tuple[float, float, float]:
    """(full seconds, banded seconds, max |difference| / max |X^T X|) at one shape."""
    x = torch.randn(tokens, width, generator=torch.Generator().manual_seed(width + tokens))
    full = timed_median(lambda: x.T @ x, repeats=repeats, warmup=1)
    banded = timed_median(lambda: gram(x), repeats=repeats, warmup=1)
    reference = x.T @ x
    error = ((gram(x) - reference).abs().max() / reference.abs().max()).item()
    return full, banded, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=repeats_arg, default=5, help="timed runs per product (median)")
    args = parser.parse_args()
    rows = []
    for width in WIDTHS:
        for tokens in TOKEN_COUNTS:
            full, banded, error = compare(width, tokens, args.repeats)
            rows.append(f"| {width} | {tokens} | {full * 1000:.1f} | {banded * 1000:.1f} | "
                        f"{banded / full:.2f} | {error:.1e} |")
            print(f"width {width:5d} tokens {tokens:5d}  X.T@X {full * 1000:7.1f} ms  gram {banded * 1000:7.1f} ms"
                  f"  ratio {banded / full:.2f}  rel. diff {error:.1e}", flush=True)
    body = "\n".join([
        f"float32, {torch.get_num_threads()} threads; median of {args.repeats} runs after one warm-up run, "
        "both products on the same tokens. Ratio below 1: `gram` is faster.",
        "",
        "| width | tokens | `X.T @ X` ms | `gram(X)` ms | gram / full | max rel. difference |",
        "|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    write_result_table("gram_speed", "Banded Gram product against the full product", body)


if __name__ == "__main__":
    main()
