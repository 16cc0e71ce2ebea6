"""What bfloat16 costs against float32 on the CPU, per language: bits per byte, masks and peak memory.

    python benchmarks/bf16_cost.py [--model gemma3-270m] [--tokens 640] [--seq-len 128]
                                   [--rows dense,wanda,recommended] [--out benchmark-results/bf16_cost]
    python benchmarks/bf16_cost.py --tiny [--out FOLDER]

Each configuration runs twice, each time in a fresh process: once with the
model in float32 and once in bfloat16 (`--dtype bfloat16`), pruned and
evaluated in that type. Configurations (--rows):

* dense: the model as it is;
* wanda: wanda at 50%;
* recommended: prune_quality's recommended configuration at 50%
  (mwanda + cwl + refit, `--method mwanda --reconstruct`).

A run loads the model, calibrates and prunes it (prune_quality's
calibration: 8 Bible languages x 8 windows x 256 tokens, calibration split)
and evaluates it on prune_quality's windows: held-out Bible text in every
Bible language (English on its evaluation version) and the UDHR in the
demo's 16 further languages (left out, with a note, when the UDHR has not
been fetched), about --tokens predicted tokens per language in windows of
--seq-len tokens. The table (docs/results/bf16_cost.md) gives:

* quality: per language, bits per byte in each type and the difference
  bf16 - fp32 with its 95% bootstrap interval, paired over the windows both
  runs scored ("not resolved" when it contains 0); per configuration and
  set, how many languages bfloat16 made resolved worse or better, and the
  mean difference with its interval;
* masks: the share of block weights whose mask differs between the float32
  and the bfloat16 prune, how many of those differing entries are ties (their
  float32 score lies within TIE_RTOL of its row's cut), and the relative
  difference of the pruned weights next to bfloat16's own rounding of the
  float32 result (what the refit can agree to at best);
* memory: the bytes of the weights in each type; the peak resident memory
  while loading, while pruning and over the whole run (load, calibrate,
  prune, evaluate), each minus what the process held before the model was
  loaded, and how much of the run's peak was pages of mapped files; all
  over the float32 model's bytes, then bfloat16's peaks over float32's.

Every run keeps its record, masks and pruned weights in --out, keyed on its
settings and the code, so an interrupted benchmark resumes. Each phase's
wall and CPU seconds are printed and kept there too; they are not a speed
comparison (one run each, on whatever else the machine was doing), and the
table leaves them out.

--tiny runs everything on a tiny random model of gemma3's layout with a
byte-level tokenizer, calibrated and evaluated on 3 Bible languages, in well under a minute of work
(plus one interpreter start per run); its table goes to
$BENCHMARK_RESULTS_DIR, else to --out, never to docs/results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import cached_key_matches, source_fingerprint, stage_key, write_result_table

BENCHMARK = {"minutes": 25}

DTYPES = ("float32", "bfloat16")
SPARSITY = 0.5
# bfloat16 keeps 8 significant bits: one rounding moves a value by up to 2^-9 of itself, and a score
# (|W| times an input norm) carries a rounding of the weight and of the activations behind the norm. Two
# scores that straddle a cut can swap when they are closer than 2^-7 (bfloat16's epsilon) of it.
TIE_RTOL = 2.0**-7
ROWS = ("dense", "wanda", "recommended")
# The code whose output these figures are: pruning, evaluation, models, corpora, records, the verbs, this script.
CODE = tuple(f"src/babelprune/{part}" for part in ("prune", "evaluate", "models", "formats", "data", "records",
                                                   "api.py", "devices.py")) + ("benchmarks/bf16_cost.py",)

# --tiny: gemma3's layout (one key/value head, sliding and global blocks) at a size that prunes in a blink.
TINY_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, sliding_window=16,
                   max_position_embeddings=512, layer_types=["sliding_attention", "full_attention"])
TINY_LANGUAGES = ["en", "ru", "zh"]  # three scripts: one and two and three bytes a character


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated configurations out of {', '.join(ROWS)}")
    parser.add_argument("--tokens", type=int, default=640, help="predicted tokens per language (prune_quality's budget)")
    parser.add_argument("--seq-len", type=int, default=128, help="evaluation window; 5 or more per language give intervals")
    parser.add_argument("--calib-samples", type=int, default=8, help="calibration windows per language")
    parser.add_argument("--calib-seq-len", type=int, default=256)
    parser.add_argument("--out", type=Path, help="folder for the runs (default benchmark-results/bf16_cost; "
                        "a temporary folder with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model and 3 Bible languages, in seconds")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # one run, in this process, from a spec file
    args = parser.parse_args(argv)
    args.rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = [row for row in args.rows if row not in ROWS]
    if unknown or not args.rows:
        parser.error(f"unknown configuration {', '.join(unknown) or '(none)'}; give some of {', '.join(ROWS)}")
    return args


# ----- one run, in its own process ----------------------------------------------------


def cut_distance(scores, sparsity: float, per_row: bool):
    """Each score's distance from its row's cut (or the layer's), relative to the cut, as float32.

    The cut is the midpoint between the highest pruned and the lowest kept
    score, so a score's distance says how far a change of the scores must
    move it before its mask flips.
    """
    import torch

    from babelprune.prune.kernels import pruned_count

    grouped = scores.detach().float().reshape(scores.shape[0] if per_row else 1, -1)
    k = pruned_count(grouped.shape[1], sparsity)
    if k == 0 or k == grouped.shape[1]:  # nothing to separate: no entry can flip
        return torch.full(scores.shape, math.inf)
    ordered = grouped.kthvalue(k, dim=1, keepdim=True).values, grouped.kthvalue(k + 1, dim=1, keepdim=True).values
    cut = (ordered[0] + ordered[1]) / 2
    # A zero cut with a zero score (a row of dead inputs) is a tie: 0/0 counts as no distance at all.
    return torch.nan_to_num((grouped - cut).abs() / cut.abs(), nan=0.0).reshape(scores.shape)


class MaskRecorder:
    """While active, writes every layer's pruned mask (and, if asked, each score's cut distance) to `folder`.

    Every score-based method chooses its mask through methods.mask_from_scores,
    so wrapping it sees the mask itself, before a refit changes the kept
    weights, and the scores exactly as the engine computed them. Each layer
    goes to disk as soon as it is chosen, so the recorder holds no more than
    one layer and the run's memory stays that of pruning.
    """

    def __init__(self, model, folder: Path, distances: bool) -> None:
        from babelprune.models.adapters import adapter_for, named_linears, weight_matrix

        self.names = {weight_matrix(linear).data_ptr(): name
                      for name, linear in named_linears(model, adapter_for(model)).items()}
        self.folder, self.distances = folder, distances

    def __enter__(self) -> MaskRecorder:
        from babelprune.prune import methods

        self.folder.mkdir(parents=True, exist_ok=True)
        self._original = methods.mask_from_scores
        methods.mask_from_scores = self._recording
        return self

    def __exit__(self, *exc) -> None:
        from babelprune.prune import methods

        methods.mask_from_scores = self._original

    def _recording(self, scores, task):
        pruned = self._original(scores, task)
        arrays = {"pruned": np.packbits(pruned.cpu().numpy().reshape(-1)), "shape": np.array(pruned.shape)}
        if self.distances:  # half precision is plenty to tell 2^-7 from farther
            arrays["distance"] = cut_distance(scores, task.sparsity, task.config.per_row).cpu().numpy().astype(np.float16)
        np.savez(self.folder / f"{self.names[task.weight.data_ptr()]}.npz", **arrays)
        return pruned


def block_weights(model) -> dict:
    from babelprune.models.adapters import adapter_for, named_linears, weight_matrix

    return {name: weight_matrix(linear) for name, linear in named_linears(model, adapter_for(model)).items()}


class Memory:
    """Samples the process's resident memory every few milliseconds while active, keeping each phase's peak.

    Resident memory counts the pages of mapped files as well as the
    process's own (anonymous) memory. A model loaded in float32 from its
    safetensors files may keep its weights as pages of the mapped file, which
    become resident as they are read; one loaded in bfloat16 is converted
    into anonymous memory. So each peak also keeps how much of it was
    file-backed at that moment.
    """

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process, self.interval = psutil.Process(), interval
        self.phase = "start"
        self.peaks: dict[str, tuple[int, int]] = {}  # phase -> (resident bytes, file-backed bytes) at its peak
        self._stop = threading.Event()

    def sample(self) -> tuple[int, int]:
        info = self._process.memory_info()
        return info.rss, info.shared  # on Linux `shared` is RssFile + RssShmem: the file-backed pages

    def _note(self) -> None:
        now, phase = self.sample(), self.phase
        if now[0] > self.peaks.get(phase, (-1, 0))[0]:
            self.peaks[phase] = now

    def _run(self) -> None:
        while not self._stop.is_set():
            self._note()
            time.sleep(self.interval)

    def enter(self, phase: str) -> None:
        """Start a phase; the last sample of the one before closes it."""
        self._note()
        self.phase = phase
        self._note()

    def __enter__(self) -> Memory:
        self.before = self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._note()
        self._stop.set()
        self._thread.join()

    def above_start(self, phases: tuple[str, ...] | None = None) -> tuple[int, int] | None:
        """The highest peak among `phases` (all by default), minus what the process held before: (resident, file-backed)."""
        chosen = [self.peaks[p] for p in (phases or tuple(self.peaks)) if p in self.peaks]
        if not chosen:
            return None
        peak = max(chosen)
        return peak[0] - self.before[0], peak[1] - self.before[1]


def run_child(spec_path: Path) -> None:
    """One run as the spec says: load in its dtype, prune (if asked), evaluate, with its resident memory sampled."""
    import torch
    from safetensors.torch import save_file

    from babelprune.api import calibrate, evaluate, get_corpus, load_model, prune
    from babelprune.cache import atomic_write_text
    from babelprune.data.bible import BibleCorpus
    from babelprune.prune.config import PruneConfig

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    folder = Path(spec["folder"])
    config = PruneConfig.model_validate(spec["config"]) if spec["config"] else None
    sets = [(s["name"], BibleCorpus(s["versions"]) if s["name"] == "bible" else get_corpus(s["name"]), s["languages"], s["split"])
            for s in spec["sets"]]
    wall, cpu, result = {}, {}, None

    @contextlib.contextmanager
    def phase(name: str):
        memory.enter(name)
        started, used = time.perf_counter(), time.process_time()
        yield
        # process_time is the CPU time of every thread of this process: less moved by other jobs than the wall clock.
        wall[name], cpu[name] = time.perf_counter() - started, time.process_time() - used

    with Memory() as memory:
        with phase("load"):
            loaded = load_model(spec["model"], spec["dtype"])
        if config is not None:
            with phase("calibrate"):
                calibration = calibrate(loaded, "bible", spec["calib_languages"], spec["calib_samples"], spec["calib_seq_len"])
            # Distances only for the float32 run: ties are judged on the reference scores.
            with MaskRecorder(loaded.model, folder / "masks", spec["dtype"] == "float32"), phase("prune"):
                result = prune(loaded, config, calibration, progress=False)
        with phase("evaluate"):
            evaluations = {name: evaluate(loaded, corpus, languages, split, spec["seq_len"], spec["tokens"], progress=False)
                           for name, corpus, languages, split in sets}
    parameters = list(loaded.model.parameters())  # tied weights once
    if result is not None:  # written after the measurement, so that saving adds nothing to the peaks
        save_file({name: weight.contiguous() for name, weight in block_weights(loaded.model).items()},
                  str(folder / "weights.safetensors"))
    record = {
        "dtype": spec["dtype"],
        # The float32 model's bytes, whatever this run's type: both runs are measured against the same yardstick.
        "float32_bytes": 4 * sum(p.numel() for p in parameters),
        "weight_bytes": sum(p.numel() * p.element_size() for p in parameters),
        "load_peak": memory.above_start(("load",)),
        "pruning_peak": memory.above_start(("prune",)),
        "run_peak": memory.above_start(),
        "wall_seconds": {key: round(value, 1) for key, value in wall.items()},
        "cpu_seconds": {key: round(value, 1) for key, value in cpu.items()},
        "threads": torch.get_num_threads(),
        "block_targets": result.block_sparsity_targets if result is not None else None,
        "achieved_sparsity": result.achieved_sparsity if result is not None else None,
        "evaluations": {name: value.model_dump(mode="json") for name, value in evaluations.items()},
    }
    atomic_write_text(folder / "run.json", json.dumps(record) + "\n")


# ----- the runs, from the parent ------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    model: str
    rows: list[str]
    configs: dict[str, dict | None]  # row -> PruneConfig as a dict (None: dense)
    sets: list[dict]
    calib_languages: list[str]
    calib_samples: int
    calib_seq_len: int
    tokens: int
    seq_len: int
    notes: list[str]


def make_plan(args: argparse.Namespace, model: str) -> Plan:
    from prune_quality import CALIBRATED, CANDIDATES, EVAL_VERSIONS, RECOMMENDED, SETTINGS

    from babelprune.api import get_corpus
    from babelprune.data.udhr import udhr_available
    from babelprune.demo import DEMO_UDHR_LANGUAGES
    from babelprune.prune.config import PruneConfig

    configs = {"dense": None, "wanda": CANDIDATES["wanda"], "recommended": CANDIDATES[RECOMMENDED]}
    configs = {row: None if fields is None else PruneConfig(**SETTINGS["50%"], **fields).to_dict()
               for row, fields in configs.items() if row in args.rows}
    versions = dict(item.split("=", 1) for item in EVAL_VERSIONS.split(",") if item)
    notes = []
    if args.tiny:
        sets = [{"name": "bible", "versions": versions, "languages": TINY_LANGUAGES, "split": "eval"}]
        notes.append(f"--tiny: a random model of gemma3's layout, Bible text in {len(TINY_LANGUAGES)} languages only; "
                     "its figures only show that the script works.")
    else:
        sets = [{"name": "bible", "versions": versions, "languages": None, "split": "eval"}]
        if udhr_available():
            languages = [lang for lang in DEMO_UDHR_LANGUAGES if lang in get_corpus("udhr").languages()]
            sets.append({"name": "udhr", "versions": None, "languages": languages, "split": "all"})
        else:
            notes.append("The UDHR part was left out: the corpus is not in the cache (`babelprune data fetch udhr`).")
    # --tiny calibrates on its evaluation languages only: every calibration language costs a read of its Bible.
    calib_languages = TINY_LANGUAGES if args.tiny else list(CALIBRATED)
    return Plan(model, list(configs), configs, sets, calib_languages, args.calib_samples, args.calib_seq_len,
                args.tokens, args.seq_len, notes)


def run_once(plan: Plan, row: str, dtype: str, root: Path) -> dict:
    """The record of one run: reused from `root` when made with the same settings and code, else made in a fresh process."""
    folder = root / f"{row}-{dtype}"
    spec = {"model": plan.model, "dtype": dtype, "config": plan.configs[row], "sets": plan.sets,
            "calib_languages": plan.calib_languages, "calib_samples": plan.calib_samples,
            "calib_seq_len": plan.calib_seq_len, "tokens": plan.tokens, "seq_len": plan.seq_len}
    fields = spec | {"code": source_fingerprint(CODE)}
    key_path, record_path = folder / "key.json", folder / "run.json"
    if record_path.is_file() and cached_key_matches(key_path, fields, f"{row} {dtype}"):
        return json.loads(record_path.read_text(encoding="utf-8"))
    if folder.exists():
        for stale in sorted(folder.rglob("*"), reverse=True):  # files first, then their folders
            stale.unlink() if stale.is_file() else stale.rmdir()
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps(spec | {"folder": str(folder)}, indent=2), encoding="utf-8")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", str(spec_path)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{row} in {dtype} failed:\n{done.stderr[-4000:]}")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    key_path.write_text(json.dumps({"key": stage_key(fields), "fields": fields}, indent=2, default=str), encoding="utf-8")
    phases = ", ".join(f"{k} {v:.0f} s ({record['cpu_seconds'][k]:.0f} s CPU)" for k, v in record["wall_seconds"].items())
    print(f"{row} {dtype}: {time.perf_counter() - started:.0f} s in all; {phases}; "
          f"peak of the run {record['run_peak'][0] / record['float32_bytes']:.2f}x the float32 model", flush=True)
    return record


# ----- comparisons --------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageDifference:
    language: str
    fp32: float
    bf16: float
    interval: tuple[float, float] | None  # of bf16 - fp32, paired over windows

    @property
    def difference(self) -> float:
        return self.bf16 - self.fp32


@dataclass(frozen=True)
class SetDifference:
    languages: list[LanguageDifference]
    mean_interval: tuple[float, float] | None

    @property
    def mean(self) -> float:
        return float(np.mean([row.difference for row in self.languages]))

    def count(self, side: str) -> int:
        """Languages whose interval lies above 0 ("worse"), below it ("better"), or holds it ("not resolved")."""
        from babelprune.records.intervals import resolved

        def side_of(row: LanguageDifference) -> str:
            if not resolved(row.interval):
                return "not resolved"
            return "worse" if row.interval[0] > 0 else "better"

        return sum(side_of(row) == side for row in self.languages)


def dtype_difference(fp32: dict, bf16: dict) -> SetDifference:
    """bf16 - fp32 bits per byte per language, one bootstrap draw of windows serving both (they read the same windows)."""
    from babelprune.records.eval import EvalResult
    from babelprune.records.intervals import MIN_ITEMS, bits_per_byte_replicates, draws, percentile_interval

    reference, other = EvalResult.model_validate(fp32), EvalResult.model_validate(bf16)
    theirs = {score.language: score for score in other.scores}
    rows, replicates = [], []
    for score in reference.scores:
        match = theirs[score.language]
        if list(match.window_bytes) != list(score.window_bytes):
            sys.exit(f"{score.language}: the two runs scored different windows; they must share the tokenizer and settings.")
        interval = None
        if len(score.window_nll) >= MIN_ITEMS:
            index = draws(len(score.window_nll), score.language)
            change = (bits_per_byte_replicates(match.window_nll, match.window_bytes, index)
                      - bits_per_byte_replicates(score.window_nll, score.window_bytes, index))
            replicates.append(change)
            interval = percentile_interval(change)
        rows.append(LanguageDifference(score.language, score.bits_per_byte, match.bits_per_byte, interval))
    # Languages are resampled independently and averaged inside each replicate, as compare() and contest() do.
    mean_interval = percentile_interval(np.mean(np.stack(replicates), axis=0)) if len(replicates) == len(rows) else None
    return SetDifference(rows, mean_interval)


@dataclass(frozen=True)
class MaskDifference:
    entries: int
    differ: int
    ties: int  # differing entries whose float32 score lies within TIE_RTOL of its row's cut
    largest: float  # the largest cut distance among the differing entries
    worst_layer: str
    worst_share: float


def mask_difference(reference: Path, other: Path) -> MaskDifference:
    """Layer by layer, the float32 run's masks against the bfloat16 run's."""
    names = sorted(path.name for path in reference.glob("*.npz"))
    if not names or names != sorted(path.name for path in other.glob("*.npz")):
        sys.exit(f"the masks in {reference} and {other} name different layers; rerun both")
    entries = differ = ties = 0
    largest, worst = 0.0, ("", -1.0)
    for name in names:
        ours, theirs = np.load(reference / name), np.load(other / name)
        count = int(np.prod(ours["shape"]))
        flipped = (np.unpackbits(ours["pruned"], count=count) != np.unpackbits(theirs["pruned"], count=count))
        distance = ours["distance"].reshape(-1).astype(np.float32)[flipped]
        entries += count
        differ += int(flipped.sum())
        ties += int((distance <= TIE_RTOL).sum())
        largest = max(largest, float(distance.max()) if distance.size else 0.0)
        share = float(flipped.mean())
        if share > worst[1]:
            worst = (name.removesuffix(".npz"), share)
    return MaskDifference(entries, differ, ties, largest, *worst)


def weight_difference(reference: Path, other: Path) -> tuple[float, float, float]:
    """Relative Frobenius differences of the pruned block weights, float32 run as the reference.

    (over every entry, over the entries both runs kept, bfloat16's rounding of
    the float32 weights alone). A mask flip puts a whole weight into the
    first; the second is what the refit's agreement can be read from.
    """
    import torch
    from safetensors import safe_open

    error = kept_error = kept_norm = rounding = norm = 0.0
    with safe_open(str(reference), framework="pt") as ours, safe_open(str(other), framework="pt") as theirs:
        for key in ours.keys():
            weight, their = ours.get_tensor(key).double(), theirs.get_tensor(key).double()
            both = (weight != 0) & (their != 0)
            error += float((their - weight).square().sum())
            kept_error += float((their - weight)[both].square().sum())
            kept_norm += float(weight[both].square().sum())
            rounding += float((weight.to(torch.bfloat16).double() - weight).square().sum())
            norm += float(weight.square().sum())
    return math.sqrt(error / norm), math.sqrt(kept_error / kept_norm), math.sqrt(rounding / norm)


# ----- the table ----------------------------------------------------------------------


def _interval_cell(value: float, interval: tuple[float, float] | None) -> str:
    from babelprune.records.intervals import resolved

    if interval is None:
        return f"{value:+.4f} (too few windows for an interval)"
    return f"{value:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]" + ("" if resolved(interval) else " not resolved")


def _verdict(interval: tuple[float, float] | None) -> str:
    from babelprune.records.intervals import resolved

    if not resolved(interval):
        return "not resolved"
    return "bf16 worse" if interval[0] > 0 else "bf16 better"


def _row_label(row: str) -> str:
    from prune_quality import RECOMMENDED

    return {"dense": "dense", "wanda": "wanda 50%", "recommended": f"{RECOMMENDED} 50%"}[row]


def quality_sections(plan: Plan, records: dict, differences: dict) -> list[str]:
    from babelprune.records.eval import EvalResult

    summary = ["| configuration | set | languages | bf16 resolved worse | bf16 resolved better | not resolved | "
               "mean fp32 bpb | mean bf16 - fp32 [95%] | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for row in plan.rows:
        for name, diff in differences[row].items():
            summary.append(
                f"| {_row_label(row)} | {name} | {len(diff.languages)} | {diff.count('worse')} | {diff.count('better')} | "
                f"{diff.count('not resolved')} | {np.mean([d.fp32 for d in diff.languages]):.4f} | "
                f"{_interval_cell(diff.mean, diff.mean_interval)} | {_verdict(diff.mean_interval)} |")
    sections = ["## Quality: bfloat16 against float32", "\n".join(summary)]
    for set_spec in plan.sets:
        name = set_spec["name"]
        reference = EvalResult.model_validate(records[(plan.rows[0], "float32")]["evaluations"][name])
        header = "| language | calibrated | " + " | ".join(
            f"{_row_label(row)}: fp32 | bf16 | bf16 - fp32 [95%]" for row in plan.rows) + " |"
        lines = [header, "|---|---|" + "---|---|---|" * len(plan.rows)]
        by_row = {row: {d.language: d for d in differences[row][name].languages} for row in plan.rows}
        for score in sorted(reference.scores, key=lambda s: s.bits_per_byte):
            cells = []
            for row in plan.rows:
                d = by_row[row][score.language]
                cells += [f"{d.fp32:.4f}", f"{d.bf16:.4f}", _interval_cell(d.difference, d.interval)]
            seen = "yes" if score.language in plan.calib_languages else ""
            lines.append(f"| {score.language} | {seen} | " + " | ".join(cells) + " |")
        sections += [f"### Per language, {name}", "\n".join(lines)]
    return sections


def mask_section(plan: Plan, root: Path) -> list[str]:
    lines = ["| configuration | block weights | masks differ | of them ties | largest cut distance of a differing entry | "
             "layer with the most | block targets: largest difference | pruned weights: relative difference | "
             "on the entries both kept | bf16 rounding of the fp32 result |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in (row for row in plan.rows if plan.configs[row] is not None):
        fp32_dir, bf16_dir = root / f"{row}-float32", root / f"{row}-bfloat16"
        masks = mask_difference(fp32_dir / "masks", bf16_dir / "masks")
        difference, kept, rounding = weight_difference(fp32_dir / "weights.safetensors", bf16_dir / "weights.safetensors")
        targets = [json.loads((folder / "run.json").read_text(encoding="utf-8"))["block_targets"] for folder in (fp32_dir, bf16_dir)]
        target_gap = max(abs(a - b) for a, b in zip(*targets))
        tie_share = f"{masks.ties / masks.differ:.1%}" if masks.differ else "-"
        lines.append(
            f"| {_row_label(row)} | {masks.entries:,} | {masks.differ:,} ({masks.differ / masks.entries:.3%}) | {tie_share} | "
            f"{masks.largest:.3g} | {masks.worst_layer} ({masks.worst_share:.3%}) | {target_gap:.2g} | "
            f"{difference:.2e} | {kept:.2e} | {rounding:.2e} |")
    if len(lines) == 2:
        return []
    note = (f"Masks of the block linears, the float32 prune against the bfloat16 one. A differing entry is a tie when "
            f"its float32 score lies within {TIE_RTOL:g} (2^-7, bfloat16's epsilon) of its row's cut, the midpoint "
            "between the highest pruned and the lowest kept score of the row; the cut distance is relative to the cut. "
            "Block targets: the per-block sparsity each run allocated (CWL reads its own statistics). Pruned weights: "
            "||W_bf16 - W_fp32|| / ||W_fp32|| over every block linear (a flipped mask entry brings a whole weight), then the "
            "same over the entries both runs kept, next to ||bf16(W_fp32) - W_fp32|| / ||W_fp32||, the difference that "
            "rounding the float32 result to bfloat16 alone makes: a refit that agrees within bfloat16's precision stays "
            "near it.")
    return ["## Masks and weights", note, "\n".join(lines)]


def memory_section(plan: Plan, records: dict) -> list[str]:
    lines = ["| configuration | dtype | weights | peak while loading | peak while pruning | peak of the run | "
             "of it file-backed | peak of the run, bf16 / fp32 | peak while pruning, bf16 / fp32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in plan.rows:
        reference = records[(row, "float32")]
        for dtype in DTYPES:
            record = records[(row, dtype)]
            unit = record["float32_bytes"]
            pruning = "-" if record["pruning_peak"] is None else f"{record['pruning_peak'][0] / unit:.2f}"
            run_ratio = prune_ratio = ""
            if dtype != "float32":
                run_ratio = f"{record['run_peak'][0] / reference['run_peak'][0]:.2f}"
                if record["pruning_peak"] is not None:
                    prune_ratio = f"{record['pruning_peak'][0] / reference['pruning_peak'][0]:.2f}"
            lines.append(f"| {_row_label(row)} | {dtype} | {record['weight_bytes'] / unit:.2f} | {record['load_peak'][0] / unit:.2f} | "
                         f"{pruning} | {record['run_peak'][0] / unit:.2f} | {max(record['run_peak'][1], 0) / unit:.2f} | "
                         f"{run_ratio} | {prune_ratio} |")
    unit = records[(plan.rows[0], "float32")]["float32_bytes"]
    note = (f"Each run in a fresh process. Weights: the bytes of the model's parameters in the run's type. Peaks: resident "
            f"memory minus what the process held before the model was loaded; the run's peak covers loading, calibration, "
            f"pruning and the whole evaluation. All over the float32 model's bytes ({unit / 1e6:.4g} MB, every parameter "
            "once at 4 bytes), for both types. Resident memory counts the pages of mapped files: a float32 model may keep "
            "its weights as pages of its mapped safetensors files, resident once read, while a bfloat16 one is converted "
            "into the process's own memory; 'of it file-backed' is the part of the run's peak made of such pages.")
    return ["## Peak memory", note, "\n".join(lines)]


def table_markdown(plan: Plan, records: dict, root: Path) -> str:
    differences = {row: {s["name"]: dtype_difference(records[(row, "float32")]["evaluations"][s["name"]],
                                                     records[(row, "bfloat16")]["evaluations"][s["name"]])
                         for s in plan.sets} for row in plan.rows}
    sets = " and ".join(
        f"held-out Bible text in {len(differences[plan.rows[0]]['bible'].languages)} languages" if s["name"] == "bible"
        else f"the UDHR in {len(differences[plan.rows[0]][s['name']].languages)} languages none of which was calibrated"
        for s in plan.sets)
    chosen = {lang: version for s in plan.sets if s["versions"] for lang, version in s["versions"].items()}
    versions = f" (Bible versions as in prune_quality: {', '.join(f'{k}={v}' for k, v in chosen.items())})" if chosen else ""
    intro = (
        f"{plan.model}, each configuration pruned and evaluated once with the model in float32 and once in bfloat16, "
        f"every run in a fresh process on the CPU. Pruning: 50% unstructured, calibrated on {len(plan.calib_languages)} "
        f"Bible languages ({', '.join(plan.calib_languages)}) x {plan.calib_samples} windows x {plan.calib_seq_len} tokens, "
        f"calibration split; statistics accumulate in float32 and float64 whatever the model's type. Evaluation: {sets}; "
        f"about {plan.tokens} predicted tokens per language in windows of {plan.seq_len}{versions}. Differences are "
        "bits per byte of the bfloat16 run minus the float32 run, with 95% bootstrap intervals paired over the windows "
        "both scored (the same windows: one tokenizer); 'not resolved' marks an interval that contains 0."
    )
    intro = " ".join([intro, *plan.notes])
    return "\n\n".join([intro, *quality_sections(plan, records, differences), *mask_section(plan, root),
                        *memory_section(plan, records)])


# ----- --tiny -------------------------------------------------------------------------


def byte_tokenizer():
    """A byte-level tokenizer with no merges: every UTF-8 byte is a token, so text in any script has exact bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(["<pad>", "<eos>", "<bos>", "<unk>"])}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>")


