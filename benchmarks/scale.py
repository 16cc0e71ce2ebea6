"""How one-shot pruning's cost grows with model size on this machine: time over a forward pass, memory over the model.

    python benchmarks/scale.py [--only 'random 1B,gemma3-270m'] [--langs en,zh,ar,sw] [--samples 4] [--seq-len 128]
        [--repeats 3] [--warmup 1] [--cache benchmark-results/scale]
    python benchmarks/scale.py --tiny [--out FOLDER]

Models: random-weight Llama models (transformers' LlamaConfig, weights drawn
by the model's own initialisation after torch.manual_seed(0)) whose sizes
follow real models of about 0.1B, 0.5B, 1B and 3B parameters (the 3B one in
bfloat16), saved once as Hugging Face folders under --cache, each keyed on
its config; then the real smollm2-135m and gemma3-270m. A random model whose
vocabulary is a real model's uses that model's tokenizer and is calibrated on
Bible text like the real ones; the others get random token ids.

For each model and each configuration, wanda and the recommended one
(mwanda + CWL + refit, as prune_speed.py builds it), at 50%:

* time: a fresh process loads the model and keeps a copy of its dense block
  weights, then alternates, after the warm-up rounds, one forward pass of
  the blocks (no LM head) over the calibration tokens, pruning, and the
  dense weights back (prune_speed.py's procedure); the ratio of the medians.
* memory: fresh processes (prune_memory.py's procedure): peak resident
  memory minus what the process held before the model was loaded, over the
  model's tensor bytes; in memory (load, calibrate, prune) and with
  --offload disk (open, calibrate, prune and write the HF weights: one phase).

The recommended configuration's refit costs a few (out, in) x (in, in)
products per linear: on the larger random models one pruning with it takes
far longer than a forward pass, so it is timed on their first two blocks
(same shapes, so the same time per block) and its memory measured on the
whole models only. The largest models take fewer rounds (`Spec.rounds`).

Then a calibration series: the 1B model's first two blocks timed with both
configurations at growing calibration sizes, from this table's own up to
what `babelprune prune` reads by default (8 languages x 8 windows x 256
tokens = 16,384 tokens). Pruning adds a cost per weight (scores, selection,
zeroing) to the forward pass, and the recommended one a refit whose cost does
not grow with the tokens, so the ratio falls as the calibration grows. Then
a depth series (the 1B shape with fewer blocks, wanda, in memory and
offloaded), the exponents of a log-log least-squares fit of time against
parameters over the random models (whole models, and per block), and the
targets: the 1B model prunes with wanda within 1.3x one forward pass (at this
table's calibration and at the default one), and with --offload disk peaks
under 0.5x its bytes. Every measurement is cached
under --cache, keyed on its settings, the code and the machine, so an
interrupted run resumes; the table marks reused rows.

--tiny runs every step on two tiny random models (timing in this process,
memory in fresh ones) with a throw-away cache, in a minute or two, so that
the tests keep the script working; its table goes to --out or
$BENCHMARK_RESULTS_DIR like every table. Writes docs/results/scale.md.
"""

from __future__ import annotations

import os

# Before torch starts its OpenMP threads: spinning waiters make 2 threads on a busy 2-core machine many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from _common import MIN_REPEATS, RESULTS_DIR, cached_stage, keyed_folder, source_fingerprint, write_result_table

BENCHMARK = {"minutes": 120}  # on 2 shared cores; the refit and the 3B model in bfloat16 take most of it

SPARSITY = 0.5
CONFIGS = ("wanda", "recommended")  # recommended: mwanda + CWL + refit
TARGET_WANDA_TIME = 1.3  # pruning with wanda, in forward passes of the same tokens
TARGET_OFFLOAD_MEMORY = 0.5  # peak resident memory with --offload disk, over the model's bytes
SEED = 0
SERIES_BLOCKS = 2  # the calibration series times the target model's first blocks: every block has the same shape


@dataclass(frozen=True)
class CalibrationSize:
    """A calibration of the series: languages x windows x tokens per window."""

    langs: str  # comma-separated
    samples: int
    seq_len: int
    about: str  # what it is, for the table

    @property
    def tokens(self) -> int:
        return len(self.langs.split(",")) * self.samples * self.seq_len

    @property
    def slug(self) -> str:
        return f"{len(self.langs.split(','))}x{self.samples}x{self.seq_len}"


def default_calibration() -> CalibrationSize:
    """What `babelprune prune` calibrates on when no --calib option is given."""
    from babelprune.api import DEFAULT_CALIBRATION_LANGUAGES
    from babelprune.prune.calibration import CalibrationSpec

    spec = CalibrationSpec()
    return CalibrationSize(",".join(DEFAULT_CALIBRATION_LANGUAGES), spec.samples, spec.seq_len,
                           "`babelprune prune`'s default calibration")


