"""Speed and size of a model on the CPU: parameters, bytes, FLOPs, latency, throughput, generation, memory.

Structured pruning makes matrices smaller, but a smaller model is not
always a proportionally faster one (Li et al., ACL 2022, "fast is not
small"). This module measures both sides on one footing:

    reports = measure_speeds([dense, pruned], seq_len=128, batch_size=8, runs=7)
    console.print(speed_table(reports))

FLOPs per token (`flops_per_token`), at sequence length L, counting a
multiply-accumulate as 2 FLOPs:

* linears: 2 * in * out for every attention and FFN linear of every block
  (bias additions are not counted);
* attention: 4 * H * d * L per block, with H the block's query heads and d
  the head width: each query scores L keys (2*d*L) and mixes L values
  (2*d*L). All L positions are counted, as dense kernels compute the full
  L x L matrix; causal masking and sliding windows are not subtracted;
* LM head: 2 * hidden * vocab, when the model has a vocabulary projection
  (the head FLOPs are reported apart: "body" excludes them).

Norms, activations, softmax, rotary embeddings, residual additions, the
embedding lookup, BERT's pooler and MLM transform are left out: they grow
with the hidden width, not its square, and are a few percent at most.

Timing: inference mode, the same seeded random token ids every run, `warmup`
untimed calls then the median of `runs` timed ones. Latency is one sequence
of `seq_len` tokens; throughput is `batch_size` sequences at once. A causal
LM is timed as users call it, `model(input_ids)` including the LM head, and
its body alone (the base model, no vocabulary projection) as well, since a
large vocabulary can dominate the cost. Several models are timed
round-robin (dense, pruned, dense, pruned, ...), so a busy machine slows
them alike. On a machine shared with other processes, OpenMP threads that
spin while they wait (the default) can make a multi-threaded run many times
slower than one thread; start the process with OMP_WAIT_POLICY=PASSIVE (it
must be set before torch is imported; the report records it).

Generation (`new_tokens` > 0, causal LMs): `model.generate` at batch 1,
greedy, `new_tokens` new tokens after a seeded prompt of `prompt_tokens`
ids, timed round-robin with the other probes; the report gives the median
wall time of one whole call (prompt included) divided by the new tokens.
Encoders do not generate (None, shown as n/a).

Bytes: see evaluate/sizes.py (the weights as stored, and the whole folder).
Peak memory (`memory=True`): each model is loaded again in a fresh process
that runs every probe once, after the timing (see evaluate/memory.py).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table
from torch import nn

from babelprune.choices import SparseKernels
from babelprune.devices import dtype_name
from babelprune.errors import BabelpruneError
from babelprune.evaluate.memory import measure_peak_memory, memory_source
from babelprune.evaluate.probes import all_probes, time_call
from babelprune.evaluate.semi_structured import converted_models
from babelprune.evaluate.sizes import folder_bytes, model_bytes, stored_weights
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.models.layouts import layer_layouts, total_block_params
from babelprune.records.kernels import SparseKernelRecord
from babelprune.records.speed import PeakMemory, SpeedReport, is_speed_reports_file  # noqa: F401 - re-exported: the records live below

__all__ = ["SpeedReport", "flops_per_token", "measure_speed", "measure_speeds", "model_bytes", "speed_markdown",
           "speed_ratios", "speed_table", "footprint_markdown", "footprint_table"]


# ----- FLOPs ------------------------------------------------------------------------


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per token at one sequence length (see the module docstring for the formula)."""

    linears: int  # block attention + FFN linears
    attention: int  # scores and context over seq_len positions
    lm_head: int  # vocabulary projection, 0 when there is none
    seq_len: int

    @property
    def body(self) -> int:
        return self.linears + self.attention

    @property
    def total(self) -> int:
        return self.body + self.lm_head


def flops_per_token(model: nn.Module, seq_len: int) -> FlopCount:
    """FLOPs one token costs in `model` at sequence length `seq_len`, from the weight shapes."""
    if seq_len < 1:
        raise BabelpruneError(f"Sequence length must be at least 1, got {seq_len}; give a positive --seq-len.")
    adapter = adapter_for(model)
    linears = 0
    for block in adapter.get_blocks(model):
        linears += sum(weight_matrix(linear).numel() for linear in adapter.block_linears(block).values())
    # Per block: H query heads of width d each score and mix seq_len positions.
    attention = sum(4 * layout.n_heads * layout.head_dim * seq_len for layout in layer_layouts(model, adapter))
    head = adapter.get_lm_head(model)
    head_macs = weight_matrix(head).numel() if head is not None else 0
    return FlopCount(linears=2 * linears, attention=attention, lm_head=2 * head_macs, seq_len=seq_len)


# ----- reports ----------------------------------------------------------------------