def tiny_model_folder(root: Path) -> Path:
    """A tiny random gemma3 text model and its byte tokenizer, saved as a float32 Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    folder = root / "tiny-gemma3"
    if (folder / "config.json").is_file():
        return folder
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, bos_token_id=2, **TINY_CONFIG)
    AutoModelForCausalLM.from_config(config).float().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ----- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Path | None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child)
        return None
    root = args.out or (Path(tempfile.mkdtemp(prefix="bf16_cost-")) if args.tiny else Path("benchmark-results/bf16_cost"))
    root.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.tokens, args.seq_len, args.calib_samples, args.calib_seq_len = 160, 32, 2, 32
    model = str(tiny_model_folder(root)) if args.tiny else args.model
    plan = make_plan(args, model)
    records = {}
    for row in plan.rows:
        for dtype in DTYPES:  # float32 first: the reference of every comparison
            records[(row, dtype)] = run_once(plan, row, dtype, root)
    markdown = table_markdown(plan, records, root)
    print(markdown)
    # A tiny run is no result to keep: its table goes next to its runs unless a results folder is named.
    directory = os.environ.get("BENCHMARK_RESULTS_DIR") or (str(root) if args.tiny else None)
    return write_result_table("bf16_cost", f"bfloat16 against float32 on the CPU: {plan.model if not args.tiny else 'tiny model'}",
                              markdown, directory=Path(directory) if directory else None)


if __name__ == "__main__":
    main()
