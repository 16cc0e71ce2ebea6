"""What each way of shrinking gives at equal bytes: quantization, trimming, structured and unstructured pruning, per language.

    python benchmarks/equal_bytes.py [--model gemma3-270m] [--langs en,es,fr,zh,ru,ar,hi,sw] [--unseen ko,tr,vi,ja]
        [--targets 250,150,100,60] [--quants Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K] [--ffn 0.1,0.2,0.3]
        [--imatrix balanced] [--verses 120] [--cache benchmark-results/equal_bytes]
    python benchmarks/equal_bytes.py --tiny [--out FOLDER]

For each target size (--targets, in MB of 1e6 bytes) and each recipe, the
configuration whose bytes come closest to the target without passing it is
chosen ("none fits" when every one passes it), scored per language and timed.
The recipes:

1. quantized: the dense model exported to GGUF and quantized by llama.cpp's
   own quantizer to each of --quants;
2. trimmed + quantized: the vocabulary trimmed to what the Bible's calibration
   split of the kept languages (--langs) uses (`trim_to_folder`, the library's
   defaults: reserved `<unusedN>` pieces kept), then quantized to each type;
3. trimmed + FFN pruned + quantized: the trimmed model with FFN neurons removed
   (`StructuredConfig(units=["ffn"], importance="balanced",
   ranking="per-layer")`, calibrated on the kept languages), then quantized to
   each type. Each --ffn share is moved to the nearest whole number of
   `ALIGN` neurons per block (32 where the FFN width is not a multiple of 256),
   so that every block keeps a width llama.cpp's quantization blocks divide:
   GGUF states one FFN width for every block (hence per-layer ranking), and a
   width that is not a multiple of 32 stores ffn_down in F16;
4. trimmed + 50% sparse, fp16: the trimmed model pruned to 50% with the
   recommended configuration (mwanda, CWL allocation, refit) and saved as the
   sparse copy alone with float16 values (`prune --format sparse --values fp16`).

The bytes of a configuration are what one ships to run it. A GGUF file holds
its weights, tokenizer and settings: its size on disk. The sparse copy's
folder holds sparse/sparse.safetensors, sparse/config.json, the tokenizer
files and babelprune's records; its bytes are every file in it. Inside
sparse.safetensors every block linear weight with at least 25% zeros is a
bitmask (1 bit per element, rounded up to whole bytes) plus its non-zero
values as float16 (2 bytes each); every other tensor (embeddings, norms) is
stored whole as float16, tied tensors once (`sparse_copy_bytes`, shown beside
the file's size: the difference is the safetensors header).

Quantized files read babelprune's language-balanced importance matrix over
the kept languages (--imatrix balanced; Q8_0 reads none). Scoring: the first
--verses verses of the Bible's evaluation split in every kept and unseen
language (--unseen), cut into blocks of consecutive verses of 140-220 dense
tokens (`held_out_blocks`), one block per window of 256 tokens, read whole by
every model, so that windows pair across tokenizers. GGUF files are scored in
llama.cpp with the tokenizer of the folder they were made from, the sparse
copy in torch (its values reloaded as float32); every model against the dense
model in torch. Each cell is the change of bits per byte with its 95% paired
bootstrap interval; "n.r." (not resolved) where the interval contains 0;
"unpaired" where neither the windows nor the blocks match, so that each side
is resampled on its own. A trimmed vocabulary spells an unseen language in
more, shorter pieces and cuts its long blocks into other windows; such a
language is paired block by block (`compare` pairs on the text's segments). Trimming keeps only the
pieces of the kept languages' text: unseen languages are expected to lose.
The dense model's f32 GGUF in llama.cpp is scored as well: the part of every
GGUF row's change that is the runtime's. Speed: llama.cpp's prompt and
generation tokens per second at batch 1 (`bench-speed`) of each chosen GGUF
file and of the f32 file.

Every folder, file, result and timing is cached under --cache keyed on its
settings and babelprune's source, so an interrupted run resumes. Needs
llama-cpp-python (`pip install 'babelprune[llama]'`). --tiny runs every step on
a tiny random Llama model (gemma3-270m's tokenizer, trimmed to the Bible's
text in three languages), in a minute or two. Writes docs/results/equal_bytes.md.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import cached_stage, require_llama_cpp, source_fingerprint, write_result_table  # noqa: E402
from _small_and_fast_parts import held_out_blocks  # noqa: E402
from babelprune.api import (  # noqa: E402
    DEFAULT_CALIBRATION_LANGUAGES,
    CalibrationSpec,
    evaluate_model,
    export_model,
    language_importance,
    load_model,
    measure_gguf_speeds,
    prune_to_folder,
    trim_to_folder,
)
from babelprune.errors import BabelpruneError  # noqa: E402
from babelprune.formats.gguf_quant import READS_NO_IMATRIX, export_quantized  # noqa: E402
from babelprune.formats.pruned import SPARSE_MIN_ZEROS, block_linear_keys, sparse_weights_file  # noqa: E402
from babelprune.prune.config import PruneConfig, ReconstructConfig, StructuredConfig, TrimConfig  # noqa: E402
from babelprune.records import EvalResult  # noqa: E402
from babelprune.records.eval import resampled_paired  # noqa: E402
from babelprune.report.compare import compare  # noqa: E402

BENCHMARK = {"minutes": 150}
UNSEEN = ("ko", "tr", "vi", "ja")  # Bible languages outside the default calibration set: trimming keeps none of their own pieces
QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
RECIPES = {
    "quant": "quantized",
    "trim": "trimmed + quantized",
    "ffn": "trimmed + FFN pruned + quantized",
    "sparse": "trimmed + 50% sparse, fp16",
}
# The recommended configuration (mwanda with its CWL allocation, and the refit) at 50%.
SPARSE = PruneConfig(method="mwanda", sparsity=0.5, reconstruct=ReconstructConfig())
SPARSE_LABEL = "mwanda + CWL + refit 50%, fp16 values"
SPARSE_VALUE_BYTES = 2  # float16
SEQ_LEN = 256  # held_out_blocks' blocks (at most 220 dense tokens) fill one window of 256 each
ALL_TOKENS = 10**9  # every token of the held-out blocks
ALIGN = 256  # llama.cpp's k-quant block: FFN widths kept at multiples of it (of 32, the other types' block, otherwise)
TINY_KEPT, TINY_UNSEEN = ("en", "sw"), ("ko",)


# ----- the pure pieces ---------------------------------------------------------------------------


def closest_under(sizes: Sequence[tuple[str, int]], target: int) -> str | None:
    """The label of the largest size not above `target` (the first listed among equal sizes); None when none fits."""
    best: tuple[str, int] | None = None
    for label, size in sizes:
        if size <= target and (best is None or size > best[1]):
            best = (label, size)
    return best[0] if best else None


def sparse_copy_bytes(tensors: Iterable[tuple[int, int, bool]], value_bytes: int = SPARSE_VALUE_BYTES) -> dict[str, int]:
    """Tensor bytes of a sparse copy: {"masks", "values", "dense", "total"}.

    `tensors`: (elements, non-zero elements, is a block linear weight) of every
    tensor stored, tied ones once. A block linear weight with at least
    SPARSE_MIN_ZEROS of zeros is stored as a bitmask of ceil(elements / 8) bytes
    plus `value_bytes` per non-zero value; every other tensor whole, `value_bytes`
    per element (as `babelprune.formats.pruned.save_sparse` writes them).
    """
    masks = values = dense = 0
    for elements, nonzero, block_linear in tensors:
        if block_linear and elements and (elements - nonzero) / elements >= SPARSE_MIN_ZEROS:
            masks += math.ceil(elements / 8)
            values += nonzero * value_bytes
        else:
            dense += elements * value_bytes
    return {"masks": masks, "values": values, "dense": dense, "total": masks + values + dense}


def ffn_cuts(shares: Sequence[float], block_params: int, neuron_params: int, width: int) -> list[int]:
    """Neurons to remove per block for each share of the block parameters: the nearest multiple of the alignment.

    The alignment is ALIGN when the FFN `width` is a multiple of it, else 32; at
    least one step is removed and one step kept; repeats are dropped, order kept.
    """
    step = ALIGN if width % ALIGN == 0 else 32
    cuts: list[int] = []
    for share in shares:
        steps = min(max(1, round(share * block_params / neuron_params / step)), width // step - 1)
        if steps >= 1 and steps * step not in cuts:
            cuts.append(steps * step)
    return cuts


def ffn_sparsity(cut: int, block_params: int, neuron_params: int) -> float:
    """The structured sparsity that removes exactly `cut` neurons from every block (per-layer ranking).

    Half a neuron's parameters above the cut's own: the greedy selection
    (babelprune.prune.structured.selection) takes neurons while they fit, so
    `cut` fit and one more does not.
    """
    return (cut + 0.5) * neuron_params / block_params


def language_cell(comparison, language: str, paired: bool = True) -> str:
    """"+0.52% [+0.10, +1.06]" for one language; "n.r." when the interval contains 0; "unpaired" when resampled apart."""
    change = next(c for c in comparison.changes if c.language == language)
    value = comparison.degradation(change)
    interval = comparison.degradation_interval(change)
    text = f"{100 * value:+.2f}%"
    if interval is not None:
        low, high = interval
        text += f" [{100 * low:+.2f}, {100 * high:+.2f}]" + (" n.r." if low <= 0 <= high else "")
    return text + ("" if paired else " unpaired")


def mean_cell(comparison) -> str:
    """The mean change over a comparison's languages, with its interval; "n.r." when it contains 0."""
    value, interval = comparison.mean_degradation, comparison.mean_interval
    if interval is None:
        return f"{100 * value:+.2f}%"
    low, high = interval
    return f"{100 * value:+.2f}% [{100 * low:+.2f}, {100 * high:+.2f}]" + (" n.r." if low <= 0 <= high else "")


