"""The tables and target checks of small_and_fast.py (kept apart so that the script reads as its steps)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoTokenizer

from babelprune.api import evaluate, get_corpus, load_model, save_trimmed, trim_vocabulary
from babelprune.evaluate.sizes import folder_bytes, model_bytes
from babelprune.evaluate.speed import SpeedReport
from babelprune.models.inspect import count_parameters
from babelprune.formats.loading import resolve_spec
from babelprune.prune.vocab import choose_kept_ids, count_token_ids
from babelprune.records.eval import resampled_paired
from babelprune.report.compare import Comparison, compare
from babelprune.report.intervals import draws, percentile_interval
from babelprune.report.records import EvalResult

__all__ = ["Target", "coverage_markdown", "encoder_markdown", "held_out_blocks", "quality_markdown", "size_markdown",
           "speed_summary_markdown", "targets_markdown"]

BPB_LIMIT = 0.01  # trimmed bits per byte at most 1% above dense, every kept language
BLOCK_TOKENS = (140, 220)  # held-out blocks, in dense tokens: two never share a window of 256, one always fits
PARAMS_LIMIT = 0.5
THROUGHPUT_LIMIT = 1.7
FOLDER_LIMIT = 0.35  # trimmed + 50% wanda, fp32 values, the sparse copy alone
RETRIEVAL_LIMIT = 0.5  # points of top-1 accuracy, every kept language
WANDA_FP32 = "trimmed + wanda 50%, fp32 values"
WANDA_FP16 = "trimmed + wanda 50%, fp16 values"


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    limit: str
    met: bool

    @classmethod
    def bits_per_byte(cls, comparison: Comparison) -> Target:
        worst = max(comparison.changes, key=lambda change: change.relative)
        best = min(comparison.changes, key=lambda change: change.relative)
        return cls("bits per byte of every kept language on held-out text, trimmed vs dense (a loss is an increase)",
                   f"largest increase {worst.language} {100 * worst.relative:+.2f}%; largest decrease "
                   f"{best.language} {100 * best.relative:+.2f}%", f"at most {100 * BPB_LIMIT:+.0f}%",
                   all(change.relative <= BPB_LIMIT for change in comparison.changes))


def held_out_blocks(languages: list[str], verses: int, tokenizer, folder: Path) -> Path:
    """The first `verses` evaluation-split verses of each language, in blocks of consecutive verses, as a JSONL corpus.

    A block closes once it holds BLOCK_TOKENS[0] dense tokens and never passes
    BLOCK_TOKENS[1] unless one verse does. Evaluation packs segments greedily
    into windows of 256 tokens, so each block is a window of its own in every
    model (a trimmed tokenizer cuts text into as many pieces or more): the
    windows pair across tokenizers, and `compare` resamples them paired.
    Verses after the last whole block are left out.
    """
    low, high = BLOCK_TOKENS
    bible = get_corpus("bible")
    count = lambda texts: len(tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"])  # noqa: E731
    path = folder / "heldout-blocks.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for lang in languages:
            current: list[str] = []
            for segment in bible.segments(lang, "eval")[:verses]:
                if current and count(current + [segment.text]) > high:
                    handle.write(json.dumps({"lang": lang, "text": " ".join(current)}, ensure_ascii=False) + "\n")
                    current = []
                current.append(segment.text)
                if count(current) >= low:
                    handle.write(json.dumps({"lang": lang, "text": " ".join(current)}, ensure_ascii=False) + "\n")
                    current = []
    return path


def targets_markdown(targets: list[Target]) -> str:
    lines = ["| target | measured | limit | met |", "|---|---|---|---|"]
    lines += [f"| {t.name} | {t.measured} | {t.limit} | {'yes' if t.met else '**no**'} |" for t in targets]
    return "\n".join(lines) + "\n"


def _x(value: float | None, reference: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f} ({value / reference:.2f}x)" if reference else f"{value:,.{digits}f}"


def _holds(folder: Path) -> str:
    """What the folder stores its weights in."""
    if (folder / "model.safetensors").is_file() and (folder / "sparse").is_dir():
        return "HF copy + sparse copy"
    if (folder / "sparse").is_dir():
        return "sparse copy only"
    return "HF weights"


def size_markdown(models: dict, folders: dict[str, Path]) -> str:
    """Parameters and bytes of every saved folder against the dense one."""
    rows, reference = [], None
    for label, loaded in models.items():
        params = count_parameters(loaded.model)
        nonzero = sum(int(p.count_nonzero()) for p in loaded.model.parameters())
        weights, source = model_bytes(loaded)
        folder = folder_bytes(loaded)
        reference = reference or (params, nonzero, weights, folder)
        rows.append(f"| {label} | {_holds(folders[label])} | {_x(params / 1e6, reference[0] / 1e6, 1)} | "
                    f"{_x(nonzero / 1e6, reference[1] / 1e6, 1)} | {_x(weights / 1e6, reference[2] / 1e6)} {source} | "
                    f"{_x(folder / 1e6 if folder else None, reference[3] / 1e6)} |")
    header = ["model", "weights stored as", "parameters M", "non-zero parameters M", "weights MB (source)", "folder MB"]
    notes = ("Weights: the HF weight files (`files`), or the sparse copy `sparse/sparse.safetensors` when the folder has no "
             "HF weights (`sparse`). Folder: every file in it (config, tokenizer, babelprune's records, every copy of the "
             "weights). Parameters count zeros; pruned values are zeros in memory.")
    return "\n".join([notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]) + "\n"


def speed_summary_markdown(labels: list[str], reports: list[SpeedReport], folders: dict[str, Path]) -> tuple[str, list[Target]]:
    """The issue's columns for every timed model, and the size and speed targets."""
    dense = reports[0]
    rows = []
    for label, r in zip(labels, reports):
        peak = r.memory.peak / 1e6 if r.memory else None
        rows.append(
            f"| {label} | {_x(r.n_parameters / 1e6, dense.n_parameters / 1e6, 1)} | "
            f"{_x(r.bytes_on_disk / 1e6, dense.bytes_on_disk / 1e6)} {r.bytes_source} | "
            f"{_x((r.folder_bytes or 0) / 1e6, (dense.folder_bytes or 0) / 1e6)} | "
            f"{_x(r.throughput_tokens_per_s, dense.throughput_tokens_per_s)} | "
            f"{_x(r.latency_batch1_ms, dense.latency_batch1_ms, 1)} | "
            f"{_x(r.generate_ms_per_token, dense.generate_ms_per_token, 1)} | "
            f"{_x(peak, dense.memory.peak / 1e6 if dense.memory else None)} |"
        )
    header = ["model", "parameters M", "weights MB", "folder MB", "eval tokens/s", "latency b1 ms", "generate ms/token b1",
              "peak RSS MB"]
    first = reports[0]
    notes = (f"Eval tokens/s: `model(input_ids)` with the LM head on {first.batch_size} sequences of {first.seq_len} "
             f"random tokens (bench-speed's throughput); latency: one such sequence. Generate: `model.generate` at "
             f"batch 1, greedy, {first.new_tokens} new tokens after {first.prompt_tokens} prompt tokens, the whole call "
             "divided by the new tokens. Times are medians of "
             f"{first.runs} runs after {first.warmup} warm-up calls, all models round-robin in one process "
             f"({first.threads} threads). Peak RSS: a fresh process per model that loads it from its folder and runs "
             "each probe once (interpreter and libraries included, "
             f"{first.memory.base / 1e6:.0f} MB before loading). Ratios are to dense; for times, x < 1 is faster.")
    by_label = dict(zip(labels, reports))
    trimmed, fp32, fp16 = by_label["trimmed"], by_label[WANDA_FP32], by_label[WANDA_FP16]
    same = (trimmed, fp32, fp16)  # one computation: pruned zeros are multiplied like any other value
    spans = [sorted(f(r) for r in same) for f in (lambda r: r.throughput_tokens_per_s / dense.throughput_tokens_per_s,
                                                  lambda r: r.generate_ms_per_token / dense.generate_ms_per_token)]
    notes += (f" Noise of this run: trimmed and trimmed + wanda (fp32, fp16 values) run the same dense computation, "
              f"yet their eval tokens/s ratios span {spans[0][0]:.2f}x-{spans[0][-1]:.2f}x and their generate ratios "
              f"{spans[1][0]:.2f}x-{spans[1][-1]:.2f}x.")
    params = trimmed.n_parameters / dense.n_parameters
    speed = trimmed.throughput_tokens_per_s / dense.throughput_tokens_per_s
    fp32_share, fp16_share = fp32.folder_bytes / dense.folder_bytes, fp16.folder_bytes / dense.folder_bytes
    fp32_weights = fp32.bytes_on_disk / dense.bytes_on_disk
    targets = [
        Target("parameters, trimmed", f"{params:.3f}x dense", f"at most {PARAMS_LIMIT}x", params <= PARAMS_LIMIT),
        Target("evaluation tokens/s, trimmed", f"{speed:.2f}x dense", f"at least {THROUGHPUT_LIMIT}x", speed >= THROUGHPUT_LIMIT),
        Target("bytes of the saved folder, trimmed + wanda 50%, fp32 values (sparse copy only)",
               f"{fp32_share:.3f}x dense folder (weights alone {fp32_weights:.3f}x)", f"at most {FOLDER_LIMIT}x",
               fp32_share <= FOLDER_LIMIT and fp32_weights <= FOLDER_LIMIT),
        Target("the same with fp16 values", f"{fp16_share:.3f}x dense folder", f"less than fp32 values ({fp32_share:.3f}x)",
               fp16_share < fp32_share),
    ]
    return "\n".join([notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]) + "\n", targets


