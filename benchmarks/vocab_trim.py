"""Vocabulary trimming on gemma3-270m: size, bits per byte on identical held-out text, and speed.

    python benchmarks/vocab_trim.py [--langs en,es,fr,zh,ru,ar,hi,sw] [--others de,ja,ko,uk] [--verses 60]

The model is trimmed to the kept languages' Bible calibration text (the
`<unusedN>` placeholders dropped, as `trim-vocab --drop-reserved` does).
Both models then read the same bytes: the first `--verses` evaluation-split
verses of every language, written to a JSONL corpus and scored whole, so the
paired intervals of `compare` apply even though the two tokenizers cut the
text differently. Languages in `--others` were not kept: they show what
trimming costs the rest. Speed is `bench-speed`'s measurement of both
models. Writes docs/results/vocab_trim.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import write_result_table  # noqa: E402
from babelprune.api import DEFAULT_CALIBRATION_LANGUAGES, evaluate, get_corpus, load_model, trim_vocabulary  # noqa: E402
from babelprune.evaluate.speed import measure_speeds, speed_markdown  # noqa: E402
from babelprune.models.inspect import count_parameters  # noqa: E402
from babelprune.report.compare import compare  # noqa: E402
from babelprune.report.tables import comparison_markdown  # noqa: E402

BENCHMARK = {"minutes": 15}


def held_out_corpus(languages: list[str], verses: int, folder: Path) -> Path:
    """The first `verses` evaluation-split verses of each language as a JSONL corpus (scored whole by both models)."""
    bible = get_corpus("bible")
    path = folder / "heldout.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for lang in languages:
            for segment in bible.segments(lang, "eval")[:verses]:
                handle.write(json.dumps({"lang": lang, "text": segment.text}, ensure_ascii=False) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default=",".join(DEFAULT_CALIBRATION_LANGUAGES), help="languages kept")
    parser.add_argument("--others", default="de,ja,ko,uk", help="languages not kept, to show their cost")
    parser.add_argument("--verses", type=int, default=60, help="held-out verses per language")
    args = parser.parse_args()
    kept, others = args.langs.split(","), args.others.split(",")

    dense = load_model(args.model)
    trimmed = load_model(args.model)
    trim_vocabulary(trimmed, "bible", kept, keep_reserved=False)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = get_corpus(str(held_out_corpus(kept + others, args.verses, Path(tmp))))
        budget = 10**9  # every token of the held-out text
        before = evaluate(dense, corpus, kept + others, "all", max_tokens=budget, progress=False)
        after = evaluate(trimmed, corpus, kept + others, "all", max_tokens=budget, progress=False)
    comparison = compare(before, after, label="trimmed")
    trimmed.spec = f"{args.model} trimmed"
    speeds = measure_speeds([dense, trimmed], runs=5, warmup=2)

    vocab_before, vocab_after = dense.model.get_input_embeddings().num_embeddings, trimmed.model.get_input_embeddings().num_embeddings
    params_before, params_after = count_parameters(dense.model), count_parameters(trimmed.model)
    body = "\n".join([
        f"{args.model} trimmed to {', '.join(kept)} (Bible calibration split, placeholders dropped); "
        f"{', '.join(others)} not kept. Bits per byte on the first {args.verses} held-out verses of each language, "
        "read whole by both models; intervals are paired bootstrap intervals over windows when the windows match, "
        "else each side is resampled on its own.",
        "",
        "| | tokens | parameters | ratio |",
        "|---|---:|---:|---:|",
        f"| dense | {vocab_before:,} | {params_before:,} | 1.00x |",
        f"| trimmed | {vocab_after:,} | {params_after:,} | {params_after / params_before:.3f}x |",
        "",
        "## Bits per byte, dense and trimmed",
        "",
        comparison_markdown([comparison]),
        "## Speed",
        "",
        speed_markdown(speeds),
    ])
    write_result_table("vocab_trim", "Vocabulary trimming", body)


if __name__ == "__main__":
    main()
