"""Quality against the calibration budget: tokens per run, and number of calibration languages.

    python benchmarks/calib_scaling.py [--budgets 2048,16384,131072] [--language-counts 1,2,4,8,16]
                                       [--methods wanda,mwanda,mwanda+refit] [--tokens 384] [--seq-len 64]

Part 1 keeps the 8 default calibration languages and scales the tokens per
run (windows of 256 tokens, split evenly over the languages: 2k = 1 window
each, 16k = 8, 128k = 64). Part 2 keeps 16k tokens per run and varies the
number of calibration languages (en; en zh; en zh ar sw; the 8 defaults;
16 Bible languages), the windows per language shrinking as languages are
added. Evaluation: held-out Bible text in all 22 languages; for each run
the mean increase of bits per byte over the dense model on the languages it
calibrated and on those it did not, and the worst language. 50%
unstructured. Every run is a cached stage in --out (keyed on all that
decides it), so an interrupted run resumes. Writes
docs/results/calib_scaling.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import cached_stage, restore, snapshot, source_fingerprint, write_result_table
from babelprune.api import DEFAULT_CALIBRATION_LANGUAGES, calibrate, evaluate, get_corpus, load_model
from babelprune.prune.config import PruneConfig, ReconstructConfig
from babelprune.prune.engine import prune
from babelprune.report.contest import contest
from babelprune.report.intervals import resolved
from babelprune.report.records import EvalResult

SEQ_LEN = 256
DEFAULT_WINDOWS = 8  # per language: the 16k-token default every other row is set against
LANGUAGE_SETS = {
    1: ["en"],
    2: ["en", "zh"],
    4: ["en", "zh", "ar", "sw"],
    8: list(DEFAULT_CALIBRATION_LANGUAGES),
    16: list(DEFAULT_CALIBRATION_LANGUAGES) + ["de", "ja", "ko", "tr", "bn", "fa", "id", "uk"],
}
# mwanda's rows are its scoring with a uniform allocation (its default, CWL, needs two calibration
# languages, and docs/results/calib_scaling.md was measured without it).
METHODS = {
    "wanda": {"method": "wanda"},
    "mwanda": {"method": "mwanda", "allocation": "uniform"},
    "mwanda+refit": {"method": "mwanda", "allocation": "uniform", "reconstruct": ReconstructConfig()},
}

BENCHMARK = {"minutes": 120, "args": ["--budgets", "2048,16384"]}


def summary(dense: EvalResult, pruned: EvalResult, calibrated: list[str]) -> tuple[float, float | None, str]:
    """(mean increase on calibrated languages, on the others (None if none), worst language with its increase)."""
    base = {s.language: s.bits_per_byte for s in dense.scores}
    rise = {s.language: s.bits_per_byte - base[s.language] for s in pruned.scores}
    seen = [rise[lang] for lang in rise if lang in calibrated]
    unseen = [rise[lang] for lang in rise if lang not in calibrated]
    worst = max(rise, key=rise.get)
    return sum(seen) / len(seen), (sum(unseen) / len(unseen) if unseen else None), f"{worst} {rise[worst]:+.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--budgets", default="2048,16384,131072", help="calibration tokens per run (part 1)")
    parser.add_argument("--language-counts", default="1,2,4,8,16", help=f"part 2; choose from {', '.join(map(str, LANGUAGE_SETS))}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tokens", type=int, default=384, help="predicted evaluation tokens per language")
    parser.add_argument("--seq-len", type=int, default=64, help="evaluation window")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results/calib_scaling"))
    args = parser.parse_args()
    methods = args.methods.split(",")
    args.out.mkdir(parents=True, exist_ok=True)

    loaded = load_model(args.model)
    bible = get_corpus("bible")
    dense_weights = snapshot(loaded.model)
    code = source_fingerprint()

    def stage(tag: str, fields: dict, run) -> EvalResult:
        keyed = fields | {"model": args.model, "tokens": args.tokens, "seq_len": args.seq_len, "code": code}
        return EvalResult.model_validate(cached_stage(args.out / f"{tag}.json", keyed, run, tag)["eval"])

    def measure() -> dict:
        return {"eval": evaluate(loaded, bible, None, "eval", args.seq_len, args.tokens, progress=False).model_dump(mode="json")}

    dense = stage("dense", {}, measure)

    def pruned(label: str, languages: list[str], windows: int) -> EvalResult:
        config = PruneConfig(sparsity=0.5, **METHODS[label])

        def run() -> dict:
            restore(loaded.model, dense_weights)
            calibration = calibrate(loaded, bible, languages, windows, SEQ_LEN)
            prune(loaded, config, calibration, progress=False)
            return measure()

        tag = f"{label}_{len(languages)}langs_{windows}windows"
        return stage(tag, {"config": config.to_dict(), "languages": languages, "windows": windows}, run)

    def pruned_row(label: str, languages: list[str], windows: int) -> str:
        result = pruned(label, languages, windows)
        seen, unseen, worst = summary(dense, result, languages)
        # Against the same method with the default calibration (8 languages x 8 windows), paired over every language's windows.
        versus = contest(dense, pruned(label, LANGUAGE_SETS[8], DEFAULT_WINDOWS), result, "default", "this")
        difference = versus.candidate_mean - versus.baseline_mean
        low, high = versus.mean_difference_interval
        against = "-" if (languages, windows) == (LANGUAGE_SETS[8], DEFAULT_WINDOWS) else (
            f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]" + ("" if resolved((low, high)) else " n.s."))
        tokens = len(languages) * windows * SEQ_LEN
        row = (f"| {label} | {len(languages)} | {windows} | {tokens:,} | {seen:+.3f} | "
               f"{'-' if unseen is None else f'{unseen:+.3f}'} | {versus.candidate_mean:+.3f} | {against} | {worst} |")
        print(row, flush=True)
        return row

    head = ["| method | languages | windows per language | tokens | calibrated | not calibrated | all | "
            "all, vs 8 languages x 8 windows [95%] | worst language |",
            "|---|---|---|---|---|---|---|---|---|"]
    part1 = [pruned_row(label, LANGUAGE_SETS[8], max(1, int(budget) // (8 * SEQ_LEN)))
             for budget in args.budgets.split(",") for label in methods]
    part2 = [pruned_row(label, LANGUAGE_SETS[int(count)], max(1, 16384 // (int(count) * SEQ_LEN)))
             for count in args.language_counts.split(",") for label in methods]
    setup = (
        f"{args.model} at 50% unstructured, calibrated on Bible text (calibration split, windows of {SEQ_LEN} tokens); "
        f"evaluated on held-out Bible text in all {len(dense.scores)} languages, about {args.tokens} predicted tokens per "
        f"language in windows of {args.seq_len}. Mean absolute increase of bits per byte over the dense model on the "
        "languages the run calibrated on, on the others and on all; the paired difference of the mean over all languages "
        "against the same method calibrated by default (8 languages x 8 windows), with its bootstrap 95% interval over "
        "windows ('n.s.': it contains 0); the worst language of the run."
    )
    body = "\n\n".join([setup, "## Tokens per run (8 languages)", "\n".join(head + part1),
                        "## Number of calibration languages (16k tokens per run)", "\n".join(head + part2)])
    write_result_table("calib_scaling", "Calibration budget: tokens and languages", body)


if __name__ == "__main__":
    main()
