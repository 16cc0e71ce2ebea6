"""Pruning and shrinking a model into a folder or file: `prune`, `trim-vocab`, `export`, `shrink`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from babelprune.choices import (
    CALIB_BATCH,
    Allocation,
    Balance,
    ExportFormat,
    GgufDtype,
    GgufQuant,
    GqaMode,
    LanguageBudget,
    Offload,
    Onload,
    Order,
    Ranking,
    RefitDefaults,
    RefitSolver,
    Score,
    Setting,
    ShrinkGoal,
    StorageFormat,
    StructuredImportance,
    ValuesDtype,
)
from babelprune.cli.common import (
    MAX_INT,
    CalibLangsOption,
    CalibOption,
    DeviceOption,
    DtypeOption,
    RegistryChoices,
    SamplesOption,
    SeedOption,
    SeqLenOption,
    console,
    err_console,
)
from babelprune.errors import BabelpruneError
from babelprune.flags import language_option
from babelprune.outputs import check_output_file, check_output_folder


def prune_command(
    out: Annotated[Path, typer.Option(help="Folder for the pruned model (must not exist).")],
    model: Annotated[str, typer.Option(help="Alias, HF folder or hub id of the dense model.")] = "gemma3-270m",
    method: Annotated[str, typer.Option(help="One-shot pruning method.")] = "wanda",  # choices: RegistryChoices
    sparsity: Annotated[Optional[float], typer.Option(help="Share of block weights to zero, in [0, 1) (default 0.5; an N:M pattern fixes it, so it takes none).")] = None,
    pattern: Annotated[str, typer.Option(help="unstructured, or N:M such as 2:4 or 4:8.")] = "unstructured",
    allocation: Annotated[Optional[Allocation], typer.Option(help="Layer-wise sparsity (default: the method's own, cwl for mwanda, M-Wanda's cross-lingual allocation, uniform for the others and under N:M).")] = None,
    setting: Annotated[Setting, typer.Option(help="shared (one mask) or per-language (a mask per calibration language, plus a pooled one).")] = "shared",
    order: Annotated[Order, typer.Option(help="one-pass (each block runs once) or two-pass (the reference order).")] = "one-pass",
    calib_batch: Annotated[int, typer.Option(max=MAX_INT, help="Calibration windows per forward: fewer hold fewer activations (one-pass: same result).")] = CALIB_BATCH,
    calib: CalibOption = "bible",
    calib_langs: CalibLangsOption = None,
    samples: SamplesOption = 8,
    seq_len: SeqLenOption = 256,
    alpha: Annotated[float, typer.Option(help="M-Wanda: weight of the cross-language spread of input norms.")] = 0.5,
    beta: Annotated[float, typer.Option(help="M-Wanda: strength of the activation-probability protection.")] = 1.0,
    language_aware: Annotated[bool, typer.Option(help="M-Wanda: language-aware statistics.")] = True,
    activation_prob: Annotated[bool, typer.Option(help="M-Wanda: activation-probability term.")] = False,
    score: Annotated[Score, typer.Option(help="M-Wanda: the score its feature term enters (wanda: |W| * f; ria: RIA's relative importance * f^0.5).")] = "wanda",
    save_format: Annotated[Optional[StorageFormat], typer.Option("--format", help="Saved form (default: both when shared, hf when per-language).")] = None,
    values: Annotated[ValuesDtype, typer.Option(help="Type of the values in the sparse copy: fp16 and bf16 halve its bytes (reloaded as fp32).")] = "fp32",
    seed: SeedOption = 0,
    structured: Annotated[Optional[str], typer.Option(help="Structured pruning of these units instead: heads, ffn, blocks (comma-separated).")] = None,
    importance: Annotated[StructuredImportance, typer.Option(help="Structured: how units are ranked.")] = "gradient",
    gqa: Annotated[GqaMode, typer.Option(help="Structured, grouped-query attention: query (heads evenly within groups) or groups.")] = "query",
    ranking: Annotated[Ranking, typer.Option(help="Structured: global or per-layer ranking of units.")] = "global",
    refit: Annotated[bool, typer.Option(help="Structured (heads, ffn; shared setting): refit the output and down projections that read removed heads / neurons on the calibration text, block by block, with a bias restoring their mean output.")] = False,
    reconstruct: Annotated[bool, typer.Option(help="Refit each layer's kept weights to its dense outputs on the calibration inputs (shared setting).")] = False,
    refit_solver: Annotated[RefitSolver, typer.Option(help="--reconstruct: batched conjugate gradient, or an exact solve per row (slow; small layers).")] = "pcg",
    refit_damp: Annotated[float, typer.Option(help="--reconstruct: damping, as a share of the Hessian's mean diagonal; larger stays closer to the dense kept weights.")] = RefitDefaults.damp,
    refit_shrink: Annotated[float, typer.Option(help="--reconstruct: in [0, 1]; 0 keeps the full refit, 1 the mask method's weights.")] = RefitDefaults.shrink,
    refit_iterations: Annotated[int, typer.Option(min=1, max=MAX_INT, help="--reconstruct: conjugate-gradient iterations at most.")] = RefitDefaults.iterations,
    balance: Annotated[Balance, typer.Option(help="languages: each calibration language counts by its weight; tokens: every token counts once.")] = "languages",
    language_weights: Annotated[Optional[str], typer.Option(help="Weights of calibration languages in the statistics and Hessians, e.g. sw=2,en=1 (others weigh 1).")] = None,
    language_budget: Annotated[LanguageBudget, typer.Option(help="minimax: prune in rounds, raising the weight of the languages that lose most on held-out windows.")] = "none",
    budget_rounds: Annotated[int, typer.Option(min=1, max=MAX_INT, help="--language-budget: pruning rounds.")] = 3,
    holdout_samples: Annotated[int, typer.Option(min=1, max=MAX_INT, help="--language-budget: calibration windows per language held out to measure each round.")] = 2,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A YAML/JSON file holding the whole pruning config (a file with `units` is structured); its flags may not be typed too.")] = None,
    offload: Annotated[Offload, typer.Option(help="disk: read one block at a time from the model's safetensors folder and write it out once pruned (memory flat in depth).")] = "none",
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
    onload: Annotated[Onload, typer.Option(help="sequential: the weights stay on the CPU (or disk) and each block moves to --device while it is pruned; none: the whole model on --device; auto: sequential on an accelerator.")] = "auto",
    activation_memory: Annotated[Optional[str], typer.Option(help="Calibration hidden states allowed on the device, e.g. 2GB or 512MiB; beyond it they stay in CPU memory and stream in by micro-batch (same masks).")] = None,
) -> None:
    """Prune a model calibrated on several languages: one-shot unstructured/N:M, or structured (--structured)."""
    from babelprune.api import CalibrationSpec, PruneConfig, StructuredConfig, prune_to_folder
    from babelprune.flags import (
        PRUNE_FLAGS, STRUCTURED_FLAGS, config_from_flags, given_parameters, prune_config_from_flags, read_verb_config,
        refuse_prune_options_without_effect, refuse_typed_flags,
    )

    flags = dict(locals())
    given = given_parameters(flags)  # typed options, told apart from defaults: one that has no effect is refused
    check_output_folder(out, "--out")
    if config_file is not None:
        refuse_typed_flags(config_file, PRUNE_FLAGS | STRUCTURED_FLAGS)
        config = read_verb_config(config_file, [StructuredConfig, PruneConfig])
    elif structured is not None:
        config = config_from_flags(StructuredConfig, STRUCTURED_FLAGS, flags)
    else:
        config = prune_config_from_flags(flags, given)
    refuse_prune_options_without_effect(config, given, flags)
    calibration = CalibrationSpec(corpus=calib, languages=language_option(calib_langs, "--calib-langs"), samples=samples,
                                  seq_len=seq_len, seed=seed)
    result = prune_to_folder(model, config, out, calibration, language_budget=language_budget, budget_rounds=budget_rounds,
                             holdout_samples=holdout_samples, offload=offload, save_format=save_format, values=values,
                             device=device, dtype=dtype, onload=onload, activation_memory=activation_memory)
    if isinstance(config, StructuredConfig):
        refit_note = ""
        if result.refit and result.refit["layers"]:
            layers = result.refit["layers"]
            before = sum(layer["error_before"] for layer in layers) / len(layers)
            after = sum(layer["error_after"] for layer in layers) / len(layers)
            refit_note = f"; refit lowered the mean layer error on calibration from {before:.4f} to {after:.4f}"
        console.print(
            f"{config.importance} structured ({', '.join(config.units)}): block parameters {result.params_before:,} -> "
            f"{result.params_after:,} ({result.achieved_sparsity:.1%} removed) in {result.seconds:.1f} s{refit_note}; saved to {out}"
        )
        return
    if result.language_budget:
        _print_budget_rounds(result.language_budget)
    means = result.mean_refit_errors()
    refit_note = f"; refit lowered the mean layer error on calibration from {means[0]:.4f} to {means[1]:.4f}" if means else ""
    where = ", one block at a time from disk" if offload == "disk" else ""
    if result.onload == "sequential" and result.device != "cpu":  # on the CPU nothing moves
        where += f", each block moved to {result.device} while it was pruned"
    if result.activation_windows is not None:
        windows = result.activation_windows
        where += f", activations streamed {windows} window{'s' if windows > 1 else ''} at a time"
    console.print(
        f"{config.method}: block sparsity {result.starting_sparsity:.1%} -> {result.achieved_sparsity:.1%} "
        f"in {result.seconds:.1f} s{where}{refit_note}; saved to {out}"
    )
    parts = result.config.mwanda_parts_line()  # which of M-Wanda's parts ran (the record's mwanda_parts)
    if parts is not None:
        console.print(parts, highlight=False)


def _print_budget_rounds(budget: dict) -> None:
    """One row per round: the weights it pruned with and each language's held-out loss."""
    from rich.table import Table

    languages = list(budget["rounds"][0]["losses"])
    table = Table(title=f"language budget: increase of held-out {budget['unit']} (weight)")
    table.add_column("round")
    for lang in languages:
        table.add_column(lang, justify="right")
    table.add_column("worst", justify="right")
    for number, entry in enumerate(budget["rounds"], start=1):
        marker = " (kept)" if number == budget["chosen_round"] else ""
        cells = [f"{entry['losses'][lang]:+.3f} ({entry['weights'][lang]:.2f})" for lang in languages]
        table.add_row(f"{number}{marker}", *cells, f"{max(entry['losses'].values()):+.3f}")
    console.print(table)


