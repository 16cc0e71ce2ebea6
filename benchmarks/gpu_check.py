"""Pruning on an accelerator: the same masks as on the CPU, the time and memory at Llama-3-8B size, 2:4 speed.

    python benchmarks/gpu_check.py [--blocks 32] [--samples 128] [--seq-len 2048]
    python benchmarks/gpu_check.py --tiny [--out FOLDER]

Sections of the table (docs/results/gpu_check.md):

1. Agreement. Every tiny random family (tests/tiny_models.py) and a random
   model of gemma3-270m's shape, pruned at 50% in float32 on the CPU and on
   the accelerator. wanda and mwanda (uniform allocation, so that only the
   masks are compared): entries whose mask differs, and those of them whose
   CPU score is farther than TIE_RTOL (relative) from its row's cut, which
   are real disagreements rather than ties. sparsegpt and the recommended
   configuration (mwanda + cwl + refit): relative Frobenius error of the
   accelerator's pruned weights against the CPU's, held to WEIGHT_RTOL.
   wanda again with sequential onloading (the model on the CPU, each block
   moved to the accelerator while it is pruned: what `prune --device cuda`
   does), against the CPU.
2. Scale. A random Llama-3-8B-shaped model in bfloat16 kept on the CPU,
   pruned with sequential onloading (the engine's `onload=`: each block
   moved to the accelerator for its statistics and pruning, the inputs of
   the first block computed on the CPU), at 50% on --samples x --seq-len
   random tokens with wanda, with the recommended configuration, and with
   wanda under an activation budget of a quarter of the hidden states
   (streamed from pinned CPU memory by micro-batch): pruning time over one
   forward pass of the blocks on the same tokens, onloaded the same way, and
   peak accelerator memory over one block's bytes, next to the targets.
3. 2:4 speed. 2:4-pruned linears as torch.sparse semi-structured tensors
   against dense, per weight shape and token count, and a whole small model.

--tiny runs every section at a tiny size on whatever device there is (the
CPU "accelerator" is then the CPU again, and the table says so), in
seconds, so that the tests keep the script working. The full run needs
CUDA and about 10 minutes on one H100.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from _common import REPO, timed_median, write_result_table

# The tiny families are the test suite's own (one definition of "every family").
sys.path.insert(0, str(REPO))
from tests.tiny_models import TINY_FAMILIES, tiny_config  # noqa: E402

BENCHMARK = {"minutes": 10, "needs": "cuda"}

SPARSITY = 0.5
TIE_RTOL = 1e-4  # a flipped entry this close (relative) to its row's cut is a tie, not a disagreement
WEIGHT_RTOL = 1e-2  # relative Frobenius error allowed between devices for sparsegpt and the refit
LANGUAGES = ("aa", "bb")  # CWL compares languages, so the random calibration has two
TARGET_WANDA = 1.3  # x one forward pass
TARGET_RECOMMENDED = 3.0
TARGET_MEMORY_MARGIN = 1.2  # over the peak of a forward pass (one block, its activations, embeddings)

LLAMA3_8B = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
)
GEMMA3_270M = dict(
    vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
    num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
    max_position_embeddings=32768, rope_theta=1000000.0, rope_local_base_freq=10000.0,
)
# --tiny keeps gemma3-270m's layout (1 key/value head, sliding and global blocks) at a size 2 shared cores prune in seconds.
GEMMA3_TINY_SIZES = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=32,
                         query_pre_attn_scalar=32, sliding_window=16)
SPARSE_SHAPES = ((4096, 4096), (14336, 4096), (4096, 14336))  # weight (out, in): q/o, gate/up, down of Llama-3-8B
SPARSE_TOKENS = (1, 16, 2048)  # rows of the input: one token, 16 tokens, 16 windows x 128 tokens


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="every section at a tiny size, on the CPU if there is no GPU")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.md (default: docs/results, or $BENCHMARK_RESULTS_DIR)")
    parser.add_argument("--blocks", type=int, default=32, help="blocks of the Llama-3-8B-shaped model")
    parser.add_argument("--samples", type=int, default=128, help="calibration windows of the scale section")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per calibration window of the scale section")
    return parser.parse_args(argv)


# ----- shared pieces ------------------------------------------------------------------


def recommended() -> object:
    from babelprune.prune.config import PruneConfig

    return PruneConfig(method="mwanda", allocation="cwl", reconstruct={}, sparsity=SPARSITY)


def random_calibration(vocab: int, windows: int, seq_len: int, seed: int = 0):
    """`windows` random token windows per language (ids from 4 on: the first ids are often special)."""
    from babelprune.prune.calibration import Calibration

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (len(LANGUAGES) * windows, seq_len), generator=generator)
    labels = tuple(lang for lang in LANGUAGES for _ in range(windows))
    return Calibration(ids, labels, "random")


def as_loaded(model: nn.Module, spec: str):
    from babelprune.models.base import LoadedModel, model_kind

    return LoadedModel(model=model, tokenizer=None, spec=spec, path=None, kind=model_kind(model.config))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ----- 1. agreement -------------------------------------------------------------------


@contextlib.contextmanager
def cut_neighbourhoods() -> Iterator[dict[int, torch.Tensor]]:
    """While active, every scored layer's entries within TIE_RTOL of their cut, keyed by the weight's storage.

    All score-based methods choose their mask through methods.mask_from_scores,
    so wrapping it sees each layer's scores exactly as the engine computed them.
    """
    from babelprune.prune import methods

    near: dict[int, torch.Tensor] = {}
    original = methods.mask_from_scores

    def recording(scores, task):
        near[task.weight.data_ptr()] = near_cut(scores, task.sparsity, task.config.per_row).cpu()
        return original(scores, task)

    methods.mask_from_scores = recording
    try:
        yield near
    finally:
        methods.mask_from_scores = original


def near_cut(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Entries whose score lies within TIE_RTOL of the k-th lowest score of their row (or layer)."""
    from babelprune.prune.kernels import pruned_count

    grouped = scores.float() if per_row else scores.float().reshape(1, -1)
    k = pruned_count(grouped.shape[1], sparsity)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    cut = torch.kthvalue(grouped, k, dim=1, keepdim=True).values
    return ((grouped - cut).abs() <= TIE_RTOL * cut.abs()).reshape(scores.shape)