def paired(before: EvalResult, after: EvalResult, language: str) -> bool:
    """Whether `compare` resamples `language` paired: the same windows, or else the same blocks of text (`paired_parts`)."""
    return resampled_paired(*({s.language: s for s in result.scores}[language] for result in (before, after)))


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f}"


# ----- building -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One configuration of a recipe: the file (GGUF) or folder (sparse copy) that is shipped."""

    recipe: str  # a key of RECIPES
    label: str
    path: Path
    fields: dict  # everything that decides it
    bytes: int
    tokenizer: str | None = None  # the folder or alias whose tokenizer made a GGUF file's windows
    made: dict | None = None  # what making it recorded

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".gguf")

    @property
    def gguf(self) -> bool:
        return self.path.suffix == ".gguf"


def cached_output(path: Path, fields: dict, make: Callable[[], dict], label: str) -> dict:
    """`cached_stage` for a stage that writes `path` (a file or folder): made again when `path` is gone or stale."""
    record = path.parent / f"{path.name}.json"
    if record.exists() and not path.exists():
        record.unlink()

    def run() -> dict:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()  # made with other settings: writers refuse to replace an output
        path.parent.mkdir(parents=True, exist_ok=True)
        return make()

    return cached_stage(record, fields, run, label)


def folder_bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())


