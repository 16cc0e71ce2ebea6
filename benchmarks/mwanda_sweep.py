"""The small sweep behind M-Wanda's defaults: each part alone, then together, against Wanda.

    python benchmarks/mwanda_sweep.py [--sparsity 0.5] [--tokens 256]

Calibration: 8 Bible languages (8 x 256 tokens each, calibration split).
Held-out development text: the UDHR (another corpus) in those 8 languages and
in 8 languages that were not calibrated on. For each configuration the script
prints the mean and worst relative increase of bits per byte over the dense
model, for calibrated and unseen languages, and writes the table into
docs/results/mwanda_sweep.md. Needs `babelprune data fetch udhr`.
"""

from __future__ import annotations

import argparse
import time

from _common import restore, snapshot, write_result_table
from babelprune.api import calibrate, evaluate, get_corpus, load_model
from babelprune.prune.config import MWandaConfig, PruneConfig
from babelprune.prune.engine import prune
from babelprune.report.compare import compare

CALIBRATED = ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
UNSEEN = ["de", "it", "pt", "ja", "ko", "tr", "id", "vi"]
OFF = dict(language_aware=False, activation_prob=False)

BENCHMARK = {"minutes": 10}


def configurations(s: float) -> list[tuple[str, PruneConfig]]:
    def mwanda(allocation="uniform", **parts):
        return PruneConfig(method="mwanda", sparsity=s, allocation=allocation, mwanda=MWandaConfig(**(OFF | parts)))

    return [
        ("wanda", PruneConfig(method="wanda", sparsity=s)),
        ("wanda + owl", PruneConfig(method="wanda", sparsity=s, allocation="owl")),
        ("LA alpha=0.5", mwanda(language_aware=True, alpha=0.5)),
        ("LA alpha=1", mwanda(language_aware=True, alpha=1.0)),
        ("LA alpha=2", mwanda(language_aware=True, alpha=2.0)),
        ("AP beta=0.5", mwanda(activation_prob=True, beta=0.5)),
        ("AP beta=1", mwanda(activation_prob=True, beta=1.0)),
        ("AP beta=2", mwanda(activation_prob=True, beta=2.0)),
        ("CWL", mwanda(allocation="cwl")),
        ("LA1 + AP1", mwanda(language_aware=True, alpha=1.0, activation_prob=True, beta=1.0)),
        ("LA1 + AP1 + CWL", mwanda(allocation="cwl", language_aware=True, alpha=1.0, activation_prob=True, beta=1.0)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--tokens", type=int, default=256, help="predicted tokens per language")
    args = parser.parse_args()

    loaded = load_model(args.model)
    dev = get_corpus("udhr")
    languages = [lang for lang in CALIBRATED + UNSEEN if lang in dev.languages()]
    calibration = calibrate(loaded, "bible", CALIBRATED, 8, 256)
    dense_weights = snapshot(loaded.model)
    dense = evaluate(loaded, dev, languages, "all", max_tokens=args.tokens, progress=False)
    print(f"{args.model} at {args.sparsity:.0%}, dev = UDHR, {len(languages)} languages; relative bits-per-byte increase over dense")
    print(f"{'configuration':18s} {'mean':>7s} {'worst':>14s} {'calibrated':>10s} {'unseen':>7s} {'prune s':>8s}")
    rows = ["| configuration | mean | worst language | calibrated | unseen |", "|---|---|---|---|---|"]
    for label, config in configurations(args.sparsity):
        restore(loaded.model, dense_weights)
        started = time.perf_counter()
        prune(loaded, config, calibration, progress=False)
        seconds = time.perf_counter() - started
        result = compare(dense, evaluate(loaded, dev, languages, "all", max_tokens=args.tokens, progress=False), label)
        by_lang = {c.language: result.degradation(c) for c in result.changes}
        seen = sum(by_lang[lang] for lang in CALIBRATED if lang in by_lang) / sum(lang in by_lang for lang in CALIBRATED)
        unseen = sum(by_lang[lang] for lang in UNSEEN if lang in by_lang) / sum(lang in by_lang for lang in UNSEEN)
        worst = f"{result.worst.language} {100 * result.degradation(result.worst):+.1f}%"
        print(f"{label:18s} {100 * result.mean_degradation:+6.1f}% {worst:>14s} {100 * seen:+9.1f}% {100 * unseen:+6.1f}% {seconds:8.1f}", flush=True)
        rows.append(f"| {label} | {100 * result.mean_degradation:+.1f}% | {worst} | {100 * seen:+.1f}% | {100 * unseen:+.1f}% |")
    seen_langs = [lang for lang in CALIBRATED if lang in languages]
    unseen_langs = [lang for lang in UNSEEN if lang in languages]
    setup = (
        f"{args.model} at {args.sparsity:.0%}; calibration: {len(CALIBRATED)} Bible languages ({', '.join(CALIBRATED)}) "
        f"x 8 windows x 256 tokens; development text: the UDHR (another corpus), {args.tokens} predicted tokens in each of "
        f"{len(languages)} languages: calibrated {', '.join(seen_langs)}; unseen {', '.join(unseen_langs)}. "
        "Relative increase of bits per byte over the dense model (lower is better). LA = language-aware statistics, "
        "AP = activation probability, CWL = cross-lingual layer-wise sparsity."
    )
    write_result_table("mwanda_sweep", "M-Wanda defaults: each part against Wanda", setup + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
