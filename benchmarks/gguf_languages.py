"""What llama.cpp's quantization costs each language, with and without a language-balanced importance matrix.

    python benchmarks/gguf_languages.py [--model gemma3-270m] [--langs en,es,...] [--unseen ko,tr]
        [--quants Q8_0,Q4_K_M,Q3_K_M] [--max-tokens 2048] [--cache benchmark-results/gguf_languages]
    python benchmarks/gguf_languages.py --tiny [--out FOLDER]

The model is exported as an f32 GGUF file and quantized by llama.cpp's own
quantizer (`babelprune export --quant`) to each of `--quants`: Q8_0 reads no
importance matrix; every other type three times, with no matrix
(`--imatrix none`), with babelprune's language-balanced matrix (`balanced`:
the mean over the calibration languages of each language's mean squared
input per column) and with a matrix from English text alone (`en`). Each
file is scored in llama.cpp (`eval --runtime llama.cpp`) on the Bible's
evaluation split, on the same windows and token ids as the torch evaluation
of the source model, in the calibration languages (`--langs`) and in
languages the matrices never read (`--unseen`).

Tables:

* agreement: the f32 file in llama.cpp against torch, per language (how far
  the runtime itself moves the scores);
* cost: each file's change of bits per byte from the torch model, per
  language, with its 95% paired interval; "n.r." (not resolved) where the
  interval contains 0;
* the matrices: per language, the change of bits per byte from the file
  without a matrix to the file with the balanced one, and from the English
  one to the balanced one, paired on the same windows; a negative change
  means the balanced matrix is better;
* size and speed: bytes on disk, and llama.cpp's prompt and generation
  tokens per second at batch 1 (`bench-speed`; warm-up, median of --runs).

Every exported file, result and timing is cached under --cache keyed on its
settings and babelprune's source, so an interrupted run resumes. Needs
llama-cpp-python (`pip install 'babelprune[llama]'`). --tiny runs every step
on a tiny random Llama model with the Bible's text in two languages, in
seconds. Writes docs/results/gguf_languages.md for gemma3-270m, and
docs/results/gguf_languages-<model>.md for another --model (gemma3-270m's
weights were dequantized from a Q4_K_M file, so re-quantizing them to a
4-bit k-quant may land back on nearly the same grid: another model's table,
e.g. smollm2-135m's, shows what the types and matrices cost on weights that
never were quantized).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import require_llama_cpp, cached_stage, source_fingerprint, write_result_table  # noqa: E402
from babelprune.api import (  # noqa: E402
    DEFAULT_CALIBRATION_LANGUAGES,
    CalibrationSpec,
    evaluate_model,
    export_model,
    measure_gguf_speeds,
)
from babelprune.errors import BabelpruneError  # noqa: E402
from babelprune.records import EvalResult  # noqa: E402
from babelprune.report.compare import compare  # noqa: E402

BENCHMARK = {"minutes": 40}
DEFAULT_MODEL = "gemma3-270m"
UNSEEN = ("ko", "tr")  # Bible languages outside the default calibration set: no matrix read their text
MATRICES = ("none", "balanced", "en")
TINY_LANGUAGES = ("en", "sw")


def variants(quants: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(name, quant, imatrix) of every file: f32, then each quant type with each matrix it can read."""
    rows: list[tuple[str, str | None, str | None]] = [("f32", None, None)]
    for quant in quants:
        if quant == "Q8_0":  # llama.cpp's Q8_0 rounds every value alike: it reads no matrix
            rows.append((quant, quant, "none"))
        else:
            rows += [(f"{quant} {matrix}", quant, matrix) for matrix in MATRICES]
    return rows