def ffn_shape(folder: Path) -> tuple[int, int, int]:
    """(block parameters, parameters per FFN neuron, FFN width) of the model in `folder`, the same in every block."""
    from babelprune.models.adapters import adapter_for
    from babelprune.models.layouts import block_params, layer_layouts, neuron_unit_map, unit_costs

    model = load_model(str(folder)).model
    adapter = adapter_for(model)
    blocks, layouts = adapter.get_blocks(model), layer_layouts(model, adapter)
    costs = unit_costs(adapter, blocks[0], neuron_unit_map(adapter, layouts[0]), layouts[0].ffn)
    sizes = {block_params(adapter, block) for block in blocks}
    if len(sizes) != 1 or len({layout.ffn for layout in layouts}) != 1 or len(set(costs.tolist())) != 1:
        raise BabelpruneError(f"{folder} has blocks of different widths; FFN pruning here assumes every block alike.")
    return sizes.pop(), int(costs[0]), layouts[0].ffn


def sparse_tensors(folder: Path) -> list[tuple[int, int, bool]]:
    """(elements, non-zero elements, is a block linear weight) of every tensor of the sparse copy, tied ones once."""
    model = load_model(str(folder)).model
    linears = block_linear_keys(model)
    seen, tensors = set(), []
    for key, tensor in model.state_dict().items():
        ident = (tensor.data_ptr(), tensor.numel())
        if ident not in seen:
            seen.add(ident)
            tensors.append((tensor.numel(), int(tensor.count_nonzero()), key in linears))
    return tensors


