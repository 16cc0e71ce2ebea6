"""Speed and size of a model on the CPU: parameters, bytes, FLOPs, latency, throughput.

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
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict
from rich.table import Table
from safetensors import SafetensorError, safe_open
from torch import nn

from babelprune.errors import BabelpruneError
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.prune.structured.units import layer_layouts, total_block_params

WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors")


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


# ----- sizes ------------------------------------------------------------------------


def unique_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The tensors a save writes: the state dict with tied (shared-storage) tensors once."""
    seen, tensors = set(), []
    for tensor in model.state_dict().values():
        key = (tensor.data_ptr(), tensor.numel())
        if key not in seen:
            seen.add(key)
            tensors.append(tensor)
    return tensors


def weight_files(folder: Path) -> list[Path]:
    """The Hugging Face safetensors weight files directly in `folder`."""
    return sorted({file for pattern in WEIGHT_PATTERNS for file in Path(folder).glob(pattern) if file.is_file()})


def _elements_in(files: list[Path]) -> int | None:
    """Elements stored in safetensors files (read from their headers), None if one is unreadable."""
    total = 0
    try:
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                    total += _numel(handle.get_slice(key).get_shape())
    except (OSError, SafetensorError):
        return None
    return total


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def model_bytes(loaded: LoadedModel) -> tuple[int, str]:
    """(bytes, source): the folder's weight files, or what a safetensors save of the model would write.

    The files count only when they hold as many elements as the model in
    memory, so a model pruned in place after loading (its `path` still
    naming the dense folder) is not credited with the dense folder's size.
    The estimate is the unique tensors' bytes in their current dtypes; it
    leaves out the safetensors header (a few tens of kilobytes).
    """
    tensors = unique_tensors(loaded.model)
    estimate = sum(t.numel() * t.element_size() for t in tensors)
    if loaded.path is not None:
        files = weight_files(loaded.path)
        if files and _elements_in(files) == sum(t.numel() for t in tensors):
            return sum(file.stat().st_size for file in files), "files"
    return estimate, "estimate"


# ----- timing -----------------------------------------------------------------------


def _has_separate_body(model: nn.Module) -> bool:
    adapter = adapter_for(model)
    return adapter.get_lm_head(model) is not None and adapter.base_model(model) is not model