def keep_rules(trim) -> str:
    """The keep rules a trim used, as its options read."""
    rules = []
    if trim.keep_script_rank is not None:
        rules.append(f"--keep-script-rank {trim.keep_script_rank:,} ({', '.join(trim.scripts)})")
    if trim.keep_common is not None:
        rules.append(f"--keep-common {trim.keep_common:,}")
    return " and ".join(rules)


def trim_vocab_command(
    out: Annotated[Path, typer.Option(help="Folder for the trimmed model (must not exist).")],
    model: Annotated[str, typer.Option(help="Alias, HF folder or hub id (a pruned folder works too).")] = "gemma3-270m",
    langs: Annotated[Optional[str], typer.Option(help="Comma-separated languages to keep (default: en,es,fr,zh,ru,ar,hi,sw).")] = None,
    corpus: Annotated[str, typer.Option(help="Corpus whose calibration split is tokenized: bible, udhr, a folder/JSONL, hf:<dataset>.")] = "bible",
    extra: Annotated[Optional[list[Path]], typer.Option(help="More UTF-8 text whose tokens are kept too (repeatable).")] = None,
    min_count: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Keep a token only if the text uses it at least this often.")] = 1,
    keep_reserved: Annotated[bool, typer.Option("--keep-reserved/--drop-reserved", help="Keep or drop the reserved placeholder tokens (<unusedN>) the text does not use.")] = True,
    keep_script_rank: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Also keep every piece of the kept languages' scripts (and digits, punctuation) among the tokenizer's N best-ranked pieces, and every letter of those scripts: coverage of text the trimming never read.")] = None,
    keep_common: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Also keep the N pieces the kept languages' most common words use most (word lists of broad text, each language weighted equally; needs pip install 'babelprune[words]'): coverage of text the trimming never read.")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A YAML/JSON file holding the whole trim config (languages, corpus, split, min_count, keep_reserved, keep_script_rank, keep_common).")] = None,
) -> None:
    """Keep only the vocabulary some languages use: smaller embedding and LM head, tokenizer rebuilt to match.

    It takes no --device or --dtype: the model never runs; the text is tokenized and rows of the embedding and LM head are kept, on the CPU in float32.
    """
    from babelprune.api import TrimConfig, trim_to_folder
    from babelprune.flags import TRIM_FLAGS, verb_config

    config = verb_config(config_file, TrimConfig, TRIM_FLAGS, dict(locals()))
    check_output_folder(out, "--out")
    trim, before, after = trim_to_folder(model, config, out, extra or [])
    console.print(
        f"Kept {len(trim.kept_ids):,} of {trim.original_size:,} tokens ({trim.seen_ids:,} used by the text, "
        f"{trim.required_ids:,} the tokenizer needs"
        + (f", {trim.rule_ids:,} more by {keep_rules(trim)}" if trim.keep_script_rank is not None or trim.keep_common is not None else "")
        + f"); parameters {before:,} -> {after:,} ({after / before:.3f}x)."
    )
    if trim.no_word_list:
        console.print(Text(f"--keep-common has no word list for {', '.join(trim.no_word_list)}: their pieces come from the text alone."))
    console.print(Text(f"Trimmed model written to {out}"))