def gguf_files(recipe: str, stem: str, spec: str, decided_by: dict, label_of: Callable[[str], str], args, matrix_fields: dict,
               calibration: CalibrationSpec, cache: Path) -> list[Config]:
    """`spec` quantized to each of args.quants; the model is loaded, and its matrix computed, once and only when a file is made."""
    state: dict = {}

    def loaded():
        if "loaded" not in state:
            state["loaded"] = load_model(spec)
        return state["loaded"]

    def matrix(quant: str):
        if quant in READS_NO_IMATRIX or args.imatrix == "none":
            return None
        if "matrix" not in state:
            state["matrix"] = language_importance(loaded(), "balanced", calibration)
        return state["matrix"]

    def make(path: Path, quant: str) -> dict:
        record = export_quantized(loaded(), path, quant, matrix=matrix(quant))
        return {"size_bytes": record.size_bytes, "fallbacks": record.fallbacks}

    configs = []
    for quant in args.quants:
        path = cache / "files" / f"{stem}-{quant}.gguf"
        kind = "none" if quant in READS_NO_IMATRIX else args.imatrix
        fields = {"source": decided_by, "quant": quant, "imatrix": kind, **(matrix_fields if kind != "none" else {})}
        made = cached_output(path, fields, lambda path=path, quant=quant: make(path, quant), f"export {path.name}")
        configs.append(Config(recipe, label_of(quant), path, fields, made["size_bytes"], tokenizer=spec, made=made))
    return configs


def build(args, model: str, kept: list[str], calibration: CalibrationSpec, cache: Path, code: str) -> tuple[list[Config], Config]:
    """Every configuration of every recipe, and the dense model's f32 GGUF file."""
    folders = cache / "folders"
    cal = calibration.model_dump(mode="json")
    matrix_fields = {"calibration": cal}
    trim = TrimConfig(corpus="bible", languages=kept)
    trimmed = folders / "trimmed"
    trimmed_fields = {"model": model, "trim": trim.model_dump(mode="json"), "code": code}
    cached_output(trimmed, trimmed_fields, lambda: {"kept_ids": len(trim_to_folder(model, trim, trimmed)[0].kept_ids)}, "trim")

    configs = gguf_files("quant", "dense", model, {"model": model, "code": code}, lambda q: q, args, matrix_fields, calibration, cache)
    configs += gguf_files("trim", "trimmed", str(trimmed), trimmed_fields, lambda q: q, args, matrix_fields, calibration, cache)
    block, neuron, width = ffn_shape(trimmed)
    for cut in ffn_cuts(args.ffn, block, neuron, width):
        sparsity = ffn_sparsity(cut, block, neuron)
        structured = StructuredConfig(units=["ffn"], sparsity=sparsity, importance="balanced", ranking="per-layer")
        folder = folders / f"trimmed-ffn{width - cut}"
        fields = {"source": trimmed_fields, "structured": structured.to_dict(), "calibration": cal}
        cached_output(folder, fields, lambda structured=structured, folder=folder: _prune(trimmed, structured, folder, calibration),
                      f"FFN to {width - cut}")
        label = f"FFN {width}→{width - cut} ({100 * cut * neuron / block:.1f}% of block parameters) + {{}}"
        configs += gguf_files("ffn", folder.name, str(folder), fields, label.format, args, matrix_fields, calibration, cache)

    sparse = folders / "trimmed-sparse50-fp16"
    fields = {"source": trimmed_fields, "prune": SPARSE.model_dump(mode="json"), "values": "fp16", "calibration": cal}
    made = cached_output(sparse, fields, lambda: _sparse(trimmed, sparse, calibration), "sparse copy")
    configs.append(Config("sparse", SPARSE_LABEL, sparse, fields, made["folder_bytes"], made=made))

    reference = cache / "files" / "dense-f32.gguf"
    fields = {"model": model, "dtype": "f32", "code": code}
    made = cached_output(reference, fields, lambda: {"size_bytes": export_model(model, reference, dtype="f32").size_bytes},
                         "export dense f32")
    return configs, Config("reference", "dense, f32", reference, fields, made["size_bytes"], tokenizer=model)


