"""Dense model, per language: bits per byte and perplexity on the Bible and on the demo's UDHR languages.

    python benchmarks/dense_quality.py [--model gemma3-270m] [--tokens 1024]

The same evaluation as `babelprune eval --model gemma3-270m --corpus bible
--max-tokens 1024`: held-out Bible text (evaluation split), about --tokens
predicted tokens per language in windows of 256 tokens, grouped by resource
level. The UDHR part uses the demo's extra languages (those the fetched
corpus holds) and is skipped, with a note in the table, when the UDHR has not
been fetched (`babelprune data fetch udhr`). Writes
docs/results/dense_quality.md.
"""

from __future__ import annotations

import argparse

from _common import write_result_table
from babelprune.api import evaluate, get_corpus, load_model
from babelprune.data.udhr import udhr_available
from babelprune.demo import DEMO_UDHR_LANGUAGES
from babelprune.report.tables import markdown_table

BENCHMARK = {"minutes": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--tokens", type=int, default=1024, help="predicted tokens per language")
    parser.add_argument("--seq-len", type=int, default=128, help="window length: 1024 tokens in windows of 128 give 8 windows, enough for an interval")
    args = parser.parse_args()

    loaded = load_model(args.model)
    sections = [
        f"{args.model}, dense. About {args.tokens} predicted tokens per language in windows of {args.seq_len} tokens, "
        "grouped by resource level and sorted by bits per byte. Bits per byte are lower for scripts that take "
        "several UTF-8 bytes per character, so compare a language with itself across models first."
    ]
    bible = evaluate(loaded, get_corpus("bible"), None, "eval", args.seq_len, args.tokens, progress=False)
    sections.append(markdown_table(bible))
    if udhr_available():
        udhr = get_corpus("udhr")
        langs = [lang for lang in DEMO_UDHR_LANGUAGES if lang in udhr.languages()]
        sections.append(markdown_table(evaluate(loaded, udhr, langs, "all", args.seq_len, args.tokens, progress=False)))
    else:
        sections.append("The UDHR part was skipped: the corpus is not in the cache (`babelprune data fetch udhr`).")
    print("\n\n".join(sections))
    write_result_table("dense_quality", f"Dense {args.model}, per language", "\n\n".join(sections))


if __name__ == "__main__":
    main()
