"""Steps that should feel instant: opening the cached gemma3-270m folder, reading one Bible version cold.

    python benchmarks/cached_startup.py [--lang hi] [--repeats 5]

Timed here rather than asserted in the tests, where a shared machine makes
wall-clock bounds flaky. Each step gets one untimed warm-up, then the median
of --repeats runs:

* cached model: `ensure_gemma3_270m` on an already converted cache (the
  first call converts it if needed, untimed). It only checks the cache entry.
* Bible version: `BibleCorpus.texts(lang)` with the in-process version cache
  cleared before every run, so each run queries and cleans the whole version
  (the database file itself stays in the OS page cache after the warm-up).

Writes docs/results/cached_startup.md.
"""

from __future__ import annotations

import argparse

from _common import MIN_REPEATS, repeats_arg, timed_median, write_result_table
from babelprune.data import bible
from babelprune.data.bible import DEFAULT_VERSIONS, BibleCorpus
from babelprune.models.gemma3_gguf import ensure_gemma3_270m

BENCHMARK = {"minutes": 1}


def time_cached_model(repeats: int) -> float:
    ensure_gemma3_270m(progress=False)  # converts once if the cache is empty; not timed
    return timed_median(lambda: ensure_gemma3_270m(progress=False), repeats)


def time_cold_bible_read(lang: str, repeats: int) -> tuple[float, int]:
    """(median seconds, number of verses) of reading one version with the version cache cleared."""
    corpus = BibleCorpus({lang: DEFAULT_VERSIONS[lang]})

    def read_cold() -> list[str]:
        bible._read_version.cache_clear()
        return corpus.texts(lang)

    return timed_median(read_cold, repeats), len(read_cold())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="hi", help="Bible language to read (Hindi has the heaviest cleaning)")
    parser.add_argument("--repeats", type=repeats_arg, default=5, help=f"timed runs per step (at least {MIN_REPEATS})")
    args = parser.parse_args()

    model_seconds = time_cached_model(args.repeats)
    bible_seconds, verses = time_cold_bible_read(args.lang, args.repeats)
    rows = [
        ("gemma3-270m from the cache (`ensure_gemma3_270m`)", model_seconds),
        (f"Bible `{args.lang}` read cold, {verses} verses (`BibleCorpus.texts`)", bible_seconds),
    ]
    body = "\n".join(
        [
            f"Median of {args.repeats} runs after one warm-up.",
            "",
            "| step | median time (ms) |",
            "|---|---:|",
            *(f"| {step} | {seconds * 1000:.1f} |" for step, seconds in rows),
        ]
    )
    print(body)
    write_result_table("cached_startup", "Cached model and corpus start-up", body)


if __name__ == "__main__":
    main()