def _prune(source: Path, config: StructuredConfig, folder: Path, calibration: CalibrationSpec) -> dict:
    prune_to_folder(str(source), config, folder, calibration)
    return {"folder_bytes": folder_bytes(folder)}


def _sparse(source: Path, folder: Path, calibration: CalibrationSpec) -> dict:
    prune_to_folder(str(source), SPARSE, folder, calibration, save_format="sparse", values="fp16")
    return {"folder_bytes": folder_bytes(folder), "weights_bytes": sparse_weights_file(folder).stat().st_size,
            "accounted": sparse_copy_bytes(sparse_tensors(folder))}


# ----- measuring ------------------------------------------------------------------------------


def measure(args, model: str, kept: list[str], unseen: list[str], calibration: CalibrationSpec, cache: Path) -> str:
    code = source_fingerprint()
    languages = kept + unseen
    configs, reference = build(args, model, kept, calibration, cache, code)

    chosen: dict[tuple[int, str], Config | None] = {}
    for target in args.targets:
        for recipe in RECIPES:
            candidates = [c for c in configs if c.recipe == recipe]
            label = closest_under([(c.label, c.bytes) for c in candidates], target)
            chosen[(target, recipe)] = next((c for c in candidates if c.label == label), None)
    picked = list({c.name: c for c in chosen.values() if c is not None}.values())

    from babelprune.formats.loading import load_model_tokenizer

    corpus = held_out_blocks(languages, args.verses, load_model_tokenizer(model), cache)
    evaluation = {"text": hashlib.sha256(corpus.read_bytes()).hexdigest(), "corpus": str(corpus), "seq_len": SEQ_LEN,
                  "code": code}

    def scored(name: str, spec: str, decided_by: dict, runtime: str, tokenizer: str | None = None) -> EvalResult:
        fields = {"model": decided_by, "runtime": runtime, **evaluation}
        extra = {"tokenizer": tokenizer} if runtime == "llama.cpp" else {}
        stage = cached_stage(cache / "results" / f"{name}.json", fields, lambda: {"eval": evaluate_model(
            spec, str(corpus), languages, "all", SEQ_LEN, ALL_TOKENS, runtime=runtime, **extra).model_dump(mode="json")},
            f"eval {name}")
        return EvalResult.model_validate(stage["eval"])

    dense = scored("dense-torch", model, {"model": model, "code": code}, "torch")
    runtime = scored(reference.name, str(reference.path), reference.fields, "llama.cpp", reference.tokenizer)
    results = {c.name: scored(c.name, str(c.path), c.fields, "llama.cpp" if c.gguf else "torch", c.tokenizer) for c in picked}

    timed = [reference, *(c for c in picked if c.gguf)]
    speed_fields = {"files": [c.fields for c in timed], "runs": args.runs, "seq_len": args.speed_seq_len,
                    "new_tokens": args.new_tokens, "threads": args.threads}
    reports = cached_stage(cache / "speed.json", speed_fields, lambda: {"reports": [
        report.model_dump(mode="json") for report in measure_gguf_speeds(
            [str(c.path) for c in timed], seq_len=args.speed_seq_len, runs=args.runs, warmup=1, threads=args.threads,
            new_tokens=args.new_tokens)]}, "speed")["reports"]
    speeds = {Path(report["spec"]).name: report for report in reports}

    return "\n".join(tables(args, kept, unseen, configs, reference, chosen, dense, runtime, results, speeds))


def _subset(result: EvalResult, languages: list[str]) -> EvalResult:
    return result.model_copy(update={"scores": [s for s in result.scores if s.language in languages]})


