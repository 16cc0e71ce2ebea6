"""Per-language quality after one-shot pruning, and babelprune's recommended configuration against the strongest baseline.

    python benchmarks/prune_quality.py [--settings 50%,2:4,60%] [--tokens 640] [--seq-len 128]
                                       [--methods wanda,sparsegpt,...] [--out benchmark-results/quality]
                                       [--table prune_quality]

Calibration: 8 Bible languages (en es fr zh ru ar hi sw; 8 x 256 tokens
each, calibration split). Evaluation: held-out Bible text (evaluation split)
in all 22 languages, so 14 were never seen in calibration, and the UDHR in
16 further languages (scripts such as Burmese, Georgian, Armenian, Tamil,
Amharic and Thai that the calibration lacks; skipped with a note when the
UDHR has not been fetched). For every setting (50% unstructured, 2:4, 60%)
and method it writes:

* the per-language table: dense bits per byte and perplexity (how close to
  memorised the dense model is on that text) and each method's absolute
  increase of bits per byte;
* the contest of the recommended configuration (RECOMMENDED) against the
  strongest baseline on each evaluation set (the baseline with the lowest
  mean increase there): mean and worst-language increase, their paired
  difference with its 95% bootstrap interval, and the verdict;
* the relative view (comparison tables with intervals and a chart).

Each (setting, method) evaluation is cached in --out, keyed on everything
that decides it, so an interrupted run resumes. Tables go to
docs/results/prune_quality.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import cached_stage, figure_path, restore, snapshot, source_fingerprint, write_result_table
from babelprune.api import calibrate, evaluate, get_corpus, load_model
from babelprune.data.bible import BibleCorpus
from babelprune.data.udhr import udhr_available
from babelprune.demo import DEMO_UDHR_LANGUAGES
from babelprune.prune.config import PruneConfig, ReconstructConfig
from babelprune.prune.engine import prune
from babelprune.report.compare import compare
from babelprune.report.contest import contest, contest_markdown
from babelprune.report.plots import degradation_chart
from babelprune.report.records import EvalResult
from babelprune.report.tables import comparison_markdown
from rich.console import Console

CALIBRATED = ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
SETTINGS = {"50%": {"sparsity": 0.5}, "2:4": {"pattern": "2:4"}, "60%": {"sparsity": 0.6}}
# label -> PruneConfig fields. Baselines are the methods that know nothing of languages.
# The mwanda rows without "cwl" name their uniform allocation: mwanda's own default is CWL, and these rows
# (and docs/results/prune_quality.md, measured with them) are M-Wanda's scoring without it.
CANDIDATES = {
    "magnitude": {"method": "magnitude"},
    "wanda": {"method": "wanda"},
    "ria": {"method": "ria"},
    "sparsegpt": {"method": "sparsegpt"},
    "mwanda": {"method": "mwanda", "allocation": "uniform"},
    "wanda + refit": {"method": "wanda", "reconstruct": ReconstructConfig()},
    "mwanda + refit": {"method": "mwanda", "allocation": "uniform", "reconstruct": ReconstructConfig()},
    "mwanda + cwl + refit": {"method": "mwanda", "allocation": "cwl", "reconstruct": ReconstructConfig()},
}
BASELINES = ("magnitude", "wanda", "ria", "sparsegpt")
# Evaluation versions where the default one is close to memorised (benchmarks/bible_versions.py);
# calibration keeps the default versions. The evaluation split holds other chapters than the calibration split.
EVAL_VERSIONS = "en=3"
# The recommended configuration (chosen on development languages: benchmarks/mwanda_sweep.py, table
# recommended_config): M-Wanda's defaults with its cross-lingual layer-wise sparsity, then --reconstruct.
# An N:M pattern fixes every row's sparsity, so there CWL cannot apply and the recommendation drops it.
RECOMMENDED = "mwanda + cwl + refit"
RECOMMENDED_NM = "mwanda + refit"


def recommended_for(setting: str) -> str:
    return RECOMMENDED_NM if "pattern" in SETTINGS[setting] else RECOMMENDED


def applies(label: str, setting: str) -> bool:
    """Whether a candidate can run in a setting: a layer-wise allocation cannot vary an N:M pattern's sparsity."""
    return not ("pattern" in SETTINGS[setting] and CANDIDATES[label].get("allocation", "uniform") != "uniform")

