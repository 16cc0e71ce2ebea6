"""What `babelprune bench-speed` measures of one model: its size, speed and peak memory (pydantic only, no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from babelprune.records.kernels import SparseKernelRecord


class PeakMemory(BaseModel):
    """Resident bytes of a fresh process that loaded one model and ran its probes once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: int  # after the imports, before loading
    loaded: int  # right after loading
    peak: int  # the process's peak (VmHWM), loading and running included


class SpeedReport(BaseModel):
    """Size and CPU speed of one model; medians over `runs` timed calls after `warmup` calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str
    kind: str
    n_blocks: int
    n_parameters: int  # every parameter, tied ones once
    n_block_parameters: int  # weights and biases of the blocks' attention and FFN linears
    bytes_on_disk: int  # the weights as stored (see bytes_source)
    # "files": the folder's HF weight files; "sparse": its sparse copy (a folder with no HF weights);
    # "estimate": a safetensors save of the model (no folder matches it)
    bytes_source: str
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
    n_nonzero_parameters: int | None = None  # parameters that are not zero (tied ones once)
    folder_bytes: int | None = None  # every file under the model's folder; None when no folder matches the model
    # Generation at batch 1, greedy (None: an encoder, or not measured)
    prompt_tokens: int | None = None
    new_tokens: int | None = None  # new tokens every timed generate call produced
    generate_ms_per_token: float | None = None  # median wall time of one generate call / new_tokens
    memory: PeakMemory | None = None  # a fresh process that loaded the model and ran each probe once
    device: str | None = None  # where the model ran ("cpu", "cuda:0", "mps"); None in reports made before the choice existed
    dtype: str | None = None  # the type of its weights ("float32", "bfloat16"); None likewise
    # With --sparse-kernels 2:4: which block linears were timed as semi-structured weights, which stayed dense and why.
    sparse_kernels: SparseKernelRecord | None = None
    runtime: Literal["torch"] = "torch"  # what ran the model (llama.cpp's reports are LlamaCppSpeedReport)


class LlamaCppSpeedReport(BaseModel):
    """Speed of one GGUF file in llama.cpp on the CPU at batch 1; medians over `runs` timed runs after `warmup` runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["llama.cpp"] = "llama.cpp"
    spec: str  # the .gguf path as given
    architecture: str  # general.architecture
    file_type: str  # general.file_type: "F32", "Q4_K_M"...
    n_parameters: int  # elements of every tensor in the file
    bytes_on_disk: int  # the file's size
    llama_cpp_python: str
    llama_cpp: str | None = None  # the llama.cpp build, when llama-cpp-python says
    threads: int | None  # llama.cpp's threads (None: its default)
    seq_len: int  # tokens of the prompt whose processing is timed
    prompt_tokens_per_s: float  # seq_len tokens decoded at once, from an empty context
    prompt_tokens: int  # the prompt before generation (not timed)
    new_tokens: int  # tokens generated one at a time, greedily, per timed run
    generate_tokens_per_s: float | None  # None when new_tokens is 0
    runs: int
    warmup: int
    samples_ms: dict[str, list[float]]  # every timed run, per probe ("prompt", "generate"), in run order


def is_speed_reports_file(path: Path) -> bool:
    """Whether `path` holds the JSON list that `babelprune bench-speed --json` writes (so --overwrite may replace it)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # The required fields only: a report written before an optional field existed is still one.
    shapes = [{name for name, field in record.model_fields.items() if field.is_required()}
              for record in (SpeedReport, LlamaCppSpeedReport)]
    return isinstance(payload, list) and bool(payload) and all(
        isinstance(item, dict) and any(fields <= item.keys() for fields in shapes) for item in payload)
