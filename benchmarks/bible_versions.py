"""How close to memorised the dense model is on each Bible version of the languages that have several.

    python benchmarks/bible_versions.py [--tokens 640] [--seq-len 128]

A version the model has nearly memorised (gemma3-270m on the 1611 King
James text) has a very low dense perplexity, so any pruning looks like a
huge relative loss there. This table gives, for every version of every
language with more than one, the dense perplexity and bits per byte on the
evaluation split; prune_quality.py evaluates on the versions named in its
EVAL_VERSIONS, chosen from this table. Writes docs/results/bible_versions.md.
"""

from __future__ import annotations

import argparse
from collections import Counter

from _common import write_result_table
from babelprune.api import evaluate, load_model
from babelprune.data.bible import DEFAULT_VERSIONS, VERSIONS, BibleCorpus

BENCHMARK = {"minutes": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--tokens", type=int, default=640)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    loaded = load_model(args.model)
    counts = Counter(v.language for v in VERSIONS.values())
    rows = ["| language | version | code | default | dense perplexity | dense bits per byte |", "|---|---|---|---|---|---|"]
    for version in sorted((v for v in VERSIONS.values() if counts[v.language] > 1), key=lambda v: (v.language, v.code)):
        corpus = BibleCorpus({version.language: version.code})
        score = evaluate(loaded, corpus, [version.language], "eval", args.seq_len, args.tokens, progress=False).scores[0]
        default = "yes" if DEFAULT_VERSIONS[version.language] == version.code else ""
        rows.append(f"| {version.language} | {version.name} | {version.code} | {default} | {score.perplexity:.1f} | "
                    f"{score.bits_per_byte:.3f} |")
        print(rows[-1], flush=True)
    setup = (f"{args.model}, dense; the Bible's evaluation split of each version, about {args.tokens} predicted tokens in "
             f"windows of {args.seq_len}. A low perplexity next to the language's other versions marks text close to memorised.")
    write_result_table("bible_versions", "Bible versions: how close to memorised", setup + "\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