def tables(args, kept, unseen, configs, reference, chosen, dense, runtime, results, speeds) -> list[str]:
    ordered = kept + unseen
    names = [f"{lang}{' (unseen)' if lang in unseen else ''}" for lang in ordered]
    lines = ["## Chosen at each target", "",
             ("The configuration of each recipe closest to the target without passing it. Mean change of bits per byte "
             "from the dense model in torch over the kept and over the unseen languages (95% interval; n.r.: it contains "
             "0). Tokens/s: llama.cpp at batch 1 on the CPU, prompt of "
             f"{args.speed_seq_len} tokens at once and {args.new_tokens} generated one at a time, medians of {args.runs} "
             "timed runs after one warm-up; the sparse copy runs in torch and is not timed."), ""]
    rows = []
    for target in args.targets:
        for recipe, title in RECIPES.items():
            config = chosen[(target, recipe)]
            if config is None:
                rows.append([f"{target / 1e6:g}", title, "none fits", "", "", "", "", ""])
                continue
            means = [mean_cell(compare(_subset(dense, group), _subset(results[config.name], group))) if group else ""
                     for group in (kept, unseen)]
            speed = speeds.get(config.path.name)
            rows.append([f"{target / 1e6:g}", title, config.label, megabytes(config.bytes), *means,
                         f"{speed['prompt_tokens_per_s']:.0f}" if speed else "", f"{speed['generate_tokens_per_s']:.1f}" if speed else ""])
    lines += table(["target MB", "recipe", "configuration", "MB", "kept languages", "unseen languages", "prompt tokens/s",
                    "generation tokens/s"], rows)
    f32 = speeds[reference.path.name]
    lines += ["", (f"The dense model's f32 GGUF ({megabytes(reference.bytes)} MB): prompt {f32['prompt_tokens_per_s']:.0f} "
                   f"tokens/s, generation {f32['generate_tokens_per_s']:.1f} tokens/s."), ""]

    for target in args.targets:
        picked = [(recipe, chosen[(target, recipe)]) for recipe in RECIPES]
        lines += [f"## Per language at {target / 1e6:g} MB", "",
                  ("Change of bits per byte from the dense model in torch (95% paired interval; n.r.: it contains 0; "
                   "unpaired: resampled apart). The configuration under each recipe's name."), ""]
        header = ["language", "dense bits/byte"] + [f"{RECIPES[recipe]}: {config.label if config else 'none fits'}"
                                                   for recipe, config in picked]
        comparisons = {recipe: compare(dense, results[config.name]) for recipe, config in picked if config is not None}
        rows = []
        for name, lang in zip(names, ordered):
            row = [name, f"{dense.value(lang, 'bits_per_byte'):.4f}"]
            for recipe, config in picked:
                row.append(language_cell(comparisons[recipe], lang, paired(dense, results[config.name], lang))
                           if config is not None else "none fits")
            rows.append(row)
        lines += table(header, rows) + [""]

    lines += ["## The runtime: the dense model's f32 GGUF in llama.cpp against torch", "",
              "The part of every GGUF row's change that is llama.cpp's own arithmetic.", ""]
    versus = compare(dense, runtime)
    lines += table(["language", "f32 in llama.cpp"], [[name, language_cell(versus, lang, paired(dense, runtime, lang))]
                                                       for name, lang in zip(names, ordered)])
    lines += ["", "## Every configuration built", "",
              ("MB of 1e6 bytes as shipped (see the script's docstring). Fallback: tensors llama.cpp stored in another "
               "type than the one asked for, because their rows are not a multiple of its block (256 columns for the "
               "k-quants). Chosen: the targets it was picked for."), ""]
    picked_for = {}
    for (target, _), config in chosen.items():
        if config is not None:
            picked_for.setdefault(config.name, []).append(f"{target / 1e6:g}")
    rows = [[RECIPES[c.recipe], c.label, megabytes(c.bytes), str(len(c.made["fallbacks"])) if c.gguf else "",
             ", ".join(picked_for.get(c.name, []))] for c in configs]
    rows.append(["reference", reference.label, megabytes(reference.bytes), "", ""])
    lines += table(["recipe", "configuration", "MB", "tensors in a fallback type", "chosen"], rows)
    sparse_record = next(c for c in configs if c.recipe == "sparse").made
    accounted = sparse_record["accounted"]
    lines += ["", (f"The sparse copy: {megabytes(sparse_record['folder_bytes'])} MB in all, of which sparse.safetensors "
              f"{megabytes(sparse_record['weights_bytes'])} MB; its tensors as accounted: bitmasks "
              f"{megabytes(accounted['masks'])} MB + float16 non-zero values {megabytes(accounted['values'])} MB + "
              f"whole float16 tensors {megabytes(accounted['dense'])} MB = {megabytes(accounted['total'])} MB.")]
    return lines