def block_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    from babelprune.models.adapters import adapter_for, named_linears, weight_matrix

    return {name: weight_matrix(linear) for name, linear in named_linears(model, adapter_for(model)).items()}


def pruned_pair(model: nn.Module, config, calibration, device: torch.device, record: bool, onload: bool = False):
    """(CPU copy, accelerator copy) of `model` pruned with `config`; the CPU's cut neighbourhoods when `record`.

    `onload`: the accelerator's copy stays on the CPU and each block is moved to the accelerator while it is pruned.
    """
    from babelprune.prune.engine import prune

    on_cpu = copy.deepcopy(model)
    on_device = copy.deepcopy(model) if onload else copy.deepcopy(model).to(device)
    with cut_neighbourhoods() if record else contextlib.nullcontext({}) as near:
        prune(as_loaded(on_cpu, "cpu copy"), config, calibration, progress=False)
    prune(as_loaded(on_device, "device copy"), config, calibration, progress=False, onload=device if onload else None)
    return on_cpu, on_device, near


def mask_agreement(model: nn.Module, method: str, calibration, device: torch.device, onload: bool = False) -> tuple[int, int, int]:
    """(entries, entries whose mask differs, those of them beyond ties) for one score method."""
    from babelprune.prune.config import PruneConfig

    config = PruneConfig(method=method, allocation="uniform", sparsity=SPARSITY)
    on_cpu, on_device, near = pruned_pair(model, config, calibration, device, record=True, onload=onload)
    entries = differ = beyond = 0
    device_weights = block_weights(on_device)
    for name, weight in block_weights(on_cpu).items():
        flipped = (weight == 0) != (device_weights[name] == 0).cpu()
        entries += weight.numel()
        differ += int(flipped.sum())
        beyond += int((flipped & ~near[weight.data_ptr()]).sum())
    return entries, differ, beyond


def weight_agreement(model: nn.Module, config, calibration, device: torch.device) -> float:
    """Relative Frobenius error of the accelerator's pruned block weights against the CPU's."""
    on_cpu, on_device, _ = pruned_pair(model, config, calibration, device, record=False)
    device_weights = block_weights(on_device)
    error = norm = 0.0
    for name, weight in block_weights(on_cpu).items():
        reference = weight.double()
        error += float((device_weights[name].cpu().double() - reference).square().sum())
        norm += float(reference.square().sum())
    return (error / norm) ** 0.5