def _new_tokens(counts: list[int], spec: str) -> int:
    """The number of tokens every generate call produced (they must agree)."""
    if len(set(counts)) != 1:
        raise BabelpruneError(f"{spec} generated different numbers of tokens from one run to the next ({sorted(set(counts))}); "
                              "report this model, its generation config stops early.")
    return counts[0]


def speed_report(loaded: LoadedModel, samples: dict[str, list[float]], seq_len: int, batch_size: int,
                 warmup: int, generated: list[int] | None = None, prompt_tokens: int | None = None,
                 memory: PeakMemory | None = None, sparse_kernels: SparseKernelRecord | None = None) -> SpeedReport:
    """The report of one model from its timings in seconds per probe (see evaluate/probes.py).

    generated: the new tokens of each timed generate call (a "generate" probe was timed).
    sparse_kernels: which block linears were timed as semi-structured weights (the model is dense again here).
    """
    model, adapter = loaded.model, adapter_for(loaded.model)
    flops = flops_per_token(model, seq_len)
    latency = statistics.median(samples["latency"])
    batch_seconds = statistics.median(samples["throughput"])
    body_latency = statistics.median(samples.get("latency_body", samples["latency"]))
    body_batch = statistics.median(samples.get("throughput_body", samples["throughput"]))
    tokens = batch_size * seq_len
    size, source = model_bytes(loaded)
    generation = {}
    if "generate" in samples:
        new = _new_tokens(generated or [0], loaded.spec)
        generation = dict(prompt_tokens=prompt_tokens, new_tokens=new,
                          generate_ms_per_token=1000 * statistics.median(samples["generate"]) / new)
    return SpeedReport(
        spec=loaded.spec, kind=loaded.kind, n_blocks=len(adapter.get_blocks(model)),
        n_parameters=sum(p.numel() for p in model.parameters()),
        n_nonzero_parameters=sum(int(torch.count_nonzero(p)) for p in model.parameters()),
        n_block_parameters=total_block_params(model, adapter),
        bytes_on_disk=size, bytes_source=source, folder_bytes=folder_bytes(loaded), seq_len=seq_len, batch_size=batch_size,
        flops_per_token=flops.total, flops_per_token_body=flops.body, has_lm_head=flops.lm_head > 0,
        latency_batch1_ms=1000 * latency, throughput_tokens_per_s=tokens / batch_seconds,
        latency_body_batch1_ms=1000 * body_latency, throughput_body_tokens_per_s=tokens / body_batch,
        runs=len(samples["latency"]), warmup=warmup, threads=torch.get_num_threads(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        samples_ms={name: [round(1000 * s, 4) for s in values] for name, values in samples.items()},
        memory=memory, device=str(loaded.device), dtype=dtype_name(loaded.dtype), sparse_kernels=sparse_kernels, **generation,
    )


def _check_settings(seq_len: int, batch_size: int, runs: int, warmup: int, new_tokens: int, prompt_tokens: int) -> None:
    if min(seq_len, batch_size, runs, prompt_tokens) < 1 or min(warmup, new_tokens) < 0:
        raise BabelpruneError(
            f"Sequence length, batch size, runs and prompt tokens must be at least 1, warm-up and new tokens at least 0 "
            f"(got {seq_len}, {batch_size}, {runs}, {prompt_tokens}, {warmup}, {new_tokens}); fix the options."
        )


def _memory_sources(models: Sequence[LoadedModel]) -> list[str]:
    """What each model's memory process loads, checked before any timing (a model changed in memory is refused)."""
    return [memory_source(loaded, stored_weights(loaded) is not None) for loaded in models]


def measure_speeds(models: Sequence[LoadedModel], seq_len: int = 128, batch_size: int = 8, runs: int = 5,
                   warmup: int = 2, threads: int | None = None, seed: int = 0, *, new_tokens: int = 0,
                   prompt_tokens: int = 16, memory: bool = False, sparse_kernels: SparseKernels = "none") -> list[SpeedReport]:
    """Time several models round-robin so that background load hits them alike; one report each.

    Each round times every probe of every model once; the starting model
    rotates from round to round. `threads` sets torch's intra-op threads for
    the measurement (restored afterwards). `new_tokens` > 0 also times greedy
    generation at batch 1 (causal LMs); `memory` then measures each model's
    peak resident memory in a fresh process, one model after the other.
    `sparse_kernels="2:4"` times every model with its 2:4 block linears as semi-structured weights
    (a CUDA device in float16 or bfloat16; see evaluate/semi_structured.py); sizes, FLOPs and
    non-zero counts are read from the dense weights, restored after the timing.
    """
    _check_settings(seq_len, batch_size, runs, warmup, new_tokens, prompt_tokens)
    sources = _memory_sources(models) if memory else None
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with converted_models(list(models), sparse_kernels) as kernel_records, torch.inference_mode():
            generated: list[list[int]] = [[] for _ in models]
            probes = [all_probes(loaded, seq_len, batch_size, new_tokens, prompt_tokens, counts, seed)
                      for loaded, counts in zip(models, generated)]
            for loaded, model_probes in zip(models, probes):
                for call in model_probes.values():
                    for _ in range(warmup):
                        time_call(call, loaded.device)
            for counts in generated:
                counts.clear()  # only the timed calls count
            samples = [{name: [] for name in model_probes} for model_probes in probes]
            for run in range(runs):
                for offset in range(len(models)):
                    index = (run + offset) % len(models)
                    for name, call in probes[index].items():
                        samples[index][name].append(time_call(call, models[index].device))
        memories = [measure_peak_memory(source, seq_len, batch_size, new_tokens, prompt_tokens, threads, seed, dtype_name(loaded.dtype))
                    for source, loaded in zip(sources, models)] if sources else [None] * len(models)
        return [speed_report(loaded, s, seq_len, batch_size, warmup, counts, prompt_tokens, peak, record)
                for loaded, s, counts, peak, record in zip(models, samples, generated, memories, kernel_records)]
    finally:
        torch.set_num_threads(previous)


def measure_speed(loaded: LoadedModel, seq_len: int = 128, batch_size: int = 8, runs: int = 5, warmup: int = 2,
                  threads: int | None = None, seed: int = 0, *, new_tokens: int = 0, prompt_tokens: int = 16,
                  memory: bool = False) -> SpeedReport:
    """Size and CPU speed of one model (see the module docstring)."""
    return measure_speeds([loaded], seq_len, batch_size, runs, warmup, threads, seed, new_tokens=new_tokens,
                          prompt_tokens=prompt_tokens, memory=memory)[0]


# ----- comparison tables ------------------------------------------------------------


@dataclass(frozen=True)
class SpeedRatios:
    """One model against a reference (the dense model): sizes as shares, speed as speedups."""

    parameters: float  # model / reference
    block_parameters: float
    bytes: float
    flop_reduction: float  # reference FLOPs / model FLOPs
    latency_speedup: float  # reference latency / model latency
    throughput_speedup: float  # model throughput / reference throughput

    @property
    def latency_efficiency(self) -> float:
        """Measured latency speedup per unit of FLOP reduction (1.0: speed follows FLOPs)."""
        return self.latency_speedup / self.flop_reduction

    @property
    def throughput_efficiency(self) -> float:
        return self.throughput_speedup / self.flop_reduction


def speed_ratios(reference: SpeedReport, report: SpeedReport, body: bool = False) -> SpeedRatios:
    """Ratios of `report` to `reference`; `body` compares the figures without the LM head."""
    flops = (reference.flops_per_token_body / report.flops_per_token_body) if body else (
        reference.flops_per_token / report.flops_per_token)
    latency = (reference.latency_body_batch1_ms / report.latency_body_batch1_ms) if body else (
        reference.latency_batch1_ms / report.latency_batch1_ms)
    throughput = (report.throughput_body_tokens_per_s / reference.throughput_body_tokens_per_s) if body else (
        report.throughput_tokens_per_s / reference.throughput_tokens_per_s)
    return SpeedRatios(
        parameters=report.n_parameters / reference.n_parameters,
        block_parameters=report.n_block_parameters / reference.n_block_parameters,
        bytes=report.bytes_on_disk / reference.bytes_on_disk,
        flop_reduction=flops, latency_speedup=latency, throughput_speedup=throughput,
    )


# Sizes and FLOPs show (model / first model); latency and tokens/s show the speedup over the first model.
SPEED_COLUMNS = (
    "model", "params M", "block params M", "disk MB", "MFLOP/token", "latency ms (speedup)", "tokens/s (speedup)",
    "FLOP reduction", "speedup/FLOP red. b1", "speedup/FLOP red. batch",
)


def _speed_rows(reports: Sequence[SpeedReport], body: bool, labels: Sequence[str] | None) -> list[list[str]]:
    reference, rows = reports[0], []
    for index, report in enumerate(reports):
        r = speed_ratios(reference, report, body)
        flops = report.flops_per_token_body if body else report.flops_per_token
        latency = report.latency_body_batch1_ms if body else report.latency_batch1_ms
        throughput = report.throughput_body_tokens_per_s if body else report.throughput_tokens_per_s
        rows.append([
            labels[index] if labels else report.spec,
            f"{report.n_parameters / 1e6:.1f} ({r.parameters:.2f}x)",
            f"{report.n_block_parameters / 1e6:.2f} ({r.block_parameters:.2f}x)",
            f"{report.bytes_on_disk / 1e6:.0f} ({r.bytes:.2f}x)",
            f"{flops / 1e6:.1f} ({1 / r.flop_reduction:.2f}x)",
            f"{latency:.1f} ({r.latency_speedup:.2f}x)",
            f"{throughput:.0f} ({r.throughput_speedup:.2f}x)",
            f"{r.flop_reduction:.2f}x",
            f"{r.latency_efficiency:.2f}",
            f"{r.throughput_efficiency:.2f}",
        ])
    return rows


def _title(reports: Sequence[SpeedReport], body: bool) -> str:
    if not reports:
        raise BabelpruneError("No speed reports to tabulate; measure at least one model.")
    first = reports[0]
    part = "body only (no LM head)" if body else "whole model"
    return (f"Speed and size, {part}: seq {first.seq_len}, batch {first.batch_size} for tokens/s, "
            f"{first.threads} threads, median of {first.runs} runs; ratios to {first.spec}")


def speed_table(reports: Sequence[SpeedReport], body: bool = False, labels: Sequence[str] | None = None) -> Table:
    """Side by side, each model with its ratio to the first (the dense model)."""
    table = Table(title=_title(reports, body))
    for name in SPEED_COLUMNS:
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in _speed_rows(reports, body, labels):
        table.add_row(*row)
    return table


def speed_markdown(reports: Sequence[SpeedReport], body: bool = False, labels: Sequence[str] | None = None) -> str:
    """The same table in Markdown."""
    lines = [f"*{_title(reports, body)}*", "", "| " + " | ".join(SPEED_COLUMNS) + " |", "|" + "---|" * len(SPEED_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _speed_rows(reports, body, labels)]
    return "\n".join(lines) + "\n"


# ----- generation, disk and memory ----------------------------------------------------

FOOTPRINT_COLUMNS = (
    "model", "weights MB (stored as)", "folder MB", "non-zero params M", "generate ms/token b1 (speedup)",
    "peak RSS MB (ratio)",
)


def _share(value: float | None, reference: float | None, digits: int = 0) -> str:
    """'value (value / reference x)', 'n/a' without a value, no ratio without a reference."""
    if value is None:
        return "n/a"
    ratio = f" ({value / reference:.2f}x)" if reference else ""
    return f"{value:.{digits}f}{ratio}"


def _footprint_rows(reports: Sequence[SpeedReport], labels: Sequence[str] | None) -> list[list[str]]:
    reference, rows = reports[0], []
    mb = lambda value: None if value is None else value / 1e6  # noqa: E731
    peak = lambda report: report.memory.peak if report.memory else None  # noqa: E731
    for index, report in enumerate(reports):
        generate = report.generate_ms_per_token
        speedup = (f" ({reference.generate_ms_per_token / generate:.2f}x)"
                   if generate is not None and reference.generate_ms_per_token else "")
        nonzero = report.n_nonzero_parameters
        rows.append([
            labels[index] if labels else report.spec,
            f"{_share(mb(report.bytes_on_disk), mb(reference.bytes_on_disk))} {report.bytes_source}",
            _share(mb(report.folder_bytes), mb(reference.folder_bytes)),
            _share(None if nonzero is None else nonzero / 1e6, (reference.n_nonzero_parameters or 0) / 1e6, 1),
            "n/a" if generate is None else f"{generate:.1f}{speedup}",
            _share(mb(peak(report)), mb(peak(reference))),
        ])
    return rows


def _footprint_title(reports: Sequence[SpeedReport]) -> str:
    if not reports:
        raise BabelpruneError("No speed reports to tabulate; measure at least one model.")
    first = reports[0]
    generated = next((r for r in reports if r.new_tokens), None)
    generation = (f"generate: batch 1, greedy, {generated.new_tokens} new tokens after {generated.prompt_tokens} prompt tokens, "
                  f"median whole call / new tokens" if generated else "generation not measured")
    memory = ("peak RSS: a fresh process per model, loading it and running each probe once"
              if any(r.memory for r in reports) else "peak RSS not measured")
    return f"Disk, generation and memory: {generation}; {memory}; ratios to {first.spec}"


def footprint_table(reports: Sequence[SpeedReport], labels: Sequence[str] | None = None) -> Table:
    """Bytes on disk (weights as stored, whole folder), non-zero parameters, generation latency and peak memory."""
    table = Table(title=_footprint_title(reports))
    for name in FOOTPRINT_COLUMNS:
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in _footprint_rows(reports, labels):
        table.add_row(*row)
    return table


def footprint_markdown(reports: Sequence[SpeedReport], labels: Sequence[str] | None = None) -> str:
    """The same table in Markdown."""
    lines = [f"*{_footprint_title(reports)}*", "", "| " + " | ".join(FOOTPRINT_COLUMNS) + " |",
             "|" + "---|" * len(FOOTPRINT_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _footprint_rows(reports, labels)]
    return "\n".join(lines) + "\n"
