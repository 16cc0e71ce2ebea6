"""Structured pruning of a decoder per language: heads, FFN neurons and blocks, with and without the refit.

    python benchmarks/structured_quality.py [--model gemma3-270m] [--units ffn,both,blocks]
                                            [--budgets 0.2] [--blocks 2]
                                            [--importances activation,balanced] [--refit off,on]
                                            [--tokens 320] [--seq-len 64] [--out benchmark-results/structured_quality]
    python benchmarks/structured_quality.py --units ffn,heads,both,blocks --budgets 0.1,0.2,0.3 --blocks 1,2,3 \
                                            --importances magnitude,gradient,activation,l0,balanced   # the whole grid
    python benchmarks/structured_quality.py --tiny [--out FOLDER]

Calibration: prune_quality's, 8 Bible languages (en es fr zh ru ar hi sw),
8 windows of 256 tokens each, calibration split. Evaluation: held-out Bible
text (evaluation split) in every Bible language and the UDHR in the demo's
16 further languages (left out, with a note, when the UDHR has not been
fetched), about --tokens predicted tokens per language in windows of
--seq-len tokens (by default 320 in windows of 64: the 5 windows per
language an interval needs, at half of prune_quality's evaluation cost).

The grid (every part selectable):

* --units: `ffn` (FFN neurons), `heads`, `both` (heads and FFN neurons) at
  each share of the block parameters in --budgets (10, 20 and 30% make the
  whole grid), and `blocks` with whole blocks dropped (--blocks: 1, 2, 3);
* --importances: any registered structured importance (activation and
  balanced by default; gradient and l0 cost a backward pass or training);
* --refit: without (`off`) and with (`on`) the refit of the output and down
  projections (`--refit`); blocks take no refit (it needs removed heads or
  neurons), so they run without it only;
* the reference: wanda at 50% unstructured sparsity.

A setting whole units cannot reach (heads alone remove at most 17.6% of
gemma3-270m's block parameters) is listed as not run, with the reason.

The table (docs/results/structured_quality.md) gives, per evaluation set: a
summary row per configuration (block parameters removed, the refit's mean
layer error before and after, the mean and worst-language increase of bits
per byte over the dense model, the paired difference of the mean increase
against wanda 50% with its 95% bootstrap interval over windows, and the
verdict, "not resolved" when the interval contains 0); then per language the
dense bits per byte and each configuration's increase with its paired
interval.

Each configuration's evaluation is cached in --out, keyed on everything that
decides it (settings, model, code), so an interrupted run resumes. The
default grid is 10 pruned models (FFN and heads + FFN at 20%, 2 blocks;
activation and balanced; with and without the refit) plus the reference and
the dense model. Each costs one evaluation and one calibration pass or a few
(the refit runs every block three times). On this project's 2 shared cores
at a load average near 8, gemma3-270m's dense evaluation on all 38 languages
took 557 s (609 s at 640 tokens in windows of 128) and wanda's prune and
evaluation 706 s, so the default grid (12 such stages) needs about two hours there; on idle
cores it should take a fraction of that, not measured yet. The whole grid
takes many hours.

--tiny runs a reduced grid on a tiny random model of gemma3's layout with a
byte-level tokenizer (bf16_cost's), calibrated and evaluated on 3 Bible
languages, in seconds; its table goes to $BENCHMARK_RESULTS_DIR, else to
--out, never to docs/results.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import cached_stage, source_fingerprint, write_result_table

BENCHMARK = {"minutes": 120}

CALIBRATED = ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]  # prune_quality's calibration languages
EVAL_VERSIONS = "en=3"  # prune_quality's: English is evaluated on a version the model has not memorised
UNITS = {"ffn": ("ffn",), "heads": ("heads",), "both": ("ffn", "heads"), "blocks": ("blocks",)}
REFERENCE = "wanda 50%"
CODE = tuple(f"src/babelprune/{part}" for part in ("prune", "evaluate", "models", "formats", "data", "records",
                                                   "api.py")) + ("benchmarks/structured_quality.py",)
TINY_GRID = {"units": "ffn,heads,both,blocks", "budgets": "0.2", "blocks": "1", "importances": "activation,balanced",
             "refit": "off,on"}


@dataclass(frozen=True)
class Setting:
    """One structured configuration of the grid."""

    units: str  # a key of UNITS
    amount: float  # share of block parameters, or number of blocks for "blocks"
    importance: str
    refit: bool

    @property
    def label(self) -> str:
        size = f"{int(self.amount)} block{'s' if self.amount > 1 else ''}" if self.units == "blocks" else \
            f"{self.units} {self.amount:.0%}"
        return f"{size}, {self.importance}" + (" + refit" if self.refit else "")

    @property
    def tag(self) -> str:
        return f"{self.units}-{self.amount:g}-{self.importance}" + ("-refit" if self.refit else "")


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from babelprune.prune.structured.methods import IMPORTANCES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--units", default="ffn,both,blocks", help=f"comma-separated, out of {', '.join(UNITS)}")
    parser.add_argument("--budgets", default="0.2", help="shares of the block parameters removed (ffn, heads, both), e.g. 0.1,0.2,0.3")
    parser.add_argument("--blocks", default="2", help="numbers of whole blocks dropped (blocks), e.g. 1,2,3")
    parser.add_argument("--importances", default="activation,balanced", help=f"out of {', '.join(IMPORTANCES)}")
    parser.add_argument("--refit", default="off,on", help="off, on, or both: off,on")
    parser.add_argument("--tokens", type=int, default=320, help="predicted tokens per language (prune_quality's: 640)")
    parser.add_argument("--seq-len", type=int, default=64, help="evaluation window; 5 or more per language give intervals")
    parser.add_argument("--calib-samples", type=int, default=8, help="calibration windows per language")
    parser.add_argument("--calib-seq-len", type=int, default=256)
    parser.add_argument("--out", type=Path, help="folder for the cached runs (default benchmark-results/structured_quality; "
                        "a temporary folder with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model, 3 Bible languages and a reduced grid, in seconds")
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY_GRID.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
        args.tokens, args.seq_len, args.calib_samples, args.calib_seq_len = 160, 32, 2, 32
    args.units = _list(args.units)
    args.importances = _list(args.importances)
    args.refit = _list(args.refit)
    bad = [u for u in args.units if u not in UNITS] + [i for i in args.importances if i not in IMPORTANCES] + \
        [r for r in args.refit if r not in ("off", "on")]
    if bad or not args.units or not args.importances or not args.refit:
        parser.error(f"unknown or missing grid values {', '.join(bad) or '(empty list)'}; units: {', '.join(UNITS)}; "
                     f"importances: {', '.join(IMPORTANCES)}; refit: off, on")
    try:
        args.budgets = [float(b) for b in _list(args.budgets)]
        args.blocks = [int(b) for b in _list(args.blocks)]
    except ValueError as exc:
        parser.error(f"--budgets takes shares such as 0.1,0.2 and --blocks counts such as 1,2: {exc}")
    if any(not 0 < b < 1 for b in args.budgets) or any(b < 1 for b in args.blocks):
        parser.error("--budgets lie strictly between 0 and 1 and --blocks are at least 1")
    return args


def grid(args: argparse.Namespace) -> list[Setting]:
    settings = []
    for units in args.units:
        amounts = [float(b) for b in args.blocks] if units == "blocks" else args.budgets
        refits = [False] if units == "blocks" else [r == "on" for r in args.refit]
        for amount in amounts:
            for importance in args.importances:
                for refit in refits:
                    settings.append(Setting(units, amount, importance, refit))
    return settings


# ----- intervals -------------------------------------------------------------------------


def _windows(result, language: str) -> tuple[list[float], list[int]]:
    score = next(s for s in result.scores if s.language == language)
    return score.window_nll, score.window_bytes


def increase_replicates(dense, pruned, language: str) -> tuple[float, np.ndarray]:
    """A language's increase of bits per byte over the dense model and its paired bootstrap replicates."""
    from babelprune.records.intervals import bits_per_byte_replicates, draws

    (dense_nll, dense_bytes), (nll, size) = _windows(dense, language), _windows(pruned, language)
    if list(size) != list(dense_bytes):
        raise SystemExit(f"{language}: the pruned and dense models scored different windows; evaluate them alike.")
    index = draws(len(nll), language)
    replicates = bits_per_byte_replicates(nll, size, index) - bits_per_byte_replicates(dense_nll, dense_bytes, index)
    every = np.arange(len(nll))[None, :]
    point = float(bits_per_byte_replicates(nll, size, every)[0] - bits_per_byte_replicates(dense_nll, dense_bytes, every)[0])
    return point, replicates