def calibration_series(args: argparse.Namespace) -> tuple[CalibrationSize, ...]:
    """This table's own calibration, then larger ones up to `babelprune prune`'s default (the target's)."""
    own = CalibrationSize(args.langs, args.samples, args.seq_len, "this table's calibration")
    if args.tiny:
        return own, CalibrationSize("en,zh,ar,sw", args.samples, 2 * args.seq_len, "tiny, larger")
    default = default_calibration()
    middle = replace(default, samples=default.samples // 2, about="half the default windows")
    return own, middle, default


@dataclass(frozen=True)
class Spec:
    """One model of the table: random weights of a given shape, or a built-in alias."""

    name: str
    follows: str  # what its sizes follow
    shape: dict | None = None  # LlamaConfig fields; None for a real model
    alias: str | None = None  # a built-in model (real weights)
    dtype: str = "float32"
    tokenizer: str | None = None  # alias whose tokenizer a random model shares (its vocabulary size); None: random ids
    # configuration -> (warm-up, timed rounds), where the command line's would take too long for this model
    rounds: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The recommended configuration timed on the first this many blocks only (a random model whose whole pruning
    # with it takes too long here): every block has the same shape, so its time per block is the model's. Its
    # memory is then not measured (a ratio over a few blocks' bytes says little about the model).
    recommended_blocks: int | None = None
    target: bool = False  # the model the targets are checked on, and whose first blocks the calibration series times
    depths: tuple[int, ...] = ()  # block counts of the depth series made from its shape (its own count is its row)

    @property
    def random(self) -> bool:
        return self.shape is not None

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def cut(self, blocks: int) -> Spec:
        """The same random model with only `blocks` blocks (the same width, drawn again with the same seed)."""
        return replace(self, name=f"{self.name}, {blocks} blocks", shape={**self.shape, "num_hidden_layers": blocks},
                       rounds={}, recommended_blocks=None, target=False, depths=())


LLAMA_32_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True)
MODELS = (
    Spec("random 0.1B", "SmolLM2's vocabulary at GPT-2 small's width and depth, grouped-query attention",
         dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
              vocab_size=49152, tie_word_embeddings=True), tokenizer="smollm2-135m"),
    Spec("random 0.5B", "Qwen2.5-0.5B's sizes (without its q/k/v biases)",
         dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
              vocab_size=151936, tie_word_embeddings=True), recommended_blocks=2),
    Spec("random 1B", "Llama-3.2-1B", LLAMA_32_1B, rounds={"recommended": (0, 1)}, recommended_blocks=2, target=True,
         depths=(4, 8)),
    Spec("random 3B", "Llama-3.2-3B",
         dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
              vocab_size=128256, tie_word_embeddings=True), dtype="bfloat16", rounds={"wanda": (0, 1), "recommended": (0, 1)},
         recommended_blocks=2),
    Spec("smollm2-135m", "real weights (SmolLM2-135M-Instruct)", alias="smollm2-135m"),
    Spec("gemma3-270m", "real weights (Gemma 3 270M)", alias="gemma3-270m"),
)
# --tiny: two random widths (a slope needs two sizes), the recommended configuration on the first blocks of one
# and a depth series; random ids; timing in this process, memory in fresh ones.
TINY_MODELS = (
    Spec("tiny A", "tiny sizes", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=512)),
    Spec("tiny B", "tiny sizes", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=512), recommended_blocks=2, target=True, depths=(2,)),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="every step on tiny random models, in seconds")
    parser.add_argument("--out", type=Path, help="folder for scale.md (default: docs/results, or $BENCHMARK_RESULTS_DIR)")
    parser.add_argument("--only", help="comma-separated model names to run (default: all)")
    parser.add_argument("--langs", default="en,zh,ar,sw", help="calibration languages (Bible text)")
    parser.add_argument("--samples", type=int, default=4, help="calibration windows per language")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per calibration window")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="timed rounds per model and configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    parser.add_argument("--cache", type=Path, help="random model folders and measurements (default: benchmark-results/scale)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # (internal) one job as JSON: print its result as JSON
    args = parser.parse_args(argv)
    if args.repeats < MIN_REPEATS:
        parser.error(f"at least {MIN_REPEATS} repeats are needed for a median, got {args.repeats}")
    if args.tiny:
        args.langs, args.samples, args.seq_len = "en,zh", 6, 16
    return args


# ----- jobs, each run in a fresh process ------------------------------------------------


def prune_config(name: str):
    from babelprune.prune.config import PruneConfig, ReconstructConfig

    if name == "wanda":
        return PruneConfig(method="wanda", sparsity=SPARSITY)
    # prune_speed.py's "mwanda + CWL + refit": the default 8 windows per forward, one pass.
    return PruneConfig(method="mwanda", allocation="cwl", reconstruct=ReconstructConfig(), sparsity=SPARSITY)


def calibration_for(loaded, spec: dict):
    """Bible windows tokenized by the model's tokenizer, or random ids labelled with the languages (no tokenizer)."""
    import torch

    from babelprune.api import calibrate  # imported by memory_job before it notes its memory
    from babelprune.prune.calibration import Calibration

    if spec["random_vocab"] is None:
        return calibrate(loaded, "bible", spec["langs"], spec["samples"], spec["seq_len"])
    generator = torch.Generator().manual_seed(SEED)
    # (N, T) ids from 4 on (the first ids are often special tokens), N = languages x windows, rows grouped by language.
    ids = torch.randint(4, spec["random_vocab"], (len(spec["langs"]) * spec["samples"], spec["seq_len"]), generator=generator)
    return Calibration(ids, tuple(lang for lang in spec["langs"] for _ in range(spec["samples"])), "random-ids")


def build_job(job: dict) -> dict:
    """Draw the random model and save it (weights as safetensors), with the tokenizer it shares, if any."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    torch.manual_seed(SEED)
    config = LlamaConfig(**job["shape"])
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, job["dtype"]))
    model.save_pretrained(job["folder"])
    if job["tokenizer"]:
        AutoTokenizer.from_pretrained(job["tokenizer"]).save_pretrained(job["folder"])
    else:
        # Loading wants a tokenizer; its calibration windows are random ids, so a four-word one does.
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        words = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}, unk_token="<unk>"))
        PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", pad_token="<pad>").save_pretrained(job["folder"])
    return {"parameters": sum(p.numel() for p in model.parameters())}


def time_job(job: dict) -> dict:
    """Alternate a forward pass and pruning on the dense weights; medians after the warm-up rounds."""
    import torch

    from _common import restore, seconds_of, snapshot
    from babelprune.formats.loading import load_model
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.engine import prune
    from babelprune.prune.sequential import capture_block_inputs, run_block

    loaded = load_model(job["folder"], job["dtype"])
    calibration = calibration_for(loaded, job["calibration"])
    config = prune_config(job["config"])
    adapter = adapter_for(loaded.model)
    dense_weights = snapshot(loaded.model)

    def forward() -> None:
        # The blocks on every window as one batch, as prune_speed.py: (N, T, H) hidden states through each block.
        with torch.no_grad():
            inputs = capture_block_inputs(loaded.model, adapter, calibration.ids)
            for index, block in enumerate(adapter.get_blocks(loaded.model)):
                inputs.hidden = run_block(block, adapter, inputs, index)

    forwards, prunes = [], []
    for round_index in range(job["warmup"] + job["repeats"]):
        restore(loaded.model, dense_weights)
        forward_s = seconds_of(forward)
        prune_s = seconds_of(lambda: prune(loaded, config, calibration, progress=False))
        print(f"round {round_index}: forward {forward_s:.1f} s, pruning {prune_s:.1f} s", file=sys.stderr, flush=True)
        if round_index >= job["warmup"]:
            forwards.append(forward_s)
            prunes.append(prune_s)
    forward_s, prune_s = statistics.median(forwards), statistics.median(prunes)
    return {"forward_s": forward_s, "prune_s": prune_s, "time_ratio": prune_s / forward_s,
            "tokens": int(calibration.ids.numel()), "measured_at": time.time()}


def memory_job(job: dict) -> dict:
    """Peak resident memory of one pruning run, minus what the process held before the model, over the tensor bytes."""
    import shutil

    import babelprune.api  # noqa: F401 (calibration's imports, before the memory they take counts)
    from _common import PeakRSS, rss
    from babelprune.formats.loading import load_model
    from babelprune.prune.engine import prune
    from babelprune.prune.offload import open_offloaded, prune_offloaded
    from prune_memory import tensor_bytes

    config = prune_config(job["config"])
    scratch = Path(tempfile.mkdtemp(dir=job["scratch"]))
    before = rss()
    try:
        if job["offload"]:  # opening, pruning and writing the HF weights are one phase
            with PeakRSS() as peak:
                offloaded = open_offloaded(job["folder"])  # float32 blocks, as --offload disk prunes
                calibration = calibration_for(offloaded.loaded, job["calibration"])
                prune_offloaded(offloaded, config, calibration, scratch / "out", fmt="hf", progress=False)
        else:
            loaded = load_model(job["folder"], job["dtype"])
            calibration = calibration_for(loaded, job["calibration"])
            with PeakRSS() as peak:
                prune(loaded, config, calibration, progress=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"peak_bytes": peak.peak - before, "memory_ratio": (peak.peak - before) / tensor_bytes(Path(job["folder"])),
            "measured_at": time.time()}


JOBS = {"build": build_job, "time": time_job, "memory": memory_job}


def run_child(job: dict) -> dict:
    """`job` in a fresh Python process (this script with --child); its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{job['do']} job for {job['folder']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----- the models ------------------------------------------------------------------------


@dataclass
class Measured:
    """One model and configuration: the model pruned (the model itself, or its first blocks) and its figures."""

    spec: Spec  # the model pruned
    sizes: dict
    time: dict | None = None  # the time job's result
    in_memory: dict | None = None  # memory job results
    offloaded: dict | None = None

    def results(self) -> list[dict]:
        return [r for r in (self.time, self.in_memory, self.offloaded) if r is not None]


@dataclass
class Model:
    """A model of the run: what its files hold and its measurements, configuration -> Measured."""

    spec: Spec
    sizes: dict
    runs: dict[str, Measured] = field(default_factory=dict)


@dataclass
class SeriesPoint:
    """The target model's first blocks at one calibration size: configuration -> the time job's result."""

    size: CalibrationSize
    spec: Spec  # the model timed (the first blocks)
    sizes: dict
    times: dict[str, dict] = field(default_factory=dict)


def model_folder(spec: Spec, cache: Path, in_process: bool = False) -> Path:
    """The Hugging Face folder of `spec`: the alias's, or the random model saved once under `cache`."""
    from babelprune.cache import atomic_dir
    from babelprune.formats.loading import resolve_spec

    if not spec.random:
        return Path(resolve_spec(spec.alias))
    import torch
    import transformers

    tokenizer = str(resolve_spec(spec.tokenizer)) if spec.tokenizer else None
    # Everything that decides the weights: a folder made with other settings is drawn again.
    fields = {"shape": spec.shape, "dtype": spec.dtype, "tokenizer": spec.tokenizer, "seed": SEED,
              "transformers": transformers.__version__, "torch": torch.__version__}
    root = cache / "models" / spec.slug
    keyed_folder(root, fields, spec.name)
    folder = root / "model"
    if not (folder / "config.json").is_file():  # atomic_dir: the folder is whole or absent
        print(f"{spec.name}: drawing random weights into {folder}", flush=True)
        with atomic_dir(folder) as tmp:
            job = {"do": "build", "folder": str(tmp), "shape": spec.shape, "dtype": spec.dtype, "tokenizer": tokenizer}
            build_job(job) if in_process else run_child(job)
    return folder


BLOCK_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def folder_sizes(folder: Path) -> dict:
    """Parameters and bytes of the folder's safetensors tensors: all, in the blocks, the largest block, outside the blocks."""
    from safetensors import safe_open

    from babelprune.formats.hf import weight_files

    width = {"F32": 4, "F16": 2, "BF16": 2}
    params = stored = outside = 0
    blocks: dict[int, int] = {}
    for file in weight_files(folder, "re-create it"):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                part = handle.get_slice(key)
                count = math.prod(part.get_shape())
                params += count
                stored += count * width.get(part.get_dtype(), 8)
                block = BLOCK_KEY.search(key)
                if block:
                    blocks[int(block.group(1))] = blocks.get(int(block.group(1)), 0) + count
                else:
                    outside += count
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config", config)
    return {
        "folder": str(folder), "parameters": params, "block_parameters": sum(blocks.values()), "model_bytes": stored,
        # --offload disk holds these in float32 whatever the file's type: one block, and everything outside the blocks.
        "block_fp32_bytes": 4 * max(blocks.values(), default=0), "outside_fp32_bytes": 4 * outside,
        "hidden": text["hidden_size"], "ffn": text["intermediate_size"], "heads": text["num_attention_heads"],
        "kv_heads": text.get("num_key_value_heads", text["num_attention_heads"]), "blocks": text["num_hidden_layers"],
        "vocab": text["vocab_size"],
    }


# ----- measuring -------------------------------------------------------------------------


class Runner:
    """Runs the jobs of one invocation, each cached under the cache folder keyed on everything that decides it."""

    def __init__(self, args: argparse.Namespace, cache: Path) -> None:
        self.args = args
        self.cache = cache
        self.started = time.time()
        self.code = source_fingerprint(("src", "benchmarks/scale.py", "benchmarks/_common.py", "benchmarks/prune_memory.py"))
        self.machine = {"cpus": os.cpu_count(), "node": platform.node(), "platform": platform.platform()}
        self.scratch = cache / "scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)

    def calibration(self, spec: Spec, sizes: dict, size: CalibrationSize | None = None) -> dict:
        """The calibration job field: this table's own, or one of the series (`size`)."""
        size = size or CalibrationSize(self.args.langs, self.args.samples, self.args.seq_len, "")
        # A random model without a real model's tokenizer gets random ids in its own vocabulary.
        random_vocab = sizes["vocab"] if spec.random and not spec.tokenizer else None
        return {"langs": size.langs.split(","), "samples": size.samples, "seq_len": size.seq_len,
                "random_vocab": random_vocab}

    def rounds(self, spec: Spec, config: str) -> tuple[int, int]:
        return spec.rounds.get(config, (self.args.warmup, self.args.repeats))

    def run(self, spec: Spec, sizes: dict, job: dict, label: str, size: CalibrationSize | None = None) -> dict:
        job = {"folder": sizes["folder"], "dtype": spec.dtype, "calibration": self.calibration(spec, sizes, size), **job}
        fields = {**job, "model": {"spec": spec.name, "sizes": sizes}, "code": self.code, "machine": self.machine}
        # --tiny times in this process; a memory peak always needs a fresh one.
        in_process = self.args.tiny and job["do"] != "memory"
        run = (lambda: JOBS[job["do"]](job)) if in_process else (lambda: run_child(job | {"scratch": str(self.scratch)}))
        result = cached_stage(self.cache / "stages" / f"{spec.slug}-{label}.json", fields, run, f"{spec.name} {label}")
        return result | {"reused": result["measured_at"] < self.started}

    def prepare(self, spec: Spec) -> tuple[Spec, dict]:
        folder = model_folder(spec, self.cache, in_process=self.args.tiny)
        return spec, folder_sizes(folder)

    def memory(self, spec: Spec, sizes: dict, config: str, offload: bool) -> dict:
        where = "offload" if offload else "in-memory"
        result = self.run(spec, sizes, {"do": "memory", "config": config, "offload": offload}, f"memory-{config}-{where}")
        print(f"{spec.name} {config} {where}: peak {result['memory_ratio']:.2f} x the model", flush=True)
        return result

    def measure(self, spec: Spec) -> Model:
        spec, sizes = self.prepare(spec)
        model = Model(spec, sizes)
        for config in CONFIGS:
            cut = config == "recommended" and spec.recommended_blocks
            pruned, pruned_sizes = self.prepare(spec.cut(spec.recommended_blocks)) if cut else (spec, sizes)
            warmup, repeats = self.rounds(spec, config)
            timed = self.run(pruned, pruned_sizes, {"do": "time", "config": config, "warmup": warmup, "repeats": repeats},
                             f"time-{config}-{warmup}-{repeats}")
            print(f"{pruned.name} {config}: forward {timed['forward_s']:.1f} s, pruning {timed['prune_s']:.1f} s, "
                  f"ratio {timed['time_ratio']:.2f}", flush=True)
            if cut:
                model.runs[config] = Measured(pruned, pruned_sizes, timed)
            else:
                model.runs[config] = Measured(pruned, pruned_sizes, timed, self.memory(pruned, pruned_sizes, config, False),
                                              self.memory(pruned, pruned_sizes, config, True))
        return model

    def series(self, spec: Spec) -> list[SeriesPoint]:
        """Both configurations timed on `spec`'s first SERIES_BLOCKS blocks at each calibration size."""
        cut, sizes = self.prepare(spec.cut(SERIES_BLOCKS))
        points = []
        for index, size in enumerate(calibration_series(self.args)):
            point = SeriesPoint(size, cut, sizes)
            for config in CONFIGS:
                warmup, repeats = self.rounds(spec, config)
                # The first size is the table's own: the recommended configuration's timing of these blocks is reused.
                label = f"time-{config}-{warmup}-{repeats}" + ("" if index == 0 else f"-calibration-{size.slug}")
                timed = self.run(cut, sizes, {"do": "time", "config": config, "warmup": warmup, "repeats": repeats},
                                 label, None if index == 0 else size)
                print(f"{cut.name} {config}, {size.tokens} tokens: forward {timed['forward_s']:.1f} s, pruning "
                      f"{timed['prune_s']:.1f} s, ratio {timed['time_ratio']:.2f}", flush=True)
                point.times[config] = timed | {"rounds": f"{warmup} + {repeats}"}
            points.append(point)
        return points

    def depth_row(self, spec: Spec, blocks: int) -> Model:
        """wanda on `spec`'s shape cut to `blocks` blocks, in memory and offloaded (no timing)."""
        shallow, sizes = self.prepare(spec.cut(blocks))
        measured = Measured(shallow, sizes, None, self.memory(shallow, sizes, "wanda", False),
                            self.memory(shallow, sizes, "wanda", True))
        return Model(shallow, sizes, {"wanda": measured})


# ----- fits and the table ----------------------------------------------------------------


def loglog_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(exponent b, factor a) of the least-squares line log y = log a + b log x; needs two distinct x."""
    if len(set(xs)) < 2 or len(xs) != len(ys):
        raise ValueError("a log-log fit needs at least two distinct sizes, each with one time")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    slope = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sum((x - mx) ** 2 for x in lx)
    return slope, math.exp(my - slope * mx)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def mark(result: dict) -> str:
    return " *" if result.get("reused") else ""


def megabytes(count: float) -> str:
    return f"{count / 1e6:.0f}"


def billions(count: float) -> str:
    return f"{count / 1e9:.3f}"


def calibration_text(spec: Spec) -> str:
    if not spec.random:
        return "Bible text, its own tokenizer"
    if spec.tokenizer:
        return f"Bible text, {spec.tokenizer}'s tokenizer (same vocabulary)"
    return "random ids (no tokenizer with this vocabulary here)"


def models_table(models: list[Model]) -> str:
    rows = []
    for model in models:
        s = model.sizes
        rows.append([model.spec.name, model.spec.follows, s["hidden"], s["ffn"], f"{s['heads']} / {s['kv_heads']}", s["blocks"],
                     s["vocab"], model.spec.dtype, billions(s["parameters"]), billions(s["block_parameters"]),
                     megabytes(s["model_bytes"]), calibration_text(model.spec)])
    header = ["model", "sizes follow", "hidden", "FFN", "heads (q / kv)", "blocks", "vocabulary", "dtype", "parameters (B)",
              "in the blocks (B)", "model MB", "calibration"]
    return table(header, rows)


def rounds_text(runner: Runner, model: Model, config: str) -> str:
    warmup, repeats = runner.rounds(model.spec, config)
    return f"{warmup} + {repeats}"


def wanda_table(models: list[Model], runner: Runner) -> str:
    rows = []
    for model in models:
        run = model.runs["wanda"]
        s, floor = model.sizes, model.sizes["block_fp32_bytes"] + model.sizes["outside_fp32_bytes"]
        rows.append([model.spec.name, billions(s["parameters"]), f"{run.time['forward_s']:.2f}", f"{run.time['prune_s']:.2f}",
                     f"{run.time['time_ratio']:.2f}{mark(run.time)}", rounds_text(runner, model, "wanda"), megabytes(s["model_bytes"]),
                     f"{run.in_memory['memory_ratio']:.2f}{mark(run.in_memory)}",
                     f"{run.offloaded['memory_ratio']:.2f}{mark(run.offloaded)}", megabytes(run.offloaded["peak_bytes"]),
                     megabytes(floor), f"{run.offloaded['peak_bytes'] / floor:.2f}"])
    header = ["model", "parameters (B)", "forward s", "wanda s", "wanda / forward", "rounds (warm-up + timed)", "model MB",
              "memory, in memory (x model)", "memory, --offload disk (x model)", "offloaded peak MB",
              "one block + outside the blocks, fp32 MB", "offloaded peak / that"]
    return table(header, rows)


def recommended_table(models: list[Model], runner: Runner) -> str:
    rows = []
    for model in models:
        run = model.runs["recommended"]
        s = run.sizes
        pruned = f"{s['blocks']} of {model.sizes['blocks']}" + (" (the first)" if s["blocks"] < model.sizes["blocks"] else "")
        cells = [model.spec.name, pruned, f"{run.time['forward_s']:.2f}", f"{run.time['prune_s']:.2f}",
                 f"{run.time['time_ratio']:.2f}{mark(run.time)}", rounds_text(runner, model, "recommended")]
        if run.in_memory is None:
            cells += ["not measured (first blocks)"] * 3
        else:
            cells += [f"{run.in_memory['memory_ratio']:.2f}{mark(run.in_memory)}",
                      megabytes(run.in_memory["peak_bytes"] - s["model_bytes"]),
                      f"{run.offloaded['memory_ratio']:.2f}{mark(run.offloaded)}"]
        rows.append(cells)
    header = ["model", "blocks pruned", "forward s", "recommended s", "recommended / forward", "rounds (warm-up + timed)",
              "memory, in memory (x model)", "in memory: peak above the model, MB", "memory, --offload disk (x model)"]
    return table(header, rows)


def depth_table(series: list[Model]) -> str:
    rows = []
    for model in series:
        s = model.sizes
        memory, disk = model.runs["wanda"].in_memory, model.runs["wanda"].offloaded
        rows.append([model.spec.name, s["blocks"], megabytes(s["model_bytes"]),
                     f"{megabytes(memory['peak_bytes'])} ({memory['memory_ratio']:.2f}){mark(memory)}",
                     f"{megabytes(disk['peak_bytes'])} ({disk['memory_ratio']:.2f}){mark(disk)}",
                     megabytes(s["block_fp32_bytes"] + s["outside_fp32_bytes"])])
    header = ["model", "blocks", "model MB", "in memory: peak MB (x model)", "--offload disk: peak MB (x model)",
              "one block + outside the blocks, fp32 MB"]
    return table(header, rows)


def fits(models: list[Model]) -> list[tuple[str, str, str, float]]:
    """(time of, against, fitted over, exponent): whole random models (wanda), and time per block against parameters per block."""
    random = [m for m in models if m.spec.random]
    float32 = [m for m in random if m.spec.dtype == "float32"]
    groups = [("random models", random)] + ([("float32 random models", float32)] if len(float32) != len(random) else [])
    out = []

    def add(quantity: str, against: str, label: str, points: list[tuple[float, float]]) -> None:
        if len({x for x, _ in points}) >= 2:
            exponent, _ = loglog_fit([x for x, _ in points], [y for _, y in points])
            out.append((quantity, against, label, exponent))

    for label, group in groups:
        names = f"{label}: {', '.join(m.spec.name for m in group)}"
        runs = [m.runs["wanda"] for m in group]
        add("forward pass", "parameters", names, [(m.sizes["parameters"], r.time["forward_s"]) for m, r in zip(group, runs)])
        add("pruning, wanda", "parameters", names, [(m.sizes["parameters"], r.time["prune_s"]) for m, r in zip(group, runs)])
        for config in CONFIGS:
            # Per block: the recommended configuration's figures come from the first blocks of the larger models.
            per_block = [m.runs[config] for m in group]
            add(f"forward pass per block ({config} runs)", "parameters per block", names,
                [(r.sizes["block_parameters"] / r.sizes["blocks"], r.time["forward_s"] / r.sizes["blocks"]) for r in per_block])
            add(f"pruning per block, {config}", "parameters per block", names,
                [(r.sizes["block_parameters"] / r.sizes["blocks"], r.time["prune_s"] / r.sizes["blocks"]) for r in per_block])
    return out


def fit_table(models: list[Model]) -> str:
    rows = [[quantity, against, label, f"{exponent:.2f}"] for quantity, against, label, exponent in fits(models)]
    return table(["time of", "against", "fitted over", "exponent"], rows) if rows else "Fewer than two random sizes measured: no fit."


def series_table(points: list[SeriesPoint]) -> str:
    rows = []
    for point in points:
        size = point.size
        for config in CONFIGS:
            timed = point.times[config]
            rows.append([f"{size.tokens:,}", f"{len(size.langs.split(','))} x {size.samples} x {size.seq_len}", size.about,
                         config, f"{timed['forward_s']:.2f}", f"{timed['prune_s']:.2f}",
                         f"{timed['time_ratio']:.2f}{mark(timed)}", timed["rounds"]])
    header = ["calibration tokens", "languages x windows x tokens", "calibration", "configuration", "forward s", "pruning s",
              "pruning / forward", "rounds (warm-up + timed)"]
    return table(header, rows)


def targets_table(models: list[Model], points: list[SeriesPoint]) -> str:
    target = next((m for m in models if m.spec.target), None)
    if target is None:
        return "The target model was not measured in this run."

    def verdict(ratio: float, limit: float, strict: bool = False) -> str:
        return "met" if (ratio < limit if strict else ratio <= limit) else "not met"

    wanda = target.runs["wanda"].time["time_ratio"]
    offload = target.runs["wanda"].offloaded["memory_ratio"]
    tokens = f"{target.runs['wanda'].time['tokens']:,}"
    rows = [[f"{target.spec.name} prunes with wanda within {TARGET_WANDA_TIME:g}x one forward pass, whole model, at this "
             f"table's calibration ({tokens} tokens)", f"{wanda:.2f}x", verdict(wanda, TARGET_WANDA_TIME)]]
    if points:
        last = points[-1]
        ratio = last.times["wanda"]["time_ratio"]
        rows.append([f"{target.spec.name} prunes with wanda within {TARGET_WANDA_TIME:g}x one forward pass, at "
                     f"{last.size.about} ({last.size.tokens:,} tokens; its first {last.sizes['blocks']} blocks)",
                     f"{ratio:.2f}x", verdict(ratio, TARGET_WANDA_TIME)])
    rows.append([f"{target.spec.name} with --offload disk peaks under {TARGET_OFFLOAD_MEMORY:g}x its model bytes",
                 f"{offload:.2f}x", verdict(offload, TARGET_OFFLOAD_MEMORY, strict=True)])
    return table(["target", "measured", "met / not met"], rows)


def result_markdown(args, runner: Runner, models: list[Model], series: list[Model], points: list[SeriesPoint], planned: int,
                    seconds: float) -> str:
    tokens = len(args.langs.split(",")) * args.samples * args.seq_len
    fewer = sorted({m.spec.name for m in models for config in CONFIGS if config in m.spec.rounds})
    cut = [m.spec.name for m in models if m.runs["recommended"].sizes["blocks"] < m.sizes["blocks"]]
    parts = [
        *([f"Models measured so far: {len(models)} of {planned} (the run was still going when this was written)."]
          if len(models) < planned else []),
        f"{'Tiny sizes (--tiny): a check that the script runs, not a result. ' if args.tiny else ''}"
        f"Calibration: {len(args.langs.split(','))} languages ({args.langs}) x {args.samples} windows x {args.seq_len} tokens "
        f"= {tokens} tokens; {SPARSITY:.0%} sparsity; wanda and the recommended configuration (mwanda + CWL + refit, "
        f"`--method mwanda --reconstruct`), both with the default 8 windows per forward. Random weights are drawn by "
        f"the model's own initialisation after torch.manual_seed({SEED}). {len(models)} models, {seconds / 60:.0f} min in all.",
        "## Models",
        models_table(models),
        "## wanda: time and memory",
        "Time: each row in a fresh process loads the model, keeps a copy of its dense block weights, then runs "
        "rounds of (one forward pass of the blocks, no LM head, over every calibration window as one batch; pruning; "
        "the dense weights back): the medians of the timed rounds after the warm-up rounds (prune_speed.py's "
        "procedure). Memory: each cell in a fresh process (prune_memory.py's procedure), peak resident memory minus "
        "what the process held before the model was loaded, over the model's tensor bytes. In memory: load (in the "
        "model's dtype), calibrate, prune; the peak while pruning, the model included. --offload disk: open the "
        "folder, calibrate, prune block by block and write the HF weights (`--format hf`), the peak of that whole "
        "phase; it holds the block it prunes and what lies outside the blocks (embeddings, final norm) in float32 "
        "whatever the folder's dtype, and the last column sets its peak against those bytes."
        + (f" {', '.join(fewer)}: fewer rounds than the others (see the rounds column), since one round takes many "
           f"minutes on this CPU; a ratio from one round without warm-up is noisier." if fewer else ""),
        wanda_table(models, runner),
        "## The recommended configuration: time and memory",
        "The same measurements for mwanda + CWL + refit. Its refit costs a few (out, in) x (in, in) products per "
        "linear, whatever the number of calibration tokens, so it grows with width times parameters and outweighs "
        "the forward pass at this calibration size."
        + (f" {', '.join(cut)}: one pruning of the whole model with it takes too long here, so it is measured on the "
           f"model's first blocks (the same random model with fewer blocks; every block has the same shape, so the "
           f"time per block and the time ratio are the whole model's) and its memory is not measured." if cut else ""),
        recommended_table(models, runner),
    ]
    if points:
        cut = points[0].spec.name
        parts += [
            "## Calibration size: time against tokens, on the target model's first blocks",
            f"{cut}: both configurations timed as above (fresh process, warm-up and timed rounds, medians) at each "
            "calibration size, up to what `babelprune prune` reads when given no --calib option. Every block has "
            "the same shape, so the ratio is the whole model's, as the first row, at this table's calibration, shows "
            "against the whole model's row above. Pruning adds to the forward pass a cost per weight (wanda: the "
            "scores, the selection of each row's cut, the zeroing; the recommended configuration: the refit's "
            "products, which grow with width times parameters), none of which grows with the tokens, while the "
            "forward pass does, so the ratio falls as the calibration grows.",
            series_table(points),
        ]
    if series:
        parts += [
            "## Depth: the same width with more blocks, wanda",
            "With --offload disk the peak follows one block and what lies outside the blocks, whatever the depth; "
            "in memory it grows with the model.",
            depth_table(series),
        ]
    parts += [
        "## Exponents: time against parameters",
        "Least-squares slope of log seconds against log parameters over the random models. Whole models: all of a "
        "model's parameters (tied embeddings once), though the forward pass multiplies only the block weights, so a "
        "model with a large vocabulary sits below the line. Per block: seconds over the blocks pruned against the "
        "parameters of one block, where depth drops out (the engine runs the blocks one after another). An exponent "
        "near 1 means time proportional to size; equal exponents for the forward pass and pruning mean a time ratio "
        "that holds at every size. The 3B model runs in bfloat16, whose products run at another speed than "
        "float32's, hence the float32-only fits.",
        fit_table(models),
        "## Targets",
        targets_table(models, points),
    ]
    measured = [r for m in models + series for run in m.runs.values() for r in run.results()]
    measured += [timed for point in points for timed in point.times.values()]
    if any(r.get("reused") for r in measured):
        parts.append("\\* measured by an earlier run of the same code, settings and machine, reused from the cache.")
    return "\n\n".join(parts)


# ----- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Path | None:
    args = parse_args(argv)
    if args.child:  # a job in this fresh process: its result as the last line of stdout
        job = json.loads(args.child)
        print(json.dumps(JOBS[job["do"]](job)))
        return None
    started = time.perf_counter()
    specs = TINY_MODELS if args.tiny else MODELS
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {s.name for s in specs}
        if unknown:
            raise SystemExit(f"--only names unknown models: {', '.join(sorted(unknown))}; models: {', '.join(s.name for s in specs)}")
        specs = tuple(s for s in specs if s.name in wanted)
    command = shlex.join(["python", "benchmarks/scale.py", *argv]) if argv is not None else None
    with tempfile.TemporaryDirectory() as throwaway:
        cache = Path(throwaway) if args.tiny and args.cache is None else args.cache or Path("benchmark-results/scale")
        runner = Runner(args, cache.resolve())
        models, series, points, path = [], [], [], None
        for spec in specs:
            models.append(runner.measure(spec))
            if spec.target:
                points = runner.series(spec)
            series += [runner.depth_row(spec, blocks) for blocks in spec.depths] + ([models[-1]] if spec.depths else [])
            # Written after every model: a long run that is stopped keeps what it measured, and says so.
            body = result_markdown(args, runner, models, series, points, len(specs), time.perf_counter() - started)
            path = write_result_table("scale", "One-shot pruning at growing model sizes: time and memory", body,
                                      command=command, directory=args.out or RESULTS_DIR)
    return path


if __name__ == "__main__":
    main()
