"""Whether `babelprune shrink` meets its target: smaller and faster than plain quantization, every language within budget.

    python benchmarks/shrink_target.py [--model gemma3-270m] [--langs en,es,fr,zh,ru,ar,hi,sw] [--budget 2%]
        [--trims none,1,2] [--widths none] [--quants none,Q8_0,Q4_K_M] [--segments 40] [--seq-len 128]
        [--cache benchmark-results/shrink_target]
    python benchmarks/shrink_target.py --tiny [--out FOLDER]

The target: on gemma3-270m, the 8 default calibration languages and a budget
of 2%, the model `shrink` chooses is at least 2x smaller in bytes and at
least 2x faster in llama.cpp generation at batch 1 than the best plain
llama.cpp quantization of the full model that meets the same budget, and
every language's confirmed change on the test half is within the budget.

`shrink_to_folder` searches every combination of --trims, --widths and
--quants on the dev half of the Bible's evaluation split and confirms the
chosen candidate on the test half. The plain quantizations are its
candidates with no trim and no structured width: the best one is the passing
one with the fewest bytes. That file is exported again by llama.cpp's own
quantizer (`export --quant`, no importance matrix, as shrink makes it) and
timed with the chosen model's GGUF (its own f32 export when the chosen
candidate is not quantized) in one `bench-speed` call, so both are timed
alike: warm-up, then the median of --runs.

Scores live in shrink's store under --cache, so an interrupted run resumes
and a rerun scores nothing twice; the exported files are cached there keyed
on their settings and babelprune's source. Needs llama-cpp-python
(`pip install 'babelprune[llama]'`). --tiny runs every step on a tiny random
Llama model (gemma3-270m's tokenizer) in two languages with a budget of 50%,
trims none and 1, Q4_K_M alone, in a few minutes.
Writes docs/results/shrink_target.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import require_llama_cpp, cached_stage, source_fingerprint, write_result_table  # noqa: E402
from babelprune.api import DEFAULT_CALIBRATION_LANGUAGES, export_model, measure_gguf_speeds, shrink_to_folder  # noqa: E402
from babelprune.errors import BabelpruneError  # noqa: E402
from babelprune.report.html import write_shrink_page  # noqa: E402
from babelprune.shrink import NoCandidatePassed  # noqa: E402
from gguf_languages import table, tiny_model  # noqa: E402

BENCHMARK = {"minutes": 30}
FACTOR = 2.0  # "at least 2x smaller" and "at least 2x faster"
TINY_LANGUAGES = ("en", "sw")


# ----- the pure pieces ---------------------------------------------------------------------------


def best_plain(candidates: Sequence) -> object | None:
    """The passing plain quantization (a quant, no trim, no structured width) with the fewest bytes; None if none passed."""
    plain = [c for c in candidates if c.passed and c.candidate.quant and not c.candidate.trimmed and not c.candidate.structured]
    return min(plain, key=lambda c: (c.bytes, c.number)) if plain else None


def verdicts(chosen_bytes: int | None, plain_bytes: int | None, chosen_generate: float | None,
             plain_generate: float | None, test_passed: bool | None) -> list[tuple[str, str, str]]:
    """(target, measured, "met"/"missed") for the three targets; a figure that could not be measured misses its target."""
    rows = []
    if chosen_bytes and plain_bytes:
        ratio = plain_bytes / chosen_bytes
        rows.append((f"{FACTOR:g}x smaller in bytes", f"{ratio:.2f}x smaller", "met" if ratio >= FACTOR else "missed"))
    else:
        rows.append((f"{FACTOR:g}x smaller in bytes", "no comparison", "missed"))
    if chosen_generate and plain_generate:
        ratio = chosen_generate / plain_generate
        rows.append((f"{FACTOR:g}x faster generation", f"{ratio:.2f}x faster", "met" if ratio >= FACTOR else "missed"))
    else:
        rows.append((f"{FACTOR:g}x faster generation", "no comparison", "missed"))
    checked = "not checked" if test_passed is None else ("every language within" if test_passed else "a language beyond")
    rows.append(("test half within the budget", checked, "met" if test_passed else "missed"))
    return rows


def percent(value: float) -> str:
    return f"{100 * value:+.2f}%"


def worst_upper(scored) -> str:
    """The largest upper interval end over the candidate's languages ("none" when unscored or without intervals)."""
    ends = [check.interval[1] for check in scored.languages if check.interval is not None]
    return percent(max(ends)) if ends and len(ends) == len(scored.languages) else "none"