def export_command(
    model: Annotated[str, typer.Argument(help="Alias, HF folder or hub id of a causal LM (pruned, trimmed or structured folders too).")],
    out: Annotated[Path, typer.Option(help="The file to write (must not exist).")],
    export_format: Annotated[ExportFormat, typer.Option("--format", help="File format: gguf (llama.cpp; llama and gemma3 models).")] = "gguf",
    dtype: Annotated[GgufDtype, typer.Option(help="Weights in float32 (exact) or float16 (half the size); with --quant, the file llama.cpp quantizes from.")] = "f32",
    quant: Annotated[Optional[GgufQuant], typer.Option(help="Quantize with llama.cpp's own quantizer to this mix (needs llama-cpp-python: babelprune's llama extra).")] = None,
    imatrix: Annotated[Optional[str], typer.Option(help="--quant: importance matrix from the calibration text: balanced (languages weighted equally), one language's code, or none (default: balanced; none for Q8_0, which reads none).")] = None,
    calib: CalibOption = "bible",
    calib_langs: CalibLangsOption = None,
    samples: SamplesOption = 8,
    seq_len: SeqLenOption = 256,
    seed: SeedOption = 0,
) -> None:
    """Write a model and its tokenizer as one GGUF file that llama.cpp and transformers load, quantized with --quant.

    It takes no --device: the weights are read on the CPU and written out; an importance matrix runs the model over the calibration text on the CPU in float32. --dtype here is the type of the file's weights (f32 or f16), not the type a model runs in.
    """
    from babelprune.api import CalibrationSpec, export_model
    from babelprune.flags import given_parameters

    given = given_parameters(dict(locals())) & {"calib", "calib_langs", "samples", "seq_len", "seed"}
    check_output_file(out, "--out", (".gguf",))  # before loading: a taken name costs nothing
    calibration = None
    if given:  # typed: the library refuses them where no importance matrix is made
        calibration = CalibrationSpec(corpus=calib, languages=language_option(calib_langs, "--calib-langs"),
                                      samples=samples, seq_len=seq_len, seed=seed)
    written = export_model(model, out, dtype, quant=quant, imatrix=imatrix, calibration=calibration)
    if written.quant is None:
        console.print(f"GGUF written to {written.path} ({written.megabytes:.1f} MB, {written.dtype}).", highlight=False)
        return
    matrix = "no importance matrix" if written.imatrix == "none" else (
        "importance matrix balanced over " + ", ".join(written.imatrix_languages) if written.imatrix == "balanced"
        else f"importance matrix from {written.imatrix} alone")
    fallback = ""
    if written.fallbacks:
        counts: dict[str, int] = {}
        for kind in written.fallbacks.values():
            counts[kind] = counts.get(kind, 0) + 1
        fallback = (f"; {len(written.fallbacks)} tensors with rows not a multiple of 256 wide took another type "
                    f"({', '.join(f'{n} {kind}' for kind, n in counts.items())})")
    console.print(f"GGUF written to {written.path} ({written.megabytes:.1f} MB, {written.quant} by llama.cpp from "
                  f"{written.dtype}, {matrix}{fallback}).", highlight=False)