def random_ids(model: nn.Module, batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(batch, seq_len) token ids drawn from the vocabulary with a seeded generator (the first ids, often special, skipped)."""
    vocab = int(model.config.get_text_config().vocab_size)
    low = 4 if vocab > 8 else 0
    return torch.randint(low, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


def forward_probes(loaded: LoadedModel, seq_len: int, batch_size: int, seed: int = 0) -> dict[str, Callable[[], object]]:
    """Calls to time: "latency" (1 sequence), "throughput" (a batch), and their "_body" twins for models with an LM head."""
    model = loaded.model
    single, batch = random_ids(model, 1, seq_len, seed), random_ids(model, batch_size, seq_len, seed + 1)
    probes = {"latency": lambda: model(single), "throughput": lambda: model(batch)}
    if _has_separate_body(model):
        body = adapter_for(model).base_model(model)
        probes |= {"latency_body": lambda: body(single), "throughput_body": lambda: body(batch)}
    return probes


def time_call(call: Callable[[], object]) -> float:
    """Wall seconds of one call (its output dropped before returning)."""
    started = time.perf_counter()
    output = call()
    seconds = time.perf_counter() - started
    del output
    return seconds


# ----- reports ----------------------------------------------------------------------


class SpeedReport(BaseModel):
    """Size and CPU speed of one model; medians over `runs` timed calls after `warmup` calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str
    kind: str
    n_blocks: int
    n_parameters: int  # every parameter, tied ones once
    n_block_parameters: int  # weights and biases of the blocks' attention and FFN linears
    bytes_on_disk: int
    bytes_source: str  # "files": the folder's weight files; "estimate": a safetensors save of the model
    seq_len: int
    batch_size: int
    flops_per_token: int  # with the LM head when there is one
    flops_per_token_body: int  # without it
    has_lm_head: bool
    latency_batch1_ms: float  # one sequence of seq_len tokens, whole model
    throughput_tokens_per_s: float  # batch_size x seq_len tokens, whole model
    latency_body_batch1_ms: float  # the same without the LM head (equal to the above when there is none)
    throughput_body_tokens_per_s: float
    runs: int
    warmup: int
    threads: int
    omp_wait_policy: str | None = None  # OMP_WAIT_POLICY of the process (PASSIVE keeps busy machines fair)
    samples_ms: dict[str, list[float]]  # every timed call, per probe, in run order


def speed_report(loaded: LoadedModel, samples: dict[str, list[float]], seq_len: int, batch_size: int,
                 warmup: int) -> SpeedReport:
    """The report of one model from its timings in seconds per probe (see `forward_probes`)."""
    model, adapter = loaded.model, adapter_for(loaded.model)
    flops = flops_per_token(model, seq_len)
    latency = statistics.median(samples["latency"])
    batch_seconds = statistics.median(samples["throughput"])
    body_latency = statistics.median(samples.get("latency_body", samples["latency"]))
    body_batch = statistics.median(samples.get("throughput_body", samples["throughput"]))
    tokens = batch_size * seq_len
    size, source = model_bytes(loaded)
    return SpeedReport(
        spec=loaded.spec, kind=loaded.kind, n_blocks=len(adapter.get_blocks(model)),
        n_parameters=sum(p.numel() for p in model.parameters()),
        n_block_parameters=total_block_params(model, adapter),
        bytes_on_disk=size, bytes_source=source, seq_len=seq_len, batch_size=batch_size,
        flops_per_token=flops.total, flops_per_token_body=flops.body, has_lm_head=flops.lm_head > 0,
        latency_batch1_ms=1000 * latency, throughput_tokens_per_s=tokens / batch_seconds,
        latency_body_batch1_ms=1000 * body_latency, throughput_body_tokens_per_s=tokens / body_batch,
        runs=len(samples["latency"]), warmup=warmup, threads=torch.get_num_threads(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        samples_ms={name: [round(1000 * s, 4) for s in values] for name, values in samples.items()},
    )


def _check_settings(seq_len: int, batch_size: int, runs: int, warmup: int) -> None:
    if min(seq_len, batch_size, runs) < 1 or warmup < 0:
        raise BabelpruneError(
            f"Sequence length, batch size and runs must be at least 1 and warm-up at least 0 "
            f"(got {seq_len}, {batch_size}, {runs}, {warmup}); fix the options."
        )


def measure_speeds(models: Sequence[LoadedModel], seq_len: int = 128, batch_size: int = 8, runs: int = 5,
                   warmup: int = 2, threads: int | None = None, seed: int = 0) -> list[SpeedReport]:
    """Time several models round-robin so that background load hits them alike; one report each.

    Each round times every probe of every model once; the starting model
    rotates from round to round. `threads` sets torch's intra-op threads for
    the measurement (restored afterwards).
    """
    _check_settings(seq_len, batch_size, runs, warmup)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            probes = [forward_probes(loaded, seq_len, batch_size, seed) for loaded in models]
            for model_probes in probes:
                for call in model_probes.values():
                    for _ in range(warmup):
                        time_call(call)
            samples = [{name: [] for name in model_probes} for model_probes in probes]
            for run in range(runs):
                for offset in range(len(models)):
                    index = (run + offset) % len(models)
                    for name, call in probes[index].items():
                        samples[index][name].append(time_call(call))
            return [speed_report(loaded, s, seq_len, batch_size, warmup) for loaded, s in zip(models, samples)]
    finally:
        torch.set_num_threads(previous)


def measure_speed(loaded: LoadedModel, seq_len: int = 128, batch_size: int = 8, runs: int = 5, warmup: int = 2,
                  threads: int | None = None, seed: int = 0) -> SpeedReport:
    """Size and CPU speed of one model (see the module docstring)."""
    return measure_speeds([loaded], seq_len, batch_size, runs, warmup, threads, seed)[0]


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
