"""Fast is not small: CPU speed of heads-, FFN- and block-pruned models at the same parameter share.

    python benchmarks/structured_speed.py [--models e5-small,gemma3-270m]
        [--sparsity e5-small=0.3/0.5,gemma3-270m=0.15] [--runs 9] [--threads 2]
        [--json out.json] [--markdown out.md]

For each model, the same share of the block parameters (attention + FFN
linears) is removed three ways with magnitude importance (quality is not the
point here): attention heads only, FFN neurons only, whole blocks (the
nearest whole number of blocks). Each pruned model is saved with
`save_structured` and reloaded through `load_model(folder)`, as a user of
`babelprune bench-speed FOLDER` would measure it. Then the dense and pruned
models are timed round-robin (dense, heads, ffn, blocks, dense, ...) so that
other processes on the machine slow them alike, and the script prints:

  * the side-by-side table (whole model; for causal LMs also the body
    without the LM head, the meaningful figure when a large vocabulary
    dominates the cost);
  * per pruned model: measured speedup (latency at batch 1, throughput at
    the batch size) divided by the FLOP reduction; the target for FFN
    pruning on CPU is at least 0.8;
  * the same ratios from the fastest run of each model, as a check on noise.

A share that heads alone cannot reach (every block keeps at least one head,
and with grouped-query attention every key/value head keeps one query head)
is skipped for heads, with the largest reachable share printed. The tables
and ratios are written into docs/results/structured_speed.md.
"""

from __future__ import annotations

import os

# Before torch starts its OpenMP threads: spinning waiters make 2 threads on a busy 2-core machine many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import tempfile
from pathlib import Path

from rich.console import Console

from _common import write_result_table
from babelprune.errors import BabelpruneError
from babelprune.evaluate.speed import (
    SpeedReport,
    measure_speeds,
    speed_markdown,
    speed_ratios,
    speed_table,
)
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel
from babelprune.formats.loading import load_model
from babelprune.formats.structured import save_structured
from babelprune.prune.structured import select_units, structured_prune
from babelprune.prune.structured.importance import magnitude_importance

UNIT_SETS = {"heads": {"heads"}, "ffn": {"ffn"}, "blocks": {"blocks"}}
DEFAULT_SPARSITY = "e5-small=0.3/0.5,gemma3-270m=0.15"
BENCHMARK = {"minutes": 10}
console = Console(width=220)


def max_head_share(loaded: LoadedModel) -> float:
    """The largest share of block parameters that removing heads alone can reach."""
    importance = magnitude_importance(loaded.model, {"heads"}, gqa="query")
    return select_units(loaded.model, importance, 0.999, tolerance=1.0).sparsity


def prune_variant(dense: LoadedModel, unit: str, sparsity: float, folder: Path) -> tuple[LoadedModel, dict]:
    """A pruned copy of `dense`, saved to `folder` and reloaded from it."""
    copied = LoadedModel(model=copy.deepcopy(dense.model), tokenizer=dense.tokenizer, spec=dense.spec, path=None, kind=dense.kind)
    if unit == "blocks":  # every block has the same size: take the nearest whole number of them
        n_blocks = len(adapter_for(copied.model).get_blocks(copied.model))
        sparsity = max(1, round(sparsity * n_blocks)) / n_blocks
    result = structured_prune(copied, UNIT_SETS[unit], "magnitude", sparsity, progress=False, gqa="query")
    save_structured(copied.model, copied.tokenizer, folder, result.metadata())
    del copied
    reloaded = load_model(str(folder))
    widths = result.widths
    summary = {
        "unit": unit, "target": sparsity, "achieved": round(result.achieved_sparsity, 4),
        "blocks": len(widths), "heads": [w["heads"] for w in widths], "ffn": [w["ffn"] for w in widths],
    }
    return reloaded, summary


def variants(dense: LoadedModel, sparsities: list[float], workdir: Path,
             head_cap: float) -> tuple[list[LoadedModel], list[str], list[dict]]:
    console.print(f"{dense.spec}: heads alone can remove at most {head_cap:.1%} of the block parameters")
    models, labels, summaries = [], [], []
    for sparsity in sparsities:
        for unit in UNIT_SETS:
            if unit == "heads" and sparsity > head_cap:
                console.print(f"  skipped heads @ {sparsity:.0%}: above the reachable {head_cap:.1%}")
                continue
            try:
                pruned, summary = prune_variant(dense, unit, sparsity, workdir / f"{dense.spec}-{unit}-{sparsity}")
            except BabelpruneError as exc:
                console.print(f"  skipped {unit} @ {sparsity:.0%}: {exc}")
                continue
            label = f"{unit} {summary['achieved']:.1%}"
            console.print(f"  {label}: heads per block {summary['heads']}, FFN per block {summary['ffn']}")
            models.append(pruned)
            labels.append(label)
            summaries.append(summary)
    return models, labels, summaries


def fastest_run_ratios(dense: SpeedReport, report: SpeedReport, body: bool) -> tuple[float, float]:
    """Speedup / FLOP reduction from the fastest run of each model (latency, throughput)."""
    suffix = "_body" if body and report.has_lm_head else ""
    flops = speed_ratios(dense, report, body).flop_reduction
    latency = min(dense.samples_ms["latency" + suffix]) / min(report.samples_ms["latency" + suffix])
    batch = min(dense.samples_ms["throughput" + suffix]) / min(report.samples_ms["throughput" + suffix])
    return latency / flops, batch / flops