# The code that decides these figures: pruning, evaluation, models, corpora, the records and the verbs
# (the refit defaults in choices.py enter the stage key through the config).
QUALITY_CODE = tuple(f"src/babelprune/{part}" for part in ("prune", "evaluate", "models", "data", "report", "api.py"))

BENCHMARK = {"minutes": 70, "args": ["--methods", "wanda,sparsegpt,mwanda + cwl + refit,mwanda + refit"]}


def absolute_table(dense: EvalResult, results: dict[str, EvalResult]) -> str:
    """Per language: dense bits per byte and perplexity, then each method's increase of bits per byte."""
    labels = list(results)
    lines = ["| language | calibrated | dense bpb | dense ppl | " + " | ".join(labels) + " |",
             "|---|---|---|---|" + "---|" * len(labels)]
    pruned = {label: {s.language: s for s in result.scores} for label, result in results.items()}
    for score in sorted(dense.scores, key=lambda s: s.perplexity):
        cells = [f"{pruned[label][score.language].bits_per_byte - score.bits_per_byte:+.3f}" for label in labels]
        seen = "yes" if score.language in CALIBRATED else ""
        lines.append(f"| {score.language} | {seen} | {score.bits_per_byte:.3f} | {score.perplexity:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def strongest_baseline(dense: EvalResult, results: dict[str, EvalResult]) -> str | None:
    """The baseline with the lowest mean increase of bits per byte on this evaluation set."""
    base = {s.language: s.bits_per_byte for s in dense.scores}

    def mean_increase(result: EvalResult) -> float:
        return sum(s.bits_per_byte - base[s.language] for s in result.scores) / len(result.scores)

    present = [label for label in BASELINES if label in results]
    return min(present, key=lambda label: mean_increase(results[label])) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--settings", default="50%,2:4,60%")
    parser.add_argument("--methods", default=",".join(CANDIDATES), help="comma-separated labels of CANDIDATES")
    parser.add_argument("--tokens", type=int, default=640, help="predicted tokens per language")
    parser.add_argument("--seq-len", type=int, default=128, help="evaluation window; 5 or more per language give intervals")
    parser.add_argument("--eval-versions", default=EVAL_VERSIONS, help="Bible versions for evaluation, e.g. en=3 ('' for the defaults)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results/quality"))
    parser.add_argument("--table", default="prune_quality",
                        help="name of the table in docs/results/ (another name keeps the default table of other settings)")
    args = parser.parse_args()
    versions = dict(item.split("=", 1) for item in args.eval_versions.split(",") if item)
    methods = [label.strip() for label in args.methods.split(",")]
    unknown = [label for label in methods + args.settings.split(",") if label not in CANDIDATES and label not in SETTINGS]
    if unknown:
        parser.error(f"unknown method or setting {', '.join(unknown)}; methods: {', '.join(CANDIDATES)}; settings: {', '.join(SETTINGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(width=200)

    loaded = load_model(args.model)
    eval_bible = BibleCorpus(versions)
    eval_sets = [("bible", eval_bible, None, "eval")]
    udhr_note = "UDHR not fetched: `babelprune data fetch udhr` adds its 16 languages."
    if udhr_available():
        udhr = get_corpus("udhr")
        eval_sets.append(("udhr", udhr, [lang for lang in DEMO_UDHR_LANGUAGES if lang in udhr.languages()], "all"))
        udhr_note = ""
    calibration = calibrate(loaded, "bible", CALIBRATED, 8, 256)
    dense_weights = snapshot(loaded.model)
    code = source_fingerprint(QUALITY_CODE)

    def evaluations(tag: str) -> dict[str, EvalResult]:
        return {name: evaluate(loaded, corpus, langs, split, args.seq_len, args.tokens, progress=False)
                for name, corpus, langs, split in eval_sets}

    def stage(tag: str, fields: dict, run) -> dict[str, EvalResult]:
        record = cached_stage(args.out / f"{tag}.json", fields | {"model": args.model, "tokens": args.tokens,
                              "seq_len": args.seq_len, "sets": [s[0] for s in eval_sets], "versions": versions,
                              "code": code}, run, tag)
        return {name: EvalResult.model_validate(record[name]) for name in (s[0] for s in eval_sets)}

    dense = stage("dense", {}, lambda: {k: v.model_dump(mode="json") for k, v in evaluations("dense").items()})
    header = (
        f"{args.model}; calibration: {len(CALIBRATED)} Bible languages ({', '.join(CALIBRATED)}), 8 x 256 tokens each, "
        f"calibration split. Evaluation: held-out Bible text in {len(dense['bible'].scores)} languages "
        f"({len(dense['bible'].scores) - len(CALIBRATED)} unseen in calibration)"
        + (f" and the UDHR in {len(dense['udhr'].scores)} languages none of which was calibrated" if "udhr" in dense else "")
        + f"; about {args.tokens} predicted tokens per language in windows of {args.seq_len}"
        + "".join(f"; {lang} is evaluated on {eval_bible.version(lang).name} (calibration: "
                  f"{get_corpus('bible').version(lang).name}), see bible_versions.md" for lang in versions)
        + ". Increases are absolute "
        "bits per byte over the dense model; intervals are paired bootstrap 95% intervals over windows; 'n.s.' marks a "
        f"difference whose interval contains 0. Recommended configuration: **{RECOMMENDED}** "
        "(`--method mwanda --reconstruct`: M-Wanda's defaults, its cross-lingual layer-wise "
        f"sparsity included, then the refit with its defaults); at an N:M pattern, which fixes every row's sparsity so that CWL "
        f"cannot apply, **{RECOMMENDED_NM}**. " + udhr_note
    )
    sections = [header]
    for setting in args.settings.split(","):
        results: dict[str, dict[str, EvalResult]] = {}
        skipped = [label for label in methods if not applies(label, setting)]
        for label in (label for label in methods if applies(label, setting)):
            config = PruneConfig(**SETTINGS[setting], **CANDIDATES[label])

            def run(config=config):
                restore(loaded.model, dense_weights)
                loaded.pruning = None
                pruned = prune(loaded, config, calibration, progress=False)
                loaded.pruning = pruned.metadata()
                return {k: v.model_dump(mode="json") for k, v in evaluations(label).items()} | {"prune_seconds": pruned.seconds}

            tag = f"{setting.replace('%', 'pct').replace(':', 'of')}_{label.replace(' + ', '+')}"
            results[label] = stage(tag, {"config": config.to_dict()}, run)
            console.print(f"{setting} {label}: done", style="dim")
        sections.append(f"## {setting}")
        if skipped:
            sections.append(f"Not run at {setting}: {', '.join(skipped)} (a layer-wise allocation cannot vary the "
                            "sparsity an N:M pattern fixes).")
        recommended = recommended_for(setting)
        for name, *_ in eval_sets:
            by_method = {label: results[label][name] for label in results}
            part = [f"### {setting}, {name}", absolute_table(dense[name], by_method)]
            baseline = strongest_baseline(dense[name], by_method)
            if baseline and recommended in by_method:
                duel = contest(dense[name], by_method[baseline], by_method[recommended], baseline, recommended)
                part.append(f"Recommended ({recommended}) against the strongest baseline on this set ({baseline}):"
                            f"\n\n{contest_markdown(duel)}")
                console.print(f"[bold]{setting} {name}[/bold]: {recommended} vs {baseline}")
                console.print(contest_markdown(duel))
            comparisons = [compare(dense[name], by_method[label], label) for label in by_method]
            tag = f"prune_quality-{setting.replace('%', 'pct').replace(':', 'of')}-{name}"
            chart = degradation_chart(comparisons, figure_path(tag))
            part.append(f"Relative change of bits per byte from dense, with intervals:\n\n{comparison_markdown(comparisons)}"
                        f"\n![relative degradation per language, {setting}, {name}]({chart.name})")
            sections.append("\n\n".join(part))
    write_result_table(args.table, "One-shot pruning: quality per language", "\n\n".join(sections))


if __name__ == "__main__":
    main()