def agreement_models(tiny: bool) -> Iterator[tuple[str, nn.Module]]:
    """Every tiny family, then the gemma3-270m-shaped model (2 blocks and a small vocabulary with --tiny)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from tests.tiny_models import tiny_model

    for family in TINY_FAMILIES:
        yield family, tiny_model(family)
    shape = dict(GEMMA3_270M, **GEMMA3_TINY_SIZES) if tiny else GEMMA3_270M
    blocks = shape["num_hidden_layers"]
    # gemma3-270m alternates five sliding-window blocks and one global block.
    types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(blocks)]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Gemma3TextConfig(**shape, layer_types=types))
    label = "gemma3-270m layout, tiny sizes" if tiny else "gemma3-270m shape"
    yield label, model.float().eval()


def agreement_section(tiny: bool, device: torch.device) -> str:
    rows = []
    for label, model in agreement_models(tiny):
        vocab = model.config.get_text_config().vocab_size
        seq_len = 32 if tiny or label in TINY_FAMILIES else 128
        calibration = random_calibration(vocab, windows=2, seq_len=seq_len)
        for method, onload in (("wanda", False), ("mwanda", False), ("wanda", True)):
            entries, differ, beyond = mask_agreement(model, method, calibration, device, onload)
            verdict = "ok" if beyond == 0 else "DISAGREE"
            name = f"{method}, onloaded" if onload else method
            rows.append([label, name, f"cpu vs {device}", entries, differ, beyond, "", verdict])
        for name, config in (("sparsegpt", sparsegpt_config()), ("recommended", recommended())):
            error = weight_agreement(model, config, calibration, device)
            verdict = "ok" if error <= WEIGHT_RTOL else "DISAGREE"
            rows.append([label, name, f"cpu vs {device}", "", "", "", f"{error:.2e}", verdict])
        print(f"agreement: {label} done", flush=True)
    header = ["model", "method", "devices", "entries", "masks differ", "beyond ties", "weight error", "verdict"]
    note = (
        f"Pruned at {SPARSITY:.0%} in float32 on random calibration tokens ({len(LANGUAGES)} languages x 2 windows). "
        f"wanda and mwanda use the uniform allocation ('onloaded': the model on the CPU, each block moved to {device} "
        f"while it is pruned); 'beyond ties' counts differing mask entries whose CPU score "
        f"is farther than {TIE_RTOL:g} (relative) from its row's cut, and must be 0. sparsegpt and the recommended "
        f"configuration (mwanda + cwl + refit): relative Frobenius error of the pruned block weights, "
        f"at most {WEIGHT_RTOL:g}."
    )
    return "## 1. Agreement with the CPU\n\n" + note + "\n\n" + table(header, rows)


def sparsegpt_config():
    from babelprune.prune.config import PruneConfig

    return PruneConfig(method="sparsegpt", sparsity=SPARSITY)


# ----- 2. scale: blocks onloaded one at a time ----------------------------------------


def fill_random(model: nn.Module, device: torch.device, seed: int = 0) -> None:
    """Random weights (std 0.02, norms at 1), drawn on `device` (fast), kept on the CPU (pinned with CUDA)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    for module in model.modules():
        for leaf, param in module._parameters.items():
            if param is None:
                continue
            values = torch.empty(param.shape, dtype=param.dtype, device=device)
            if param.dim() == 1:
                values.fill_(1.0)
            else:
                values.normal_(0.0, 0.02, generator=generator)
            values = values.cpu()
            module._parameters[leaf] = nn.Parameter(values.pin_memory() if device.type == "cuda" else values, requires_grad=False)


def scale_model(tiny: bool, blocks: int, device: torch.device) -> nn.Module:
    """The Llama-3-8B-shaped model (a 2-block tiny Llama with --tiny), bfloat16, every weight on the CPU."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = tiny_config("llama") if tiny else LlamaConfig(**dict(LLAMA3_8B, num_hidden_layers=blocks))
    with init_empty_weights():  # no memory, no slow initialisation: fill_random writes every weight
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fill_random(model, device)
    return model.eval()


def block_bytes(model: nn.Module) -> int:
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.onload import block_bytes as bytes_of

    return bytes_of(adapter_for(model).get_blocks(model)[0])


def hidden_bytes(model: nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the calibration hidden states (N, T, H) in the model's type."""
    return ids.numel() * model.config.hidden_size * torch.finfo(model.dtype).bits // 8