def cell(value: float, interval: tuple[float, float] | None) -> str:
    from babelprune.records.intervals import resolved

    if interval is None:
        return f"{value:+.3f}"
    return f"{value:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]" + ("" if resolved(interval) else " not resolved")


# ----- the runs ----------------------------------------------------------------------------


def block_sparsity(model, count: int) -> float:
    """The share of block parameters `count` blocks hold (gemma3's blocks are all the same size), a hair above it."""
    from babelprune.models.adapters import adapter_for
    from babelprune.models.layouts import block_params

    adapter = adapter_for(model)
    sizes = [block_params(adapter, block) for block in adapter.get_blocks(model)]
    return (count * max(sizes) + 0.5) / sum(sizes)


def main(argv: list[str] | None = None) -> Path:
    from babelprune.api import calibrate, evaluate, get_corpus, load_model, prune_structured
    from babelprune.data.bible import BibleCorpus
    from babelprune.errors import BabelpruneError
    from babelprune.models.base import LoadedModel
    from babelprune.prune.config import PruneConfig, StructuredConfig
    from babelprune.prune.engine import prune
    from babelprune.records.eval import EvalResult
    from babelprune.records.intervals import percentile_interval
    from babelprune.report.contest import contest

    args = parse_args(argv)
    root = args.out or (Path(tempfile.mkdtemp(prefix="structured_quality-")) if args.tiny
                        else Path("benchmark-results/structured_quality"))
    root.mkdir(parents=True, exist_ok=True)
    notes = []
    if args.tiny:
        from bf16_cost import TINY_LANGUAGES, tiny_model_folder

        model_spec = str(tiny_model_folder(root))
        calib_languages = TINY_LANGUAGES
        notes.append(f"--tiny: a random model of gemma3's layout, Bible text in {len(TINY_LANGUAGES)} languages only; "
                     "its figures only show that the script works.")
    else:
        model_spec, calib_languages = args.model, CALIBRATED
    versions = dict(item.split("=", 1) for item in EVAL_VERSIONS.split(",") if item)
    eval_bible = BibleCorpus(versions)
    eval_sets = [("bible", eval_bible, TINY_LANGUAGES if args.tiny else None, "eval")]
    if not args.tiny:
        from babelprune.data.udhr import udhr_available
        from babelprune.demo import DEMO_UDHR_LANGUAGES

        if udhr_available():
            udhr = get_corpus("udhr")
            eval_sets.append(("udhr", udhr, [lang for lang in DEMO_UDHR_LANGUAGES if lang in udhr.languages()], "all"))
        else:
            notes.append("The UDHR part was left out: the corpus is not in the cache (`babelprune data fetch udhr`).")

    dense = load_model(model_spec)
    calibration = calibrate(dense, "bible", calib_languages, args.calib_samples, args.calib_seq_len)
    code = source_fingerprint(CODE)
    windows: dict = {}

    def evaluations(loaded) -> dict:
        return {name: evaluate(loaded, corpus, langs, split, args.seq_len, args.tokens, progress=False, window_cache=windows)
                .model_dump(mode="json") for name, corpus, langs, split in eval_sets}

    def copy_of_dense() -> LoadedModel:
        return LoadedModel(model=copy.deepcopy(dense.model), tokenizer=dense.tokenizer, spec=dense.spec, path=None,
                           kind=dense.kind)

    def stage(tag: str, fields: dict, run) -> dict:
        fields = fields | {"model": model_spec if not args.tiny else "tiny", "tokens": args.tokens, "seq_len": args.seq_len,
                           "sets": [s[0] for s in eval_sets], "versions": versions, "code": code,
                           "calibration": calibration.describe()}
        return cached_stage(root / f"{tag}.json", fields, run, tag)

    results: dict[str, dict] = {"dense": stage("dense", {}, lambda: evaluations(dense))}

    def reference() -> dict:
        loaded = copy_of_dense()
        started = time.perf_counter()
        prune(loaded, PruneConfig(method="wanda", sparsity=0.5), calibration, progress=False)
        seconds = round(time.perf_counter() - started, 1)
        return evaluations(loaded) | {"prune_seconds": seconds, "removed": 0.5}

    results[REFERENCE] = stage("wanda-0.5", {"config": PruneConfig(method="wanda", sparsity=0.5).to_dict()}, reference)
    not_run: list[str] = []
    for setting in grid(args):
        sparsity = block_sparsity(dense.model, int(setting.amount)) if setting.units == "blocks" else setting.amount
        try:
            config = StructuredConfig(units=list(UNITS[setting.units]), importance=setting.importance, sparsity=sparsity,
                                      refit=setting.refit)
        except BabelpruneError as exc:
            not_run.append(f"{setting.label}: {exc}")
            continue

        def run(config=config) -> dict:
            loaded = copy_of_dense()
            try:
                result = prune_structured(loaded, config, calibration, progress=False)
            except BabelpruneError as exc:  # a share whole units cannot reach, or more blocks than the model can lose
                return {"not_run": str(exc)}
            refit = result.refit["layers"] if result.refit else []
            errors = {"refit_before": float(np.mean([x["error_before"] for x in refit])),
                      "refit_after": float(np.mean([x["error_after"] for x in refit]))} if refit else {}
            return evaluations(loaded) | errors | {"prune_seconds": result.seconds, "removed": result.achieved_sparsity}

        started = time.perf_counter()
        record = stage(setting.tag, {"config": config.to_dict()}, run)
        if "not_run" in record:
            not_run.append(f"{setting.label}: {record['not_run']}")
        else:
            results[setting.label] = record
        print(f"{setting.label}: {time.perf_counter() - started:.1f} s", flush=True)

    evals = {label: {name: EvalResult.model_validate(record[name]) for name, *_ in eval_sets} for label, record in results.items()}
    pruned_labels = [label for label in results if label != "dense"]
    header = (
        f"{'tiny random model of gemma3 layout' if args.tiny else args.model}; calibration: {len(calib_languages)} Bible "
        f"languages ({', '.join(calib_languages)}), {args.calib_samples} x {args.calib_seq_len} tokens each, calibration "
        f"split. Evaluation: held-out Bible text in {len(evals['dense']['bible'].scores)} languages"
        + (f" and the UDHR in {len(evals['dense']['udhr'].scores)} languages none of which was calibrated"
           if "udhr" in evals["dense"] else "")
        + f"; about {args.tokens} predicted tokens per language in windows of {args.seq_len}. Structured rows remove the "
        "share of block (attention and FFN linear) parameters named, or whole blocks; the reference prunes 50% of the "
        "block weights unstructured with wanda (it keeps every matrix's shape). Increases are absolute bits per byte "
        "over the dense model; intervals are paired bootstrap 95% intervals over windows, 'not resolved' where one "
        "contains 0. The refit columns give the mean over refitted layers of the relative output error on the "
        "calibration inputs before and after the refit. " + " ".join(notes)
    )
    sections = [header]
    if not_run:
        sections.append("Not run:\n\n" + "\n".join(f"- {line}" for line in not_run))
    for name, *_ in eval_sets:
        dense_eval = evals["dense"][name]
        languages = dense_eval.languages()
        rows = ["| configuration | block params removed | refit error before -> after | mean increase [95%] | "
                f"worst-language increase | difference of mean increase vs {REFERENCE} [95%] | verdict |",
                "|---|---|---|---|---|---|---|"]
        per_language: dict[str, dict[str, str]] = {}
        for label in pruned_labels:
            record, pruned = results[label], evals[label][name]
            points, replicates = zip(*(increase_replicates(dense_eval, pruned, lang) for lang in languages))
            mean_interval = percentile_interval(np.mean(np.stack(replicates), axis=0))
            worst = max(zip(points, languages))
            refit = (f"{record['refit_before']:.4f} -> {record['refit_after']:.4f}" if "refit_before" in record else "")
            if label == REFERENCE:
                versus, verdict = "(reference)", ""
            else:
                duel = contest(dense_eval, evals[REFERENCE][name], pruned, REFERENCE, label)
                difference = duel.candidate_mean - duel.baseline_mean
                versus = cell(difference, duel.mean_difference_interval)
                verdict = duel.verdict(duel.mean_difference_interval)
                verdict = {label: "structured better", REFERENCE: f"{REFERENCE} better"}.get(verdict, verdict)
            rows.append(f"| {label} | {record['removed']:.1%} | {refit} | {cell(float(np.mean(points)), mean_interval)} | "
                        f"{worst[0]:+.3f} ({worst[1]}) | {versus} | {verdict} |")
            for lang, point, reps in zip(languages, points, replicates):
                per_language.setdefault(lang, {})[label] = cell(point, percentile_interval(reps))
        table = ["| language | calibrated | dense bpb [95%] | " + " | ".join(pruned_labels) + " |",
                 "|---|---|---|" + "---|" * len(pruned_labels)]
        for score in sorted(dense_eval.scores, key=lambda s: s.bits_per_byte):
            interval = score.bits_per_byte_interval
            dense_cell = f"{score.bits_per_byte:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
            seen = "yes" if score.language in calib_languages else ""
            table.append(f"| {score.language} | {seen} | {dense_cell} | "
                         + " | ".join(per_language[score.language][label] for label in pruned_labels) + " |")
        sections.append(f"## {name}\n\n### Summary, {name}\n\n" + "\n".join(rows)
                        + f"\n\n### Per language, {name}: increase of bits per byte over dense [95%]\n\n" + "\n".join(table))
    markdown = "\n\n".join(sections)
    directory = os.environ.get("BENCHMARK_RESULTS_DIR") or (str(root) if args.tiny else None)
    title = f"Structured pruning per language: {'tiny model' if args.tiny else args.model}"
    return write_result_table("structured_quality", title, markdown, directory=Path(directory) if directory else None)


if __name__ == "__main__":
    main()