def _cell(change) -> str:
    interval = change.interval
    spread = f" [{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]" if interval else ""
    return f"{change.pruned:.4f} ({100 * change.relative:+.2f}%{spread})"


def _paired(before: EvalResult, after: EvalResult, lang: str) -> bool:
    """Whether `compare` resamples `lang` paired: the same windows, or else the same segments of text."""
    return resampled_paired(*({s.language: s for s in result.scores}[lang] for result in (before, after)))


def quality_markdown(results: dict[str, EvalResult], kept: list[str]) -> str:
    """Bits per byte per kept language: trimmed vs dense, pruned vs dense, and fp16/bf16 values vs fp32 values."""
    pairs = [("trimmed vs dense", "dense", "trimmed"), ("trimmed with --extra UDHR vs dense", "dense", "trimmed, --extra UDHR"),
             ("wanda 50% fp32 vs dense", "dense", WANDA_FP32),
             ("fp16 values vs fp32 values", WANDA_FP32, WANDA_FP16),
             ("bf16 values vs fp32 values", WANDA_FP32, "trimmed + wanda 50%, bf16 values")]
    comparisons = [{c.language: c for c in compare(results[a], results[b], label=name).changes} for name, a, b in pairs]
    header = ["language", "dense", *[name for name, _, _ in pairs]]
    rows = [f"| {lang} | {results['dense'].value(lang, 'bits_per_byte'):.4f} | " + " | ".join(_cell(c[lang]) for c in comparisons) + " |"
            for lang in kept]
    paired = ", ".join(f"{name}: {sum(_paired(results[a], results[b], lang) for lang in kept)} of {len(kept)}"
                       for name, a, b in pairs)
    notes = ("Each cell: the second model's bits per byte (relative change from the first, 95% bootstrap interval "
             "over windows, paired when both read the same windows). The held-out verses are read in blocks of "
             f"consecutive verses of {BLOCK_TOKENS[0]}-{BLOCK_TOKENS[1]} dense tokens, one block per window, so that "
             f"windows pair across tokenizers; languages whose windows paired: {paired}. fp16 and bf16 are the sparse "
             "copy's value type, reloaded as fp32: the cost is the rounding of the stored values alone.")
    return "\n".join([notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]) + "\n"