def _list_option(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text is not None else None


def shrink_command(
    out: Annotated[Path, typer.Option(help="Folder for the chosen model, shrink.json and index.html (must not exist).")],
    langs: Annotated[str, typer.Option(help="Comma-separated languages that must each stay within the budget.")],
    budget: Annotated[str, typer.Option(help="Relative bits-per-byte increase each language may take, judged by the upper end of its paired 95% interval: 2% or 0.02.")],
    model: Annotated[str, typer.Option(help="Alias, HF folder or hub id of a causal LM.")] = "gemma3-270m",
    corpus: Annotated[str, typer.Option(help="Corpus: its calibration split trims and calibrates, the dev half of its evaluation split scores, the test half confirms.")] = "bible",
    goal: Annotated[ShrinkGoal, typer.Option(help="What the chosen model minimises: size (bytes as served) or speed (latency in PyTorch on the CPU).")] = "size",
    trims: Annotated[Optional[str], typer.Option(help="Vocabulary trims to try: none, N (min_count N), N:R (and keep_script_rank R), N:cK (and keep_common K); default none,1,2.")] = None,
    widths: Annotated[Optional[str], typer.Option(help="Structured widths to try: none, UNITS=SPARSITY with units joined by + (ffn=0.1, heads+ffn=0.2); default none,ffn=0.1,ffn=0.2,heads=0.25.")] = None,
    quants: Annotated[Optional[str], typer.Option(help="GGUF quantizations to try: none, Q8_0, Q4_K_M... (needs llama-cpp-python: babelprune's llama extra); default none, plus Q8_0 and Q4_K_M where llama.cpp can write and score a GGUF.")] = None,
    importance: Annotated[StructuredImportance, typer.Option(help="How structured units are ranked.")] = "gradient",
    trials: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Candidates to try (default: every combination, a grid; fewer: optuna's TPE sampler).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Seed of the sampler and of the calibration windows.")] = 0,
    segments: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Held-out segments scored per language and half (one window each).")] = 40,
    seq_len: Annotated[int, typer.Option(min=2, max=MAX_INT, help="Tokens per window: of each scored segment (a longer one is split) and of the calibration windows.")] = 256,
    samples: SamplesOption = 8,
    store: Annotated[Optional[Path], typer.Option(help="Store of every candidate's scores (default: <out>.shrink.sqlite); a search run again resumes from it.")] = None,
) -> None:
    """Search vocabulary trims, structured widths (and GGUF quantizations) for the smallest model whose every language stays within --budget.

    Candidates are scored on the dev half of the corpus's evaluation split and the chosen one is confirmed on the test half, text the search never read.
    """
    from babelprune.api import CalibrationSpec, parse_budget, shrink_to_folder
    from babelprune.report.html import write_shrink_page

    fraction = parse_budget(budget)
    languages = language_option(langs) or []
    record = shrink_to_folder(
        model, languages, fraction, out, corpus=corpus, goal=goal, trims=_list_option(trims), widths=_list_option(widths),
        quants=_list_option(quants), trials=trials, seed=seed, segments=segments, seq_len=seq_len, importance=importance,
        calibration=CalibrationSpec(samples=samples, seq_len=seq_len, seed=seed), store=store, write_page=write_shrink_page,
    )
    chosen = next(c for c in record.candidates if c.number == record.chosen)
    passed = sum(c.passed for c in record.candidates)
    console.print(Text(f"{len(record.candidates)} candidates scored, {passed} within {fraction:.2%} in every language."))
    console.print(Text(f"Chosen: {chosen.label}, {chosen.bytes:,} bytes ({chosen.bytes / record.dense_bytes:.1%} of the dense model)."))
    for check in record.test:
        low, high = check.interval if check.interval is not None else (float("nan"), float("nan"))
        console.print(Text(f"  test half, {check.language}: {check.relative:+.2%} [{low:+.2%}, {high:+.2%}]"
                           + ("" if check.passed else "  beyond the budget")))
    console.print(Text(f"Shrunk model written to {out} (model/, shrink.json, index.html)"))
    if not record.test_passed:  # written, so it can be inspected, but the search did not deliver what was asked
        err_console.print(Text("The chosen model does NOT hold the budget on the test half in every language; see "
                               "shrink.json, and search again with a larger --budget or --segments."))
        raise typer.Exit(1)