def onloaded_forward(model: nn.Module, ids: torch.Tensor, device: torch.device, calib_batch: int | None) -> None:
    """The blocks on `ids`, onloaded one at a time as pruning onloads them, in the windows per forward it uses."""
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.onload import Activations, OnloadedBlocks
    from babelprune.prune.sequential import batch_spans, capture_block_inputs, run_block, run_in_spans

    adapter = adapter_for(model)
    store = OnloadedBlocks(device)
    with torch.no_grad():
        inputs = Activations(device).place(capture_block_inputs(model, adapter, ids))  # computed on the CPU, moved once
        spans = batch_spans(len(ids), calib_batch)
        for index, block in enumerate(adapter.get_blocks(model)):
            with store.open(index, block):
                inputs.hidden = run_in_spans(inputs, spans, lambda batch, start, end: run_block(block, adapter, batch, index))
    synchronize(device)


def measured(call: Callable[[], object], device: torch.device) -> tuple[float, int | None]:
    """(seconds, peak bytes allocated on the device, None off CUDA) of one call."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    call()
    synchronize(device)
    seconds = time.perf_counter() - started
    return seconds, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def scale_section(args: argparse.Namespace, device: torch.device) -> str:
    from babelprune.prune.config import PruneConfig
    from babelprune.prune.engine import prune

    model = scale_model(args.tiny, args.blocks, device)
    samples, seq_len = (4, 32) if args.tiny else (args.samples, args.seq_len)
    calibration = random_calibration(model.config.vocab_size, windows=samples // len(LANGUAGES), seq_len=seq_len)
    wanda = PruneConfig(method="wanda", sparsity=SPARSITY)
    forward = lambda: onloaded_forward(model, calibration.ids, device, wanda.calib_batch)  # noqa: E731
    forward_seconds = timed_median(forward)
    _, forward_peak = measured(forward, device)
    unit = block_bytes(model)
    budget = hidden_bytes(model, calibration.ids) // 4  # a quarter of the hidden states: streamed from CPU memory
    rows = [["one forward pass (median of 3)", f"{forward_seconds:.2f}", "1.00", "", memory_cell(forward_peak, unit), ""]]
    runs = (("wanda", wanda, TARGET_WANDA, None), ("recommended", recommended(), TARGET_RECOMMENDED, None),
            ("wanda, --activation-memory 1/4", wanda, None, budget))
    for label, config, target, memory in runs:
        fill_random(model, device)  # every configuration prunes the same dense weights
        loaded = as_loaded(model, "llama-3-8b shape")
        seconds, peak = measured(
            lambda: prune(loaded, config, calibration, False, onload=device, activation_memory=memory), device)  # noqa: B023
        memory_target = None if forward_peak is None or memory is not None else TARGET_MEMORY_MARGIN * forward_peak / unit
        rows.append([label, f"{seconds:.2f}", f"{seconds / forward_seconds:.2f}", "" if target is None else f"<= {target:g}",
                     memory_cell(peak, unit), "" if memory_target is None else f"<= {memory_target:.1f}"])
        print(f"scale: {label} pruned in {seconds:.1f} s", flush=True)
    shape = "tiny Llama, 2 blocks" if args.tiny else f"Llama-3-8B shape, {args.blocks} blocks"
    note = (
        f"{shape}, random bfloat16 weights kept on the CPU, pruned with sequential onloading (each block moved to "
        f"{device} while it is pruned; the first block's inputs computed on the CPU); "
        f"{len(calibration.ids)} windows x {seq_len} random tokens, {SPARSITY:.0%} sparsity, "
        f"{wanda.calib_batch} windows per forward. Time ratios are over the forward pass of the blocks on the same "
        f"tokens, onloaded the same way. Peak memory is torch.cuda.max_memory_allocated over one block's bytes "
        f"({unit / 2**20:.3g} MiB); its target is {TARGET_MEMORY_MARGIN:g}x the forward pass's peak "
        f"(one block and the activations). The last row keeps the hidden states beyond a quarter of their "
        f"{hidden_bytes(model, calibration.ids) / 2**20:.3g} MiB in pinned CPU memory and runs each block in stages, "
        f"one micro-batch at a time; it has no target."
    )
    header = ["run", "seconds", "x forward", "target", "peak memory / block", "target"]
    return "## 2. Scale: blocks onloaded one at a time\n\n" + note + "\n\n" + table(header, rows)


def memory_cell(peak: int | None, unit: int) -> str:
    return "n/a (no CUDA)" if peak is None else f"{peak / unit:.1f}"


# ----- 3. 2:4 semi-structured speed ---------------------------------------------------


def two_four(weight: torch.Tensor) -> torch.Tensor:
    """`weight` with the 2 smallest magnitudes of every 4 consecutive inputs zeroed."""
    from babelprune.prune.kernels import nm_mask

    return weight.masked_fill(nm_mask(weight.abs(), 2, 4), 0)


def cuda_seconds(call: Callable[[], object], device: torch.device, loops: int = 20) -> float:
    """Median seconds of one call, from runs of `loops` calls each (a single kernel is too short to time)."""

    def run() -> None:
        for _ in range(loops):
            call()
        torch.cuda.synchronize(device)

    return timed_median(run) / loops


def linear_rows(device: torch.device) -> list[list[object]]:
    from torch.nn import functional
    from torch.sparse import to_sparse_semi_structured

    rows = []
    for out_features, in_features in SPARSE_SHAPES:
        dense = two_four(torch.randn(out_features, in_features, dtype=torch.float16, device=device))
        sparse = to_sparse_semi_structured(dense)
        for tokens in SPARSE_TOKENS:
            x = torch.randn(tokens, in_features, dtype=torch.float16, device=device)
            dense_s = cuda_seconds(lambda: functional.linear(x, dense), device)
            sparse_s = cuda_seconds(lambda: functional.linear(x, sparse), device)
            rows.append([f"linear {out_features}x{in_features}", tokens, f"{dense_s * 1e6:.1f}", f"{sparse_s * 1e6:.1f}",
                         f"{dense_s / sparse_s:.2f}"])
    return rows


def small_model_row(device: torch.device) -> list[object]:
    """A 4-block Llama (hidden 2048, FFN 5632), every block linear 2:4 and semi-structured, on 16 x 128 tokens.

    The linears are converted by babelprune's own conversion (what `bench-speed --sparse-kernels 2:4` runs),
    which must take every one of them: a linear left dense would make the row measure less than it says.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    from babelprune.evaluate.semi_structured import semi_structured_linears
    from babelprune.models.adapters import adapter_for, named_linears

    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=4, num_attention_heads=16,
                         num_key_value_heads=4, vocab_size=32000)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float16).to(device).eval()
    ids = torch.randint(4, config.vocab_size, (16, 128), device=device)
    with torch.no_grad():
        for linear in named_linears(model, adapter_for(model)).values():
            linear.weight.copy_(two_four(linear.weight))
        dense_s = cuda_seconds(lambda: model(ids), device, loops=5)
        with semi_structured_linears(model) as record:
            if not record.complete:
                raise SystemExit(f"gpu_check.py: {record.summary('the 4-block Llama')}")
            sparse_s = cuda_seconds(lambda: model(ids), device, loops=5)
    return [f"4-block Llama (2048 / 5632), {record.backend}", "16 x 128", f"{dense_s * 1e6:.0f}", f"{sparse_s * 1e6:.0f}",
            f"{dense_s / sparse_s:.2f}"]