# ----- the tiny model ------------------------------------------------------------------------


def tiny_model(folder: Path, languages: Sequence[str]) -> str:
    """A tiny random Llama model over gemma3-270m's tokenizer trimmed to the Bible's whole text in `languages`."""
    from gguf_languages import tiny_model as random_model

    raw = random_model(folder.parent / f"{folder.name}-raw")
    trim_to_folder(raw, TrimConfig(corpus="bible", languages=list(languages), split="all"), folder)
    shutil.rmtree(raw)
    return str(folder)


def parse_list(text: str, kind: Callable = str) -> list:
    return [kind(item) for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default=",".join(DEFAULT_CALIBRATION_LANGUAGES),
                        help="kept languages: trimming, calibration and the importance matrix read them; all are scored")
    parser.add_argument("--unseen", default=",".join(UNSEEN), help="scored languages nothing reads")
    parser.add_argument("--targets", default="250,150,100,60", help="target sizes in MB (1e6 bytes)")
    parser.add_argument("--quants", default=",".join(QUANTS))
    parser.add_argument("--ffn", default="0.1,0.2,0.3", help="structured shares of the block parameters, moved to aligned widths")
    parser.add_argument("--imatrix", choices=("balanced", "none"), default="balanced")
    parser.add_argument("--verses", type=int, default=120, help="held-out verses per language")
    parser.add_argument("--samples", type=int, default=8, help="calibration windows per kept language")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of bench-speed")
    parser.add_argument("--speed-seq-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache", type=Path, help="default benchmark-results/equal_bytes (a temporary folder with --tiny)")
    parser.add_argument("--out", type=Path, help="folder for equal_bytes.md (default: docs/results)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model, three languages, in a minute or two")
    args = parser.parse_args(argv)
    require_llama_cpp("This benchmark quantizes GGUF files and scores them in llama.cpp")  # before any model is built
    args.quants, args.ffn = parse_list(args.quants), parse_list(args.ffn, float)
    args.targets = [round(mb * 1e6) for mb in parse_list(args.targets, float)]
    kept, unseen = parse_list(args.langs), parse_list(args.unseen)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.tiny:
            kept, unseen = list(TINY_KEPT), list(TINY_UNSEEN)
            model = tiny_model(Path(scratch) / "tiny", kept + unseen)
            args.quants, args.ffn, args.targets = ["Q8_0", "Q4_K_M"], [0.3], [7_000_000, 3_000_000, 500_000]
            args.verses, args.samples, args.runs, args.speed_seq_len, args.new_tokens = 40, 2, 1, 16, 4
        cache = args.cache or (Path(scratch) / "cache" if args.tiny else Path("benchmark-results/equal_bytes"))
        calibration = CalibrationSpec(corpus="bible", languages=kept, samples=args.samples, seq_len=32 if args.tiny else 256)
        try:
            body = measure(args, model, kept, unseen, calibration, cache)
        except BabelpruneError as error:
            sys.exit(str(error))
        intro = (f"{'a tiny random Llama model (gemma3-270m tokenizer, trimmed)' if args.tiny else model}; kept (trimming, "
                 f"calibration, importance matrix): {', '.join(kept)} ({calibration.samples} Bible windows of "
                 f"{calibration.seq_len} tokens each); unseen: {', '.join(unseen) or 'none'}; scored on the first "
                 f"{args.verses} verses of the Bible's evaluation split per language, in blocks of consecutive verses read "
                 f"whole, one per window of {SEQ_LEN} tokens. Importance matrix: {args.imatrix} (Q8_0 reads none).")
        return write_result_table("equal_bytes", "Equal bytes: quantization, trimming and pruning, language by language",
                                  intro + "\n\n" + body, directory=args.out)


if __name__ == "__main__":
    main()