def coverage_markdown(model: str, kept: list[str], corpus, record: dict, per_row: float) -> str:
    """Share of held-out tokens (dense tokenization) whose piece a trimmed vocabulary lacks, for several knobs.

    per_row: parameters one vocabulary row costs (embedding, and LM head when untied).
    """
    folder = resolve_spec(model)
    tokenizer, config = AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
    rows_before = record["original_vocab_size"]
    bible, udhr = get_corpus("bible"), get_corpus("udhr")
    calib = count_token_ids(tokenizer, [t for lang in kept for t in bible.texts(lang, "calib")])
    extra = count_token_ids(tokenizer, [t for lang in kept for t in udhr.texts(lang, "all")])
    held = {lang: count_token_ids(tokenizer, corpus.texts(lang, "all")) for lang in kept}
    variants = {f"--min-count {n}": choose_kept_ids(tokenizer, config, calib, rows_before, n, False)[0] for n in (1, 2, 4)}
    variants["--min-count 1 --extra UDHR (same languages)"] = choose_kept_ids(tokenizer, config, calib + extra, rows_before, 1, False)[0]
    if variants["--min-count 1"] != record["kept_ids"]:
        raise SystemExit("the recomputed vocabulary differs from the trimmed model's; the coverage table would not describe it")
    header = ["vocabulary", "tokens", "parameters lost to vocabulary M", *kept]
    rows = []
    for name, ids in variants.items():
        keep = set(ids)
        missing = [sum(n for i, n in held[lang].items() if i not in keep) / sum(held[lang].values()) for lang in kept]
        rows.append(f"| {name} | {len(ids):,} | -{(rows_before - len(ids)) * per_row / 1e6:.1f} | "
                    + " | ".join(f"{100 * m:.2f}%" for m in missing) + " |")
    notes = ("Share of each language's held-out tokens (as the dense tokenizer cuts the verses above) whose piece the "
             "vocabulary dropped; the trimmed tokenizer spells them in shorter pieces or bytes. `--min-count 1` is the "
             "trimmed model measured above; the other rows are computed from the same counts, not evaluated. "
             "`--min-count` trades coverage for size; `--extra` text (here the UDHR in the same languages) buys coverage.")
    return "\n".join([notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]) + "\n"


