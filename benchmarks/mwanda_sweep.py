"""The small sweep behind M-Wanda's defaults: each part alone, then together, against Wanda.

    python benchmarks/mwanda_sweep.py [--sparsity 0.5] [--tokens 384] [--seq-len 64]
                                      [--only 'wanda,sparsegpt,...' --table recommended_config]

Calibration: 8 Bible languages (8 x 256 tokens each, calibration split).
Held-out development text: the UDHR (another corpus) in those 8 languages and
in 8 languages that were not calibrated on. For each configuration the script
prints the mean and worst absolute increase of bits per byte over the dense
model, for calibrated and unseen languages, and the paired difference
against Wanda with its 95% interval, and writes the table into
docs/results/mwanda_sweep.md. Needs `babelprune data fetch udhr`.

Each configuration's evaluation is kept in benchmark-results/mwanda_sweep/
(keyed on the configuration, the budget and the code), so adding a row to
the table runs only that row. `--only` runs (and tables) just the rows it
names, wanda always among them, into the table `--table` names.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from _common import cached_stage, restore, snapshot, source_fingerprint, write_result_table
from babelprune.api import calibrate, evaluate, get_corpus, load_model
from babelprune.prune.config import MWandaConfig, PruneConfig, ReconstructConfig
from babelprune.prune.engine import prune
from babelprune.report.records import EvalResult
from babelprune.report.contest import contest, contest_markdown
from babelprune.report.intervals import resolved

CALIBRATED = ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
UNSEEN = ["de", "it", "pt", "ja", "ko", "tr", "id", "vi"]
OFF = dict(language_aware=False, activation_prob=False)
# The recommended configuration when this table was made (M-Wanda's scoring, uniform allocation, + --reconstruct)
# and the rows that could replace it. Every mwanda row names its allocation (mwanda's default is now CWL).
RECOMMENDED = "LA alpha=0.5 + refit"
CHALLENGERS = ("sparsegpt", "LA alpha=0.5 + CWL + refit", "sparsegpt mask + refit")

BENCHMARK = {"minutes": 45}


def configurations(s: float) -> list[tuple[str, PruneConfig]]:
    def mwanda(allocation="uniform", reconstruct=None, **parts):
        return PruneConfig(method="mwanda", sparsity=s, allocation=allocation, mwanda=MWandaConfig(**(OFF | parts)),
                           reconstruct=reconstruct)

    return [
        ("wanda", PruneConfig(method="wanda", sparsity=s)),
        # The candidates for the recommended configuration first (the rows with the refit of the kept
        # weights, --reconstruct, and SparseGPT), so that an interrupted run has kept the ones that decide it.
        ("sparsegpt", PruneConfig(method="sparsegpt", sparsity=s)),
        ("LA alpha=0.5 + refit", mwanda(language_aware=True, alpha=0.5, reconstruct=ReconstructConfig())),
        ("LA alpha=0.5 + CWL + refit", mwanda(allocation="cwl", language_aware=True, alpha=0.5, reconstruct=ReconstructConfig())),
        ("sparsegpt mask + refit", PruneConfig(method="sparsegpt", sparsity=s, reconstruct=ReconstructConfig())),
        ("wanda + owl", PruneConfig(method="wanda", sparsity=s, allocation="owl")),
        ("ria", PruneConfig(method="ria", sparsity=s)),
        ("LA alpha=0.5, RIA score", mwanda(language_aware=True, alpha=0.5, score="ria")),
        ("LA alpha=0.5", mwanda(language_aware=True, alpha=0.5)),
        ("LA alpha=1", mwanda(language_aware=True, alpha=1.0)),
        ("LA alpha=2", mwanda(language_aware=True, alpha=2.0)),
        ("AP beta=0.5", mwanda(activation_prob=True, beta=0.5)),
        ("AP beta=1", mwanda(activation_prob=True, beta=1.0)),
        ("AP beta=2", mwanda(activation_prob=True, beta=2.0)),
        ("CWL", mwanda(allocation="cwl")),
        ("LA1 + AP1", mwanda(language_aware=True, alpha=1.0, activation_prob=True, beta=1.0)),
        ("LA1 + AP1 + CWL", mwanda(allocation="cwl", language_aware=True, alpha=1.0, activation_prob=True, beta=1.0)),
        ("LA alpha=0.5 + CWL", mwanda(allocation="cwl", language_aware=True, alpha=0.5)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--tokens", type=int, default=384, help="predicted tokens per language")
    parser.add_argument("--seq-len", type=int, default=64, help="evaluation window (short, so each language has 5 or more)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results/mwanda_sweep"), help="the rows' kept evaluations")
    parser.add_argument("--only", help="comma-separated row labels to run and table (wanda is always added)")
    parser.add_argument("--table", default="mwanda_sweep", help="the table's name under docs/results/")
    args = parser.parse_args()
    rows_to_run = configurations(args.sparsity)
    if args.only:
        wanted = {"wanda", *(label.strip() for label in args.only.split(","))}
        unknown = wanted - {label for label, _ in rows_to_run}
        if unknown:
            parser.error(f"--only names unknown rows {sorted(unknown)}; the rows are: {', '.join(l for l, _ in rows_to_run)}")
        rows_to_run = [(label, config) for label, config in rows_to_run if label in wanted]
    args.out.mkdir(parents=True, exist_ok=True)

    loaded = load_model(args.model)
    dev = get_corpus("udhr")
    languages = [lang for lang in CALIBRATED + UNSEEN if lang in dev.languages()]
    dense_weights = snapshot(loaded.model)
    code = source_fingerprint()
    calibration = functools.cache(lambda: calibrate(loaded, "bible", CALIBRATED, 8, 256))  # only when a row must run

    def measure() -> dict:
        result = evaluate(loaded, dev, languages, "all", args.seq_len, args.tokens, progress=False)
        return {"eval": result.model_dump(mode="json")}

    def stage(label: str, config: PruneConfig | None) -> EvalResult:
        def run() -> dict:
            restore(loaded.model, dense_weights)
            if config is not None:
                prune(loaded, config, calibration(), progress=False)
            return measure()

        fields = {"config": config.to_dict() if config else None, "model": args.model, "tokens": args.tokens,
                  "seq_len": args.seq_len, "languages": languages, "calibration": [CALIBRATED, 8, 256], "code": code}
        tag = label.replace(" ", "_").replace("=", "").replace(",", "").replace("+", "and")
        return EvalResult.model_validate(cached_stage(args.out / f"{tag}.json", fields, run, label)["eval"])

    dense = stage("dense", None)
    results = {label: stage(label, config) for label, config in rows_to_run}
    rows = ["| configuration | mean increase | vs wanda [95% interval] | worst language | calibrated | unseen |",
            "|---|---|---|---|---|---|"]
    for label, pruned in results.items():
        versus = contest(dense, results["wanda"], pruned, "wanda", label)
        by_lang = {c.language: c.candidate_increase for c in versus.languages}
        seen = [by_lang[lang] for lang in CALIBRATED if lang in by_lang]
        unseen = [by_lang[lang] for lang in UNSEEN if lang in by_lang]
        worst = versus.candidate_worst
        low, high = versus.mean_difference_interval
        cell = "-" if label == "wanda" else (
            f"{versus.candidate_mean - versus.baseline_mean:+.4f} [{low:+.4f}, {high:+.4f}]"
            + ("" if resolved((low, high)) else " n.s.")
        )
        rows.append(f"| {label} | {versus.candidate_mean:+.4f} | {cell} | {worst.language} {worst.candidate_increase:+.4f} "
                    f"| {sum(seen) / len(seen):+.4f} | {sum(unseen) / len(unseen):+.4f} |")
        print(rows[-1], flush=True)
    seen_langs = [lang for lang in CALIBRATED if lang in languages]
    unseen_langs = [lang for lang in UNSEEN if lang in languages]
    setup = (
        f"{args.model} at {args.sparsity:.0%}; calibration: {len(CALIBRATED)} Bible languages ({', '.join(CALIBRATED)}) "
        f"x 8 windows x 256 tokens; development text: the UDHR (another corpus), {args.tokens} predicted tokens in each of "
        f"{len(languages)} languages: calibrated {', '.join(seen_langs)}; unseen {', '.join(unseen_langs)}. "
        f"windows of {args.seq_len} tokens. Absolute increase of bits per byte over the dense model (lower is better); "
        "the paired difference against Wanda carries its bootstrap 95% interval over windows, 'n.s.' when it contains 0. "
        "LA = language-aware statistics, "
        "AP = activation probability, CWL = cross-lingual layer-wise sparsity."
    )
    challengers = [contest_markdown(contest(dense, results[RECOMMENDED], results[label], RECOMMENDED, label))
                   for label in CHALLENGERS if RECOMMENDED in results and label in results]
    second = "" if not challengers else (f"## The recommended configuration ({RECOMMENDED}) against the rows that could replace it\n\n"
              "Same development text; a negative difference favours the challenger.\n\n" + "\n\n".join(challengers))
    print(second, flush=True)
    title = ("M-Wanda defaults: each part against Wanda" if not args.only
             else "The recommended configuration: candidates on development languages")
    write_result_table(args.table, title,
                       setup + "\n\n" + "\n".join(rows) + "\n\n" + second)


if __name__ == "__main__":
    main()
