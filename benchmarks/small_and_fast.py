"""Small and fast, measured: gemma3-270m dense, trimmed, trimmed + 50% wanda, structured; e5-small trimmed.

    python benchmarks/small_and_fast.py [--model gemma3-270m] [--langs en,es,fr,zh,ru,ar,hi,sw]
        [--verses 200] [--runs 5] [--warmup 2] [--new-tokens 64] [--samples 8] [--ffn 0.3]
        [--encoder e5-small] [--queries 500]

Every model is built, saved to a temporary folder and loaded back through
`load_model(folder)`, as a user of `babelprune bench-speed FOLDER` would
measure it:

* dense: the model's own folder (the alias's converted HF folder);
* trimmed: `trim_vocabulary` to the kept languages' Bible calibration split,
  placeholders dropped (`trim-vocab --drop-reserved`), `save_trimmed`;
* trimmed, --extra UDHR: the same plus the UDHR in the kept languages as extra
  text (size and bits per byte only): what extra text buys and costs;
* trimmed + wanda 50%: the trimmed folder pruned with Wanda, calibrated on
  `--samples` windows per kept language, saved as the sparse copy alone
  (`prune --format sparse`: bitmask + kept values, config, tokenizer, no
  dense HF copy) with fp32, fp16 and bf16 values; each reloads as fp32;
* FFN pruned: `--ffn` of the FFN neurons removed (activation importance, same
  calibration), from the dense and from the trimmed model.

Sizes for every folder; speed (`measure_speeds`: round-robin, warm-up, median
of `--runs`; generation at batch 1, greedy, `--new-tokens` new tokens) and
peak RSS (a fresh process per model) for all but the bf16 and size-only
rows; bits per byte of the kept languages on the first `--verses` held-out
verses of each, read whole by every model in blocks of consecutive verses,
one block per window, so that windows pair across tokenizers and `compare`'s
intervals are paired; the held-out tokens the
trimmed vocabulary lacks, with what `--min-count` and `--extra` text change;
and e5-small trimmed to the same languages, English-to-X retrieval on the
evaluation split. The targets are checked by the script. Writes
docs/results/small_and_fast.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads

import argparse  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import repeats_arg, write_result_table  # noqa: E402
from _small_and_fast_parts import (  # noqa: E402
    Target,
    coverage_markdown,
    encoder_markdown,
    held_out_blocks,
    quality_markdown,
    size_markdown,
    speed_summary_markdown,
    targets_markdown,
)
from babelprune.api import DEFAULT_CALIBRATION_LANGUAGES, calibrate, evaluate, get_corpus, load_model  # noqa: E402
from babelprune.api import prune, save_pruned, save_trimmed, trim_vocabulary  # noqa: E402
from babelprune.evaluate.speed import footprint_markdown, measure_speeds, speed_markdown  # noqa: E402
from babelprune.formats.structured import save_structured  # noqa: E402
from babelprune.formats.loading import resolve_spec  # noqa: E402
from babelprune.prune.config import PruneConfig  # noqa: E402
from babelprune.prune.structured import structured_prune  # noqa: E402
from babelprune.report.compare import compare  # noqa: E402

BENCHMARK = {"minutes": 60}
WANDA = PruneConfig(method="wanda", sparsity=0.5)
VALUES = ("fp32", "fp16", "bf16")
TRIMMED_EXTRA = "trimmed, --extra UDHR"  # size and quality only: what extra text buys in coverage, and costs in size


def trimmed_folder(model: str, kept: list[str], folder: Path, extra_texts: list[str] = ()):
    loaded = load_model(model)
    trim_vocabulary(loaded, "bible", kept, extra_texts=extra_texts, keep_reserved=False)
    save_trimmed(loaded, folder)
    return loaded.pruning["vocabulary"]


def udhr_texts(kept: list[str]) -> list[str]:
    """The UDHR in the kept languages: the `--extra` text of the coverage trade (another corpus than the held-out Bible)."""
    udhr = get_corpus("udhr")
    return [text for lang in kept if lang in udhr.languages() for text in udhr.texts(lang, "all")]


def wanda_folders(source: Path | str, kept: list[str], samples: int, out: dict[str, Path], fmt: str = "sparse") -> None:
    """Prune `source` once with Wanda 50% and save it to each folder of `out` (values type -> folder)."""
    loaded = load_model(str(source))
    result = prune(loaded, WANDA, calibrate(loaded, "bible", kept, samples), progress=False)
    for values, folder in out.items():
        save_pruned(loaded, result, folder, format=fmt, values=values)


def ffn_folder(source: Path | str, kept: list[str], samples: int, share: float, folder: Path) -> None:
    loaded = load_model(str(source))
    calibration = calibrate(loaded, "bible", kept, samples)
    result = structured_prune(loaded, {"ffn"}, "activation", share, calibration, progress=False)
    save_structured(loaded.model, loaded.tokenizer, folder, result.metadata())


def build_folders(args, kept: list[str], tmp: Path) -> tuple[dict[str, Path], dict]:
    """label -> saved folder of every gemma variant, and the trimming record."""
    folders = {"dense": Path(resolve_spec(args.model))}
    folders["trimmed"] = tmp / "trimmed"
    record = trimmed_folder(args.model, kept, folders["trimmed"])
    print(f"trimmed: {record['kept_tokens']:,} of {record['original_vocab_size']:,} tokens", flush=True)
    folders[TRIMMED_EXTRA] = tmp / "trimmed-extra"
    extra = trimmed_folder(args.model, kept, folders[TRIMMED_EXTRA], udhr_texts(kept))
    print(f"trimmed with --extra UDHR: {extra['kept_tokens']:,} tokens", flush=True)
    wanda = {values: tmp / f"trimmed-wanda50-{values}" for values in VALUES}
    wanda_folders(folders["trimmed"], kept, args.samples, wanda)
    folders |= {f"trimmed + wanda 50%, {values} values": folder for values, folder in wanda.items()}
    print("trimmed + wanda: saved", flush=True)
    ffn = f"ffn {args.ffn:.0%}"
    ffn_folder(args.model, kept, args.samples, args.ffn, tmp / "ffn")
    ffn_folder(folders["trimmed"], kept, args.samples, args.ffn, tmp / "trimmed-ffn")
    folders |= {ffn: tmp / "ffn", f"trimmed + {ffn}": tmp / "trimmed-ffn"}
    print("ffn: saved", flush=True)
    # Size only: today's default folder (HF copy + sparse copy), and the dense vocabulary pruned alone.
    wanda_folders(folders["trimmed"], kept, args.samples, {"fp32": tmp / "trimmed-wanda50-both"}, fmt="both")
    wanda_folders(args.model, kept, args.samples, {"fp32": tmp / "dense-wanda50-sparse"})
    folders["trimmed + wanda 50%, format both (HF copy + sparse copy)"] = tmp / "trimmed-wanda50-both"
    folders["dense vocabulary + wanda 50%, fp32 values"] = tmp / "dense-wanda50-sparse"
    return folders, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default=",".join(DEFAULT_CALIBRATION_LANGUAGES), help="languages kept")
    parser.add_argument("--verses", type=int, default=200, help="held-out verses per language, read whole")
    parser.add_argument("--runs", type=repeats_arg, default=5, help="timed runs per model (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per timed generate call")
    parser.add_argument("--samples", type=int, default=8, help="calibration windows per language")
    parser.add_argument("--ffn", type=float, default=0.3, help="share of FFN neurons removed")
    parser.add_argument("--encoder", default="e5-small", help="encoder trimmed to the same languages ('' to skip)")
    parser.add_argument("--queries", type=int, default=500, help="English-to-X retrieval queries per language")
    args = parser.parse_args()
    kept = args.langs.split(",")

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folders, record = build_folders(args, kept, tmp)
        # The dense model by its name, so that tables call it that; the others by their folders.
        models = {label: load_model(args.model if label == "dense" else str(folder)) for label, folder in folders.items()}
        sizes = size_markdown(models, folders)
        size_only = ("bf16", "format both", "dense vocabulary", "--extra")  # the same model as a timed one, or not asked for
        timed = [label for label in models if not any(part in label for part in size_only)]
        reports = measure_speeds([models[label] for label in timed], runs=args.runs, warmup=args.warmup,
                                 new_tokens=args.new_tokens, memory=True)
        for label, report in zip(timed, reports):
            print(f"{label}: {report.throughput_tokens_per_s:.0f} tokens/s, "
                  f"{report.generate_ms_per_token:.1f} ms/token", flush=True)
        evaluated = ["dense", "trimmed", TRIMMED_EXTRA, *(f"trimmed + wanda 50%, {values} values" for values in VALUES)]
        models = {label: models[label] for label in evaluated}  # the others are freed
        corpus = get_corpus(str(held_out_blocks(kept, args.verses, models["dense"].tokenizer, tmp)))
        results = {label: evaluate(loaded, corpus, kept, "all", max_tokens=10**9, progress=False)
                   for label, loaded in models.items()}
        trimmed_vs_dense = compare(results["dense"], results["trimmed"], label="trimmed")
        quality = quality_markdown(results, kept)
        removed_rows = record["original_vocab_size"] - record["kept_tokens"]
        per_row = (reports[0].n_parameters - reports[1].n_parameters) / max(removed_rows, 1)  # dense, trimmed
        coverage = coverage_markdown(args.model, kept, corpus, record, per_row)
        del models
        encoder = encoder_markdown(args.encoder, kept, args.queries, tmp) if args.encoder else None

    summary, speed_targets = speed_summary_markdown(timed, reports, folders)
    targets: list[Target] = speed_targets + [Target.bits_per_byte(trimmed_vs_dense)] + (encoder[1] if encoder else [])
    body = "\n".join([
        f"{args.model} trimmed to {', '.join(kept)} from the Bible's calibration split (placeholders dropped): "
        f"the text uses {record['seen_tokens']:,} of {record['original_vocab_size']:,} tokens; with what the tokenizer "
        f"needs, {record['kept_tokens']:,} are kept. Every model was saved to a folder and loaded back from it. "
        "Ratios are measured in one run of this script on a shared machine: absolute times are inflated, compare the ratios.",
        "",
        "## Targets",
        "",
        targets_markdown(targets),
        "## Size, speed, generation and memory",
        "",
        summary,
        "## Every saved folder",
        "",
        sizes,
        "## Bits per byte of the kept languages on held-out text",
        "",
        quality,
        "## Held-out tokens the trimmed vocabulary lacks",
        "",
        coverage,
        *([f"## {args.encoder} trimmed: English-to-X retrieval", "", encoder[0]] if encoder else []),
        "## bench-speed's tables",
        "",
        speed_markdown(reports, labels=timed),
        speed_markdown(reports, body=True, labels=timed),
        footprint_markdown(reports, labels=timed),
    ])
    encoder_title = f"; trimmed {args.encoder}" if args.encoder else ""
    write_result_table("small_and_fast", f"Small and fast: trimmed, pruned and structured {args.model}{encoder_title}", body)


if __name__ == "__main__":
    main()