def sparse_section(device: torch.device) -> str:
    title = "## 3. 2:4 semi-structured speed\n\n"
    if device.type != "cuda":
        return title + "needs CUDA (semi-structured kernels); skipped on " + str(device) + "."
    note = ("float16, weights 2:4-pruned by magnitude, as torch.sparse.to_sparse_semi_structured against the same "
            "dense weight; microseconds per call, median of 3 runs of 20 calls (5 for the model) after a warm-up.")
    header = ["weight (out x in)", "tokens", "dense us", "2:4 us", "speed-up"]
    return title + note + "\n\n" + table(header, [*linear_rows(device), small_model_row(device)])


# ----- main ---------------------------------------------------------------------------


def work_device(tiny: bool) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not tiny:
        raise SystemExit("gpu_check.py needs a CUDA device; --tiny runs every section at a tiny size on the CPU.")
    return torch.device("cpu")


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    device = work_device(args.tiny)
    started = time.perf_counter()
    sections = [agreement_section(args.tiny, device), scale_section(args, device), sparse_section(device)]
    size = "tiny size (--tiny)" if args.tiny else "full size"
    if device.type == "cpu":  # --tiny without a GPU: the script runs, but compares the CPU with itself
        size += "; no accelerator here, so the accelerator side of every comparison is the CPU again"
    intro = f"Device: {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, {size}, " \
            f"{time.perf_counter() - started:.0f} s in all."
    return write_result_table("gpu_check", "Pruning on an accelerator", "\n\n".join([intro, *sections]), directory=args.out)


if __name__ == "__main__":
    main()