def cell(comparison, language: str) -> str:
    """"+0.52% [+0.10, +1.06]" for one language of a comparison; "n.r." when its interval contains 0."""
    change = next(c for c in comparison.changes if c.language == language)
    value = comparison.degradation(change)
    interval = comparison.degradation_interval(change)
    if interval is None:
        return f"{100 * value:+.2f}%"
    low, high = interval
    verdict = " n.r." if low <= 0 <= high else ""
    return f"{100 * value:+.2f}% [{100 * low:+.2f}, {100 * high:+.2f}]{verdict}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def measure(args, model: str, languages: list[str], calibration: CalibrationSpec, cache: Path) -> str:
    code = source_fingerprint()
    evaluation = {"corpus": "bible", "languages": languages, "split": "eval", "seq_len": args.seq_len,
                  "max_tokens": args.max_tokens}

    def scored(spec: str, runtime: str, label: str, decided_by: dict) -> EvalResult:
        """The evaluation of `spec` in `runtime`, reused when made from the same file, settings and code."""
        fields = {"model": decided_by, "runtime": runtime, **evaluation, "code": code}
        stage = cached_stage(cache / "results" / f"{label}.json", fields, lambda: {"eval": evaluate_model(
            spec, "bible", languages, "eval", args.seq_len, args.max_tokens, runtime=runtime).model_dump(mode="json")},
            f"eval {label}")
        return EvalResult.model_validate(stage["eval"])

    files: dict[str, tuple[Path, dict]] = {}
    for name, quant, matrix in variants(args.quants):
        stem = name.replace(" ", "-")
        path = cache / "files" / f"{stem}.gguf"
        fields = {"model": model, "quant": quant, "imatrix": matrix, "calibration": calibration.model_dump(mode="json"),
                  "code": code}
        cached_stage(cache / "files" / f"{stem}.json", fields, lambda: _export(model, path, quant, matrix, calibration),
                     f"export {name}")
        files[name] = (path, fields)

    torch_result = scored(model, "torch", "torch", {"model": model, "code": code})
    results = {name: scored(str(path), "llama.cpp", name.replace(" ", "-"), fields) for name, (path, fields) in files.items()}
    paths = {name: path for name, (path, _) in files.items()}
    speed_fields = {"files": [fields for _, fields in files.values()], "runs": args.runs, "seq_len": args.speed_seq_len,
                    "new_tokens": args.new_tokens, "threads": args.threads}
    speeds = cached_stage(cache / "speed.json", speed_fields, lambda: {"reports": [
        report.model_dump(mode="json") for report in measure_gguf_speeds(
            [str(path) for path in paths.values()], seq_len=args.speed_seq_len, runs=args.runs, warmup=1,
            threads=args.threads, new_tokens=args.new_tokens)]}, "speed")["reports"]

    seen = [lang for lang in languages if lang in calibration.languages]
    unseen = [lang for lang in languages if lang not in calibration.languages]
    ordered = seen + unseen
    names = [f"{lang}{'' if lang in seen else ' (unseen)'}" for lang in ordered]
    sections = [
        "## The runtime: the f32 file in llama.cpp against the torch model", "",
        "Change of bits per byte from torch to llama.cpp on the same windows (95% paired interval).", "",
        *table(["language", "torch bits/byte", "f32 in llama.cpp"],
               [[name, f"{torch_result.value(lang, 'bits_per_byte'):.4f}", cell(compare(torch_result, results["f32"]), lang)]
                for name, lang in zip(names, ordered)]),
        "",
        "## What each file costs, against the torch model", "",
        "Change of bits per byte from the torch model (95% paired interval; n.r.: the interval contains 0).", "",
    ]
    quantized = [name for name in files if name != "f32"]
    comparisons = {name: compare(torch_result, results[name]) for name in quantized}
    sections += table(["language", *quantized],
                      [[name, *(cell(comparisons[q], lang) for q in quantized)] for name, lang in zip(names, ordered)])
    sections += ["", "## The importance matrices, file against file", "",
                 "Change of bits per byte from the first file to the second, paired on the same windows; negative: "
                 "the balanced matrix does better. n.r.: the interval contains 0.", ""]
    pairs = [(f"{q} none", f"{q} balanced") for q in args.quants if q != "Q8_0"]
    pairs += [(f"{q} en", f"{q} balanced") for q in args.quants if q != "Q8_0"]
    if pairs:
        versus = {pair: compare(results[pair[0]], results[pair[1]]) for pair in pairs}
        sections += table(["language", *(f"{a} → {b}" for a, b in pairs)],
                          [[name, *(cell(versus[pair], lang) for pair in pairs)] for name, lang in zip(names, ordered)])
        sections += ["", "Mean over the languages: " + "; ".join(
            f"{a} → {b} {_mean_cell(versus[(a, b)])}" for a, b in pairs) + "."]
    sections += ["", "## Size and speed in llama.cpp (batch 1, CPU)", "",
                 f"Prompt: {args.speed_seq_len} tokens decoded at once; generation: {args.new_tokens} tokens one at a "
                 f"time; medians of {args.runs} timed runs after one warm-up.", ""]
    by_file = {Path(report["spec"]).name: report for report in speeds}
    sections += table(["file", "type", "MB on disk", "prompt tokens/s", "generation tokens/s"],
                      [[name, by_file[path.name]["file_type"], f"{by_file[path.name]['bytes_on_disk'] / 1e6:.1f}",
                        f"{by_file[path.name]['prompt_tokens_per_s']:.0f}",
                        f"{by_file[path.name]['generate_tokens_per_s']:.1f}"] for name, path in paths.items()])
    return "\n".join(sections)