def candidate_rows(candidates: Sequence, chosen: int | None) -> list[list[str]]:
    return [[c.label + (" (chosen)" if c.number == chosen else ""), f"{c.bytes:,}", f"{c.bytes / 1e6:.1f}",
             "yes" if c.passed else "no", worst_upper(c), ", ".join(c.failed_languages) or ("error" if c.error else "")]
            for c in candidates]


# ----- measuring ---------------------------------------------------------------------------------


def exported(model: str, path: Path, quant: str | None, fields: dict) -> Path:
    """`model` exported to the GGUF `path` (f32, quantized by llama.cpp when `quant`), reused when made with `fields`."""
    def run() -> dict:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()  # made with other settings: export refuses to replace a file
        record = export_model(model, path, dtype="f32", quant=quant, imatrix="none" if quant else None)
        return {"size_bytes": record.size_bytes}

    record = path.parent / f"{path.name}.json"
    if record.exists() and not path.exists():
        record.unlink()
    cached_stage(record, fields, run, f"export {path.name}")
    return path


def measure(args, model: str, languages: list[str], cache: Path) -> str:
    out = cache / "out"
    if out.exists():
        shutil.rmtree(out)  # shrink writes a new folder; its scores stay in the store
    judged: list = []
    record, refusal = None, None
    try:
        record = shrink_to_folder(model, languages, args.budget, out, trims=args.trims, widths=args.widths,
                                  quants=args.quants, segments=args.segments, seq_len=args.seq_len,
                                  store=cache / "scores.shrink.sqlite", write_page=write_shrink_page)
    except NoCandidatePassed as error:  # still a table: every candidate, and the sentence saying why none was chosen
        judged, refusal = error.candidates, str(error)
    candidates = record.candidates if record else judged
    chosen = next((c for c in candidates if record and c.number == record.chosen), None)
    plain = best_plain(candidates)
    dense = f" ({record.dense_bytes:,} bytes)" if record else ""
    sections = ["## Every candidate (dev half)", "",
                "Worst upper end: the largest upper end of the 95% interval of a language's relative change of bits "
                f"per byte over the dense model{dense}.", "",
                *table(["candidate", "bytes", "MB", "passed", "worst upper end", "failed languages"],
                       candidate_rows(candidates, record.chosen if record else None)), ""]
    if refusal:
        sections += [f"No candidate passed: {refusal}", ""]
    else:
        sections += [f"## The chosen candidate on the test half: {chosen.label}", "",
                     *table(["language", "relative change", "95% interval", "within budget"],
                            [[check.language, percent(check.relative),
                              f"[{percent(check.interval[0])}, {percent(check.interval[1])}]" if check.interval else "none",
                              "yes" if check.passed else "no"] for check in record.test]), ""]
    speeds: dict[str, dict] = {}
    if plain is None:
        sections += ["No plain quantization of the full model meets the budget: there is nothing to compare with.", ""]
    elif chosen is not None:
        code = source_fingerprint()
        plain_file = exported(model, cache / "files" / f"plain-{plain.candidate.quant}.gguf", plain.candidate.quant,
                              {"model": model, "quant": plain.candidate.quant, "imatrix": "none", "code": code})
        chosen_file, note = out / "model.gguf", ""
        if not chosen.candidate.quant:  # an HF folder: timed as its own f32 GGUF
            chosen_file = exported(str(out / "model"), cache / "files" / "chosen-f32.gguf", None,
                                   {"model": model, "chosen": chosen.candidate.model_dump(mode="json"), "code": code})
            note = " The chosen candidate is not quantized: it is timed as its own f32 GGUF export."
        reports = measure_gguf_speeds([str(chosen_file), str(plain_file)], seq_len=args.speed_seq_len, runs=args.runs,
                                      warmup=2, threads=args.threads, new_tokens=args.new_tokens)
        speeds = {"chosen": reports[0].model_dump(), "plain": reports[1].model_dump()}
        rows = [[name, label, f"{c.bytes:,}", f"{c.bytes / 1e6:.1f}", f"{speeds[name]['prompt_tokens_per_s']:.0f}",
                 f"{speeds[name]['generate_tokens_per_s']:.1f}"]
                for name, label, c in (("chosen", chosen.label, chosen), ("plain", plain.label, plain))]
        ratio = {key: speeds["chosen"][key] / speeds["plain"][key] for key in ("prompt_tokens_per_s", "generate_tokens_per_s")}
        rows.append(["chosen / plain", "", f"{chosen.bytes / plain.bytes:.3f}", "",
                     f"{ratio['prompt_tokens_per_s']:.2f}", f"{ratio['generate_tokens_per_s']:.2f}"])
        sections += ["## Bytes and speed in llama.cpp (batch 1, CPU)", "",
                     f"Against the best plain quantization of the full model within the budget. Prompt: "
                     f"{args.speed_seq_len} tokens decoded at once; generation: {args.new_tokens} tokens one at a time; "
                     f"medians of {args.runs} timed runs after two warm-ups, both files in one call.{note}", "",
                     *table(["model", "candidate", "bytes", "MB", "prompt tokens/s", "generation tokens/s"], rows), ""]
    found = verdicts(chosen.bytes if chosen else None, plain.bytes if plain else None,
                     speeds.get("chosen", {}).get("generate_tokens_per_s"), speeds.get("plain", {}).get("generate_tokens_per_s"),
                     record.test_passed if record else None)
    sections += ["## The target", "", *table(["target", "measured", "verdict"], [list(row) for row in found])]
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default=",".join(DEFAULT_CALIBRATION_LANGUAGES))
    parser.add_argument("--budget", default="2%")
    parser.add_argument("--trims", default="none,1,2")
    parser.add_argument("--widths", default="none")
    parser.add_argument("--quants", default="none,Q8_0,Q4_K_M")
    parser.add_argument("--segments", type=int, default=40, help="segments per language and half")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of bench-speed")
    parser.add_argument("--speed-seq-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache", type=Path, help="default benchmark-results/shrink_target (a temporary folder with --tiny)")
    parser.add_argument("--out", type=Path, help="folder for shrink_target.md (default: docs/results)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model, two languages, budget 50%%, in a few minutes")
    args = parser.parse_args(argv)
    require_llama_cpp("This benchmark quantizes GGUF files and times them in llama.cpp")  # before any model is built
    args.trims, args.widths, args.quants = ([v for v in text.split(",") if v] for text in (args.trims, args.widths, args.quants))
    languages = [lang for lang in args.langs.split(",") if lang]
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.tiny:
            model, languages = tiny_model(Path(scratch) / "tiny"), list(TINY_LANGUAGES)
            args.budget, args.trims, args.quants, args.segments, args.seq_len = "50%", ["none", "1"], ["Q4_K_M"], 6, 32
            args.runs, args.speed_seq_len, args.new_tokens = 5, 16, 8
        cache = args.cache or (Path(scratch) / "cache" if args.tiny else Path("benchmark-results/shrink_target"))
        try:
            body = measure(args, model, languages, cache)
        except BabelpruneError as error:
            sys.exit(str(error))
        intro = (f"{'a tiny random Llama model (gemma3-270m tokenizer)' if args.tiny else model}; languages: "
                 f"{', '.join(languages)}; budget {args.budget}; trims {', '.join(args.trims)}; widths "
                 f"{', '.join(args.widths)}; quantizations {', '.join(args.quants)}; {args.segments} Bible segments per "
                 f"language and half, windows of {args.seq_len} tokens.")
        return write_result_table("shrink_target", "Shrink's target: smaller and faster than plain quantization",
                                  intro + "\n\n" + body, directory=args.out)


if __name__ == "__main__":
    main()
