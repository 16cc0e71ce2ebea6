"""Measuring models: `models`, `eval`, `compare`, `bench-speed`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from babelprune.choices import EvalOnload, Runtime, Split
from babelprune.cli.common import MAX_INT, DeviceOption, DtypeOption, SparseKernelsOption, console, note, show_sparse_kernels
from babelprune.errors import BabelpruneError
from babelprune.flags import language_option
from babelprune.outputs import check_output_file


def models_command() -> None:
    """List the built-in model aliases."""
    from babelprune.api import model_aliases

    for alias, description in model_aliases().items():
        console.print(Text.assemble((alias, "bold"), "  ", description))


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
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
    sparse_kernels: SparseKernelsOption = "none",
    onload: Annotated[EvalOnload, typer.Option(help="sequential: the weights stay in CPU memory and each block moves to --device "
                                               "while it runs (a model larger than the device's memory; causal LMs); none: the "
                                               "whole model on --device.")] = "none",
    runtime: Annotated[Runtime, typer.Option(help="What computes the logits: torch (the model itself), or llama.cpp (--model is a "
                                             ".gguf file; needs pip install 'babelprune[llama]').")] = "torch",
    tokenizer: Annotated[Optional[str], typer.Option(help="With --runtime llama.cpp: the model the GGUF file was exported from "
                                                     "(alias, folder or hub id), whose tokenizer makes the token ids (default: the one "
                                                     "the file names, when it is here).")] = None,
) -> None:
    """Evaluate a model per language: perplexity and bits per byte (or retrieval accuracy for encoders)."""
    from babelprune.api import evaluate_model
    from babelprune.flags import given_parameters
    from babelprune.records.eval import is_eval_result_file
    from babelprune.report.tables import rich_table

    if runtime == "llama.cpp":  # typed, even at its default, an option llama.cpp cannot honour is one sentence
        refuse_typed(given_parameters(dict(locals())) & {"device", "dtype", "sparse_kernels", "batch_size", "onload"},
                     "--runtime llama.cpp, which scores one window at a time with the GGUF file's own weights on the CPU")
    if out is not None:
        check_output_file(out, "--out", (".json",), overwrite=overwrite, recognise=is_eval_result_file, writer="`babelprune eval`")
    if runtime == "llama.cpp":
        result = evaluate_model(model, corpus, language_option(langs, "--langs"), split, seq_len, max_tokens,
                                runtime=runtime, tokenizer=tokenizer)
    else:
        result = evaluate_model(model, corpus, language_option(langs, "--langs"), split, seq_len, max_tokens, batch_size,
                                device=device, dtype=dtype, sparse_kernels=sparse_kernels, tokenizer=tokenizer, onload=onload)
    console.print(rich_table(result))
    show_sparse_kernels(result.model.sparse_kernels, result.model.spec)
    if out is not None:
        result.save(out)
        console.print(Text(f"Result written to {out}"))


def refuse_typed(typed: set[str], where: str) -> None:
    """Options typed where they have no effect: one sentence naming them."""
    if typed:
        names = sorted("--" + name.replace("_", "-") for name in typed)
        one = len(names) == 1
        raise BabelpruneError(f"{', '.join(names)} {'has' if one else 'have'} no effect with {where}; drop {'it' if one else 'them'}.")


def compare_command(
    dense: Annotated[Path, typer.Argument(help="JSON result of the dense model (from babelprune eval --out).")],
    pruned: Annotated[list[Path], typer.Argument(help="JSON results of pruned models.")],
    chart: Annotated[Optional[Path], typer.Option(help="Also draw the per-language degradation chart (.png, .svg or .pdf; missing folders are created).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --chart that `babelprune compare` drew.")] = False,
) -> None:
    """Per-language change from dense to each pruned model: relative change, worst language, mean by resource level."""
    from babelprune.records.eval import EvalResult
    from babelprune.report.compare import compare
    from babelprune.report.plots import CHART_FORMATS, degradation_chart, is_chart_written_here
    from babelprune.report.tables import comparison_table

    if chart is not None:
        check_output_file(chart, "--chart", CHART_FORMATS, overwrite=overwrite, recognise=is_chart_written_here, writer="`babelprune compare`")
    dense_result = EvalResult.load(dense)
    comparisons = [compare(dense_result, EvalResult.load(path)) for path in pruned]
    console.print(comparison_table(comparisons))
    for line in filter(None, (comparison.dropped_note() for comparison in comparisons)):
        note(line)
    if chart is not None:
        degradation_chart(comparisons, chart)
        console.print(Text(f"Chart written to {chart}"))


def bench_speed_command(
    models: Annotated[list[str], typer.Argument(help="Models to compare (aliases, folders, hub ids); the first is the reference.")],
    seq_len: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Tokens per sequence.")] = 128,
    batch: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Sequences per batch for throughput.")] = 8,
    runs: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Timed runs (the median is reported).")] = 5,
    warmup: Annotated[int, typer.Option(max=MAX_INT, min=0, help="Untimed runs first.")] = 2,
    threads: Annotated[Optional[int], typer.Option(max=MAX_INT, min=1, help="Torch threads (default: torch's).")] = None,
    new_tokens: Annotated[int, typer.Option(max=MAX_INT, min=0, help="Causal LMs: tokens generated greedily at batch 1 per timed run (0: no generation).")] = 64,
    prompt_tokens: Annotated[int, typer.Option(max=MAX_INT, min=1, help="Causal LMs: prompt tokens before the generated ones.")] = 16,
    memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Peak resident memory of each model, loaded again in a fresh process after the timing (torch models).")] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the reports as JSON (a .json file; missing folders are created).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --json that `babelprune bench-speed` wrote.")] = False,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
    sparse_kernels: SparseKernelsOption = "none",
) -> None:
    """Latency (batch 1), throughput, generation per token, parameters, bytes on disk, peak memory and FLOPs per token, side by side.

    GGUF files (.gguf) are timed in llama.cpp instead: prompt processing of --seq-len tokens and generation of
    --new-tokens tokens at batch 1, in tokens per second (needs pip install 'babelprune[llama]').
    """
    import os

    # Spinning OpenMP threads collapse on a busy machine; must be set before torch starts its pool.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from babelprune.api import is_gguf_model, measure_model_speeds, write_speed_reports
    from babelprune.flags import given_parameters
    from babelprune.records.speed import is_speed_reports_file
    from babelprune.report.tables import footprint_table, llama_cpp_speed_table, speed_table

    gguf = any(is_gguf_model(spec) for spec in models)
    if gguf:
        refuse_typed(given_parameters(dict(locals())) & {"batch", "memory", "device", "dtype", "sparse_kernels"},
                     "GGUF files, which llama.cpp times at batch 1 on the CPU with their own weights")
    if json_out is not None:
        check_output_file(json_out, "--json", (".json",), overwrite=overwrite, recognise=is_speed_reports_file, writer="`babelprune bench-speed`")
    if gguf:
        reports = measure_model_speeds(models, seq_len=seq_len, runs=runs, warmup=warmup, threads=threads,
                                       new_tokens=new_tokens, prompt_tokens=prompt_tokens)
        console.print(llama_cpp_speed_table(reports))
        if json_out is not None:
            write_speed_reports(reports, json_out)
        return
    reports = measure_model_speeds(models, seq_len=seq_len, batch_size=batch, runs=runs, warmup=warmup, threads=threads,
                                   new_tokens=new_tokens, prompt_tokens=prompt_tokens, memory=memory, device=device, dtype=dtype,
                                   sparse_kernels=sparse_kernels)
    for report in reports:
        show_sparse_kernels(report.sparse_kernels, report.spec)
    console.print(speed_table(reports))
    if reports[0].has_lm_head:
        console.print(speed_table(reports, body=True))
    console.print(footprint_table(reports))
    if json_out is not None:
        write_speed_reports(reports, json_out)