def _mean_cell(comparison) -> str:
    interval = comparison.mean_interval
    value = comparison.mean_degradation
    if interval is None:
        return f"{100 * value:+.2f}%"
    low, high = interval
    return f"{100 * value:+.2f}% [{100 * low:+.2f}, {100 * high:+.2f}]" + (" n.r." if low <= 0 <= high else "")


def _export(model: str, path: Path, quant: str | None, matrix: str | None, calibration: CalibrationSpec) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()  # made with other settings: export refuses to replace a file
    record = export_model(model, path, dtype="f32", quant=quant, imatrix=matrix if quant else None,
                          calibration=calibration if quant and matrix != "none" else None)
    return {"size_bytes": record.size_bytes, "quant": record.quant, "imatrix": record.imatrix,
            "imatrix_languages": list(record.imatrix_languages)}


def tiny_model(folder: Path) -> str:
    """A tiny random Llama model with gemma3-270m's tokenizer, so that Bible text tokenizes as the real one does."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from babelprune.formats.loading import load_model_tokenizer

    tokenizer = load_model_tokenizer("gemma3-270m")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--langs", default=",".join(DEFAULT_CALIBRATION_LANGUAGES),
                        help="calibration languages: the balanced matrix reads them; all are scored")
    parser.add_argument("--unseen", default=",".join(UNSEEN), help="scored languages no matrix reads")
    parser.add_argument("--quants", default="Q8_0,Q4_K_M,Q3_K_M")
    parser.add_argument("--max-tokens", type=int, default=2048, help="scored tokens per language")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of bench-speed")
    parser.add_argument("--speed-seq-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache", type=Path, help="default benchmark-results/gguf_languages (a temporary folder with --tiny)")
    parser.add_argument("--out", type=Path, help="folder for gguf_languages.md (default: docs/results)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model, two languages, in seconds")
    args = parser.parse_args(argv)
    require_llama_cpp("This benchmark quantizes and scores GGUF files in llama.cpp")  # before any model is built
    args.quants = [q for q in args.quants.split(",") if q]
    calibrated = [lang for lang in args.langs.split(",") if lang]
    unseen = [lang for lang in args.unseen.split(",") if lang]
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.tiny:
            model = tiny_model(Path(scratch) / "tiny")
            calibrated, unseen, args.quants = list(TINY_LANGUAGES[:1]), list(TINY_LANGUAGES[1:]), ["Q8_0", "Q4_K_M"]
            args.max_tokens, args.seq_len, args.runs, args.speed_seq_len, args.new_tokens = 64, 32, 1, 16, 4
        cache = args.cache or (Path(scratch) / "cache" if args.tiny else Path("benchmark-results/gguf_languages"))
        calibration = CalibrationSpec(corpus="bible", languages=calibrated, samples=2 if args.tiny else 8,
                                      seq_len=32 if args.tiny else 256)
        try:
            body = measure(args, model, calibrated + unseen, calibration, cache)
        except BabelpruneError as error:
            sys.exit(str(error))
        intro = (f"{'a tiny random Llama model (gemma3-270m tokenizer)' if args.tiny else model}; "
                 f"calibration (and the balanced matrix): {', '.join(calibrated)} "
                 f"({calibration.samples} Bible windows of {calibration.seq_len} tokens each); unseen: "
                 f"{', '.join(unseen) or 'none'}; scored on the Bible's evaluation split, {args.max_tokens} tokens per "
                 f"language in windows of {args.seq_len}. The `en` matrix reads the English calibration windows alone.")
        return write_result_table(table_name(args.model, args.tiny), "Quantized GGUF in llama.cpp, language by language",
                                  intro + "\n\n" + body, directory=args.out)



def table_name(model: str, tiny: bool = False) -> str:
    """gguf_languages for the default model (and --tiny); gguf_languages-<model> for another, so neither replaces the other."""
    if tiny or model == DEFAULT_MODEL:
        return "gguf_languages"
    slug = re.sub(r"[^a-z0-9]+", "-", Path(model).name.lower()).strip("-") or "model"
    return f"gguf_languages-{slug}"


if __name__ == "__main__":
    main()