def print_efficiency(reports: list[SpeedReport], labels: list[str], body: bool) -> list[dict]:
    rows = []
    part = "body" if body else "whole model"
    for report, label in zip(reports[1:], labels[1:]):
        ratios = speed_ratios(reports[0], report, body)
        fast_latency, fast_batch = fastest_run_ratios(reports[0], report, body)
        console.print(
            f"  {label:<14} {part}: FLOPs {ratios.flop_reduction:.2f}x fewer, latency {ratios.latency_speedup:.2f}x "
            f"faster, throughput {ratios.throughput_speedup:.2f}x -> speedup/FLOP reduction "
            f"{ratios.latency_efficiency:.2f} (batch 1), {ratios.throughput_efficiency:.2f} (batch); "
            f"fastest runs: {fast_latency:.2f}, {fast_batch:.2f}"
        )
        rows.append({"label": label, "part": part, "flop_reduction": ratios.flop_reduction,
                     "latency_speedup": ratios.latency_speedup, "throughput_speedup": ratios.throughput_speedup,
                     "latency_efficiency": ratios.latency_efficiency, "throughput_efficiency": ratios.throughput_efficiency,
                     "fastest_latency_efficiency": fast_latency, "fastest_throughput_efficiency": fast_batch})
    return rows


def bench_model(spec: str, sparsities: list[float], args, workdir: Path) -> dict:
    dense = load_model(spec)
    head_cap = max_head_share(dense)
    pruned, labels, summaries = variants(dense, sparsities, workdir, head_cap)
    labels = ["dense", *labels]
    console.print(f"{spec}: timing {len(labels)} models round-robin, {args.runs} runs after {args.warmup} warm-up calls ...")
    reports = measure_speeds([dense, *pruned], args.seq_len, args.batch, args.runs, args.warmup, args.threads)
    parts = [False, True] if reports[0].has_lm_head else [False]
    markdown, efficiency = [], []
    for body in parts:
        console.print(speed_table(reports, body=body, labels=labels))
        efficiency += print_efficiency(reports, labels, body)
        markdown.append(speed_markdown(reports, body=body, labels=labels))
    return {"model": spec, "labels": labels, "pruning": summaries, "efficiency": efficiency, "head_cap": head_cap,
            "reports": [r.model_dump() for r in reports], "markdown": markdown}


def parse_sparsity(text: str) -> dict[str, list[float]]:
    """"e5-small=0.3/0.5,gemma3-270m=0.15" -> {"e5-small": [0.3, 0.5], "gemma3-270m": [0.15]}."""
    out = {}
    for item in text.split(","):
        name, _, values = item.partition("=")
        out[name.strip()] = [float(v) for v in values.split("/")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="e5-small,gemma3-270m")
    parser.add_argument("--sparsity", default=DEFAULT_SPARSITY, help="per model: name=s1/s2,...")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    sparsity = parse_sparsity(args.sparsity)
    console.print(
        f"torch threads {args.threads}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; models are timed "
        "interleaved (dense, pruned, dense, pruned, ...) so that load from other processes is shared; "
        "medians of the runs, fastest runs as a check."
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="babelprune-speed-") as tmp:
        for spec in args.models.split(","):
            results.append(bench_model(spec, sparsity.get(spec, [0.3]), args, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text("\n".join(md for r in results for md in r["markdown"]), encoding="utf-8")
    write_result_table("structured_speed", "Structured pruning: speed at the same parameter share",
                       result_markdown(results, args), threads=args.threads)


def efficiency_markdown(rows: list[dict]) -> str:
    lines = ["| model | part | FLOP reduction | latency speedup | throughput speedup | speedup / FLOP reduction (batch 1) "
             "| (batch) | fastest runs (batch 1) | (batch) |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['part']} | {r['flop_reduction']:.2f}x | {r['latency_speedup']:.2f}x | "
              f"{r['throughput_speedup']:.2f}x | {r['latency_efficiency']:.2f} | {r['throughput_efficiency']:.2f} | "
              f"{r['fastest_latency_efficiency']:.2f} | {r['fastest_throughput_efficiency']:.2f} |" for r in rows]
    return "\n".join(lines)


def widths_markdown(summaries: list[dict]) -> str:
    lines = ["| pruned model | achieved | heads per block | FFN neurons per block |", "|---|---|---|---|"]
    lines += [f"| {s['unit']} | {s['achieved']:.1%} | {' '.join(map(str, s['heads']))} | {' '.join(map(str, s['ffn']))} |"
              for s in summaries]
    return "\n".join(lines)


def result_markdown(results: list[dict], args) -> str:
    sections = [
        f"Magnitude importance; each pruned model saved and reloaded from its folder. Timed round-robin "
        f"(dense, heads, ffn, blocks, dense, ...), {args.warmup} warm-up calls each, then medians of {args.runs} runs; "
        f"sequence length {args.seq_len}, throughput at batch {args.batch}, latency at batch 1, "
        f"{args.threads} torch thread(s), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}. "
        "Speedup / FLOP reduction of 1.0 means speed follows FLOPs; the fastest-run columns are a check on noise."
    ]
    for result in results:
        sections.append(f"## {result['model']}")
        sections.append(f"Heads alone can remove at most {result['head_cap']:.1%} of the block parameters.")
        sections += [markdown.strip() for markdown in result["markdown"]]
        sections.append(efficiency_markdown(result["efficiency"]))
        sections.append(widths_markdown(result["pruning"]))
    return "\n\n".join(sections)


if __name__ == "__main__":
    main()