def _points_difference(before, after) -> tuple[float, tuple[float, float]]:
    """Top-1 accuracy change in points, with its paired bootstrap interval over the queries (same queries, same order)."""
    a, b = np.asarray(before.query_hits, float), np.asarray(after.query_hits, float)
    index = draws(len(a), before.language)
    replicates = 100 * (b[index].mean(axis=1) - a[index].mean(axis=1))
    return 100 * (b.mean() - a.mean()), percentile_interval(replicates)


def encoder_markdown(encoder: str, kept: list[str], queries: int, tmp: Path) -> tuple[str, list[Target]]:
    """The encoder trimmed to the kept languages: retrieval per language against dense, sizes, and the target."""
    dense = load_model(encoder)
    trimmed = load_model(encoder)
    trim_vocabulary(trimmed, "bible", kept, keep_reserved=False)
    save_trimmed(trimmed, tmp / "encoder-trimmed")
    trimmed = load_model(str(tmp / "encoder-trimmed"))
    before = evaluate(dense, "bible", kept, "eval", max_tokens=queries, progress=False)
    after = evaluate(trimmed, "bible", kept, "eval", max_tokens=queries, progress=False)
    scores = {s.language: s for s in after.scores}
    differences = {s.language: _points_difference(s, scores[s.language]) for s in before.scores}
    rows = []
    for score in before.scores:
        points, (low, high) = differences[score.language]
        rows.append(f"| {score.language} | {score.n_queries} | {100 * score.top1:.1f} | {100 * scores[score.language].top1:.1f} | "
                    f"{points:+.1f} [{low:+.1f}, {high:+.1f}] | {'yes' if abs(points) <= RETRIEVAL_LIMIT else '**no**'} |")
    params = (count_parameters(dense.model), count_parameters(trimmed.model))
    weights = (model_bytes(dense)[0], model_bytes(trimmed)[0])
    notes = (f"{encoder} trimmed to {', '.join(kept)} (Bible calibration split); English queries, top-1 retrieval of the "
             f"aligned verse among {queries} per language of the evaluation split. Parameters {params[0]:,} -> {params[1]:,} "
             f"({params[1] / params[0]:.3f}x); weights {weights[0] / 1e6:.0f} MB -> {weights[1] / 1e6:.0f} MB "
             f"({weights[1] / weights[0]:.3f}x). Difference: trimmed minus dense in points, 95% paired bootstrap interval over queries.")
    header = ["language", "queries", "dense top-1 %", "trimmed top-1 %", "difference (points)", f"within {RETRIEVAL_LIMIT} points"]
    worst = max(differences, key=lambda lang: abs(differences[lang][0]))
    target = Target(f"{encoder} trimmed: English-to-X retrieval of every kept language vs dense",
                    f"largest difference {worst} {differences[worst][0]:+.1f} points", f"within {RETRIEVAL_LIMIT} points",
                    all(abs(points) <= RETRIEVAL_LIMIT for points, _ in differences.values()))
    return "\n".join([notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]) + "\n", [target]
