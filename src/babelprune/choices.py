"""The fixed sets of values that options take, in one light module.

The library's configs and the command line both read these, so a flag and a
config field cannot disagree, and `babelprune --help` lists the values
without importing torch.
"""

from __future__ import annotations

import math
from typing import Literal

from babelprune.errors import BabelpruneError

# One-shot pruning (babelprune.prune.config). The methods themselves are no fixed set: they are the names
# registered in babelprune.prune.methods.METHODS, which the config and `babelprune prune --method` read.
Score = Literal["wanda", "ria"]  # the score M-Wanda's feature term enters
Allocation = Literal["uniform", "owl", "cwl"]
Setting = Literal["shared", "per-language"]
Order = Literal["one-pass", "two-pass"]
StorageFormat = Literal["hf", "sparse", "both"]
ValuesDtype = Literal["fp32", "fp16", "bf16"]  # the type of the sparse copy's values (babelprune.formats.pruned)
Balance = Literal["languages", "tokens"]  # how calibration languages count (babelprune.prune.balance)
RefitSolver = Literal["pcg", "exact"]  # babelprune.prune.reconstruct
LanguageBudget = Literal["none", "minimax"]  # babelprune.prune.budget
# Windows per forward while pruning (babelprune.prune.config): 8 windows of 256 tokens keep a block's
# activations small next to the model, in matrix products still large enough to run at full speed
# (docs/results/prune_memory.md).
CALIB_BATCH = 8
Offload = Literal["none", "disk"]  # disk: one block's weights in memory at a time (babelprune.prune.offload)
# Where the weights stay while one-shot pruning runs on a device (babelprune.prune.onload). sequential: on the
# CPU (or disk), each block moved to the device while it is pruned; none: the whole model on the device;
# auto: sequential on an accelerator, none on the CPU (where the two are the same).
Onload = Literal["auto", "sequential", "none"]
# `eval --onload`: the whole model on --device (none), or its weights in CPU memory and one block there at a time.
EvalOnload = Literal["none", "sequential"]

# Where a model runs and in which floating-point type (babelprune.devices resolves both).
# A device is text rather than a Literal, since "cuda:N" names any of N cards: "auto" (CUDA if
# present, else MPS, else the CPU), "cpu", "cuda", "cuda:0", "cuda:1"..., "mps".
DeviceName = str
DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"
# "auto": float32 on the CPU and MPS, bfloat16 on a CUDA card that supports it, else float16.
ModelDtype = Literal["auto", "float32", "bfloat16", "float16"]
# Which sparse kernels a model's block linears run with on a CUDA card (babelprune.evaluate.semi_structured):
# none: dense matrix products; 2:4: every block linear whose weight is 2:4 along its inputs becomes a
# semi-structured tensor (torch.sparse.to_sparse_semi_structured: cuSPARSELt or CUTLASS).
SparseKernels = Literal["none", "2:4"]

# Export to single-file formats (babelprune.formats.gguf).
ExportFormat = Literal["gguf"]
GgufDtype = Literal["f32", "f16"]
# llama.cpp's quantization mixes `export --quant` offers (its LLAMA_FTYPE_MOSTLY_* names), finest first.
GgufQuant = Literal["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
# What computes a model's logits in `eval`: torch (an HF model) or llama.cpp (a GGUF file, babelprune.evaluate.llama_cpp).
Runtime = Literal["torch", "llama.cpp"]


class RefitDefaults:
    """Defaults of --reconstruct's knobs, here so that `--help` shows them without importing torch.

    Chosen on development languages, not the evaluation ones: benchmarks/refit_knobs.py.
    """

    damp = 0.1
    shrink = 0.0
    iterations = 5

# Structured pruning (babelprune.prune.structured).
StructuredUnit = Literal["heads", "ffn", "blocks"]
ShrinkGoal = Literal["size", "speed"]  # what `babelprune shrink` minimises: bytes as served, or latency
StructuredImportance = Literal["magnitude", "gradient", "activation", "l0", "balanced"]
DynamicImportance = Literal["magnitude", "gradient", "activation", "balanced"]
GqaMode = Literal["groups", "query"]
Ranking = Literal["global", "per-layer"]

# Corpora.
Split = Literal["calib", "eval", "all"]
# A language's resource level (babelprune.data.languages, after Joshi et al. 2020). Here, at the bottom,
# so that the typed records (babelprune.records) can name it without importing the data package.
ResourceLevel = Literal["high", "medium", "low"]

# Sweeps (babelprune.sweep): where the runs of an experiment run.
SweepBackend = Literal["local", "ray"]

# Fine-tuning (the training modes of babelprune.data.tasks; babelprune.prune.gradual).
TrainingMode = Literal["zero-shot", "multilingual", "monolingual"]
GmpScope = Literal["per-layer", "global"]


def check_sparsity(sparsity: float) -> float:
    """Return `sparsity` as a float if it lies in [0, 1), else raise BabelpruneError.

    Here, at the bottom, because configs, the pruning engine and the formats
    (slicing a dynamic model) all check a sparsity the same way.
    """
    if not isinstance(sparsity, (int, float)) or not math.isfinite(sparsity):
        raise BabelpruneError(f"Sparsity {sparsity!r} is not a number; give a fraction such as 0.5.")
    if not 0.0 <= sparsity < 1.0:
        raise BabelpruneError(
            f"Sparsity {sparsity} is outside [0, 1); give the fraction of weights to remove, e.g. 0.5."
        )
    return float(sparsity)
