"""Per-language quality after one-shot pruning: dense vs each method, at 50% and 2:4.

    python benchmarks/prune_quality.py [--tokens 512] [--out benchmark-results/quality]

Calibration: 8 Bible languages (en es fr zh ru ar hi sw; 8 x 256 tokens
each, calibration split). Evaluation: held-out Bible text (evaluation split)
in all 22 languages, so 14 of them were never seen in calibration. Prints
the per-language bits per byte and the summary rows (mean, worst, by
resource level); writes every result as JSON in --out, and the tables and
degradation charts into docs/results/prune_quality.md and
docs/results/prune_quality-<pattern>.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import figure_path, restore, snapshot, write_result_table
from babelprune.api import calibrate, evaluate, get_corpus, load_model
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import prune
from babelprune.report.compare import compare
from babelprune.report.plots import degradation_chart
from babelprune.report.tables import comparison_markdown, comparison_table
from rich.console import Console

CALIBRATED = ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
METHODS = ["magnitude", "wanda", "ria", "sparsegpt", "mwanda"]

BENCHMARK = {"minutes": 15}


def correlation_row(comparisons: list) -> str:
    """Spearman correlation between resource class and loss, one cell per method (the table's last row)."""
    cells = [f"{r:+.2f}" if (r := c.resource_correlation()) is not None else "-" for c in comparisons]
    return "| Spearman(resource, loss) | | | " + " | ".join(cells) + " |"


def pattern_title(pattern: str) -> str:
    return "50% unstructured" if pattern == "unstructured" else f"{pattern} (50%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--tokens", type=int, default=512, help="predicted tokens per language")
    parser.add_argument("--patterns", default="unstructured,2:4")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results/quality"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(width=200)

    loaded = load_model(args.model)
    bible = get_corpus("bible")
    calibration = calibrate(loaded, bible, CALIBRATED, 8, 256)
    dense_weights = snapshot(loaded.model)
    dense = evaluate(loaded, bible, None, "eval", max_tokens=args.tokens, progress=False)
    dense.save(args.out / "dense.json")
    sections = [
        f"{args.model}; calibration: {len(CALIBRATED)} Bible languages ({', '.join(CALIBRATED)}), 8 x 256 tokens each, "
        f"calibration split; evaluation: held-out Bible text (evaluation split), {args.tokens} predicted tokens in each of "
        f"{len(dense.scores)} languages, so {len(dense.scores) - len(CALIBRATED)} were never seen in calibration; "
        "M-Wanda with its defaults. Bits per byte, and relative change from dense; the Spearman row correlates "
        "resource class with loss."
    ]
    for pattern in args.patterns.split(","):
        comparisons = []
        for method in METHODS:
            restore(loaded.model, dense_weights)
            loaded.pruning = None
            result = prune(loaded, PruneConfig(method=method, sparsity=0.5, pattern=pattern), calibration, progress=False)
            loaded.pruning = result.metadata()
            pruned = evaluate(loaded, bible, None, "eval", max_tokens=args.tokens, progress=False)
            tag = pattern.replace(":", "of")
            pruned.save(args.out / f"{method}_{tag}.json")
            comparisons.append(compare(dense, pruned))
            console.print(f"{method} {pattern}: pruned in {result.seconds:.1f} s, mean +{100 * comparisons[-1].mean_degradation:.1f}%")
        console.print(comparison_table(comparisons))
        tag = pattern.replace(":", "of")
        chart = degradation_chart(comparisons, figure_path(f"prune_quality-{tag}"))
        sections.append(f"## {pattern_title(pattern)}\n\n{comparison_markdown(comparisons)}{correlation_row(comparisons)}\n\n"
                        f"![degradation per language, {pattern}]({chart.name})")
    write_result_table("prune_quality", "One-shot pruning: quality per language", "\n\n".join(sections))
    console.print(f"calibration languages: {', '.join(CALIBRATED)}; all others are unseen")


if __name__ == "__main__":
    main()
