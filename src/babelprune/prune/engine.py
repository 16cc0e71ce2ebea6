"""`prune()`: one-shot pruning of a model's blocks, shared or per language.

The default order runs every block once: each linear layer's input
statistics are gathered, and the layer pruned, just before it is applied,
so later sublayers and later blocks already see pruned inputs. The classic
order (`two-pass`, as in the Wanda and SparseGPT reference code) runs each
block dense to gather statistics, prunes, then runs it again to feed the
next block.

Where the weights live is the store's business (in memory, or on disk with
babelprune.prune.offload); `onload` names a device each block is moved to
while it is pruned, the weights staying where the store keeps them, and
`activation_memory` bounds the calibration hidden states kept on that
device (babelprune.prune.onload).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from rich.progress import Progress
from torch import nn

from babelprune.devices import dtype_name
from babelprune.errors import BabelpruneError
from babelprune.progress import progress_bar
# named_linears is defined with the adapters (formats reads it too); it stays importable from here.
from babelprune.models.adapters import ArchAdapter, adapter_for, linear_in_features, named_linears, weight_matrix
from babelprune.models.base import LoadedModel
from babelprune.prune.allocation import allocate_owl, allocate_uniform, owl_outlier_ratio
from babelprune.prune.balance import check_weighted_languages, language_shares, token_scale
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import PruneConfig
from babelprune.prune.kernels import count_true, wanda_scores, zero_pruned_
from babelprune.prune.lockstep import run_block_in_lockstep, run_block_in_stages
from babelprune.prune.methods import METHODS, LayerTask, Method
from babelprune.prune.mwanda import allocate_cwl, block_cross_lingual_correlation
# BlockStore and IN_MEMORY live with the onloading store; they stay importable from here.
from babelprune.prune.onload import IN_MEMORY, Activations, BlockStore, OnloadedBlocks
from babelprune.prune.reconstruct import RefitSystem, reconstruct
from babelprune.prune.sequential import (
    StatsCollector,
    batch_spans,
    capture_block_inputs,
    rows_in_span,
    run_block,
    run_block_with_hooks,
    run_in_spans,
    slice_inputs,
    write_weight,
)
from babelprune.prune.stats import LanguageStats, post_activation_stats

Masks = dict[str, torch.Tensor]  # "block.name" -> pruned mask (out, in), True = zero
# The per-language bank's extra mask, computed on every calibration language together:
# it serves the languages that have no mask of their own.
POOLED_MASK = "pooled"


@dataclass
class PruneResult:
    """What a pruning run did. The model was changed in place (shared) or carries a mask bank (per-language)."""

    config: PruneConfig
    block_sparsity_targets: list[float]  # allocated sparsity of each block
    layer_sparsity: dict[str, float]  # achieved share of zeros per linear, "block.name"
    starting_sparsity: float  # share of zeros in the blocks' linears before pruning
    achieved_sparsity: float  # share of zeros after pruning (shared) or mean over languages
    calibration: dict | None
    seconds: float
    mask_bank: dict[str, Masks] | None = None  # per-language setting: language (or POOLED_MASK) -> masks
    allocation_stats: dict[str, list[float]] = field(default_factory=dict)
    # --reconstruct: "block.name" -> [relative calibration error of the masked weight, of the refitted one]
    refit_errors: dict[str, list[float]] = field(default_factory=dict)
    language_shares: dict[str, float] = field(default_factory=dict)  # each calibration language's share of the statistics
    language_budget: dict | None = None  # --language-budget: every round's weights and held-out losses
    device: str = "cpu"  # where the model was pruned, e.g. "cuda:0"
    dtype: str = "float32"  # the model's weights' type while pruning; statistics are float32 or float64 whatever it is
    # "sequential": the weights stayed on the CPU (or disk) and each block was moved to `device` while it was
    # pruned; "none": the blocks were pruned where the model's weights were.
    onload: str = "none"
    activation_memory: int | None = None  # bytes of calibration hidden states allowed on the device; None: no limit
    # Windows per micro-batch when the hidden states exceeded activation_memory and stayed in CPU memory; None: they fit.
    activation_windows: int | None = None

    def mean_refit_errors(self) -> tuple[float, float] | None:
        """The refit's mean relative layer error on calibration, (masked, refitted); None without a refit."""
        if not self.refit_errors:
            return None
        pairs = list(self.refit_errors.values())
        return sum(pair[0] for pair in pairs) / len(pairs), sum(pair[1] for pair in pairs) / len(pairs)

    def metadata(self) -> dict:
        # method / sparsity / setting at the top level, like every babelprune pruning record.
        return {
            "method": self.config.method,
            "sparsity": self.config.effective_sparsity,
            "setting": self.config.setting,
            "config": self.config.to_dict(),
            "allocation": self.config.allocation if not self.config.nm else "uniform",
            # which of M-Wanda's parts ran (None for other methods): language-aware statistics, activation term, CWL, score
            "mwanda_parts": self.config.mwanda_parts(),
            "block_sparsity_targets": self.block_sparsity_targets,
            "allocation_stats": self.allocation_stats,
            "starting_sparsity": self.starting_sparsity,
            "achieved_sparsity": self.achieved_sparsity,
            "layer_sparsity": self.layer_sparsity,
            "calibration": self.calibration,
            "language_shares": self.language_shares,
            "refit_errors": self.refit_errors,
            "language_budget": self.language_budget,
            "device": self.device,
            "dtype": self.dtype,
            "onload": self.onload,
            "activation_memory": self.activation_memory,
            "activation_windows": self.activation_windows,
            "seconds": self.seconds,
        }


def snapshot_linears(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every block linear's (out, in) weight, to restore the dense model later."""
    return {name: weight_matrix(m).clone() for name, m in named_linears(model, adapter_for(model)).items()}


def restore_linears(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Put back the weights `snapshot_linears` copied."""
    for name, module in named_linears(model, adapter_for(model)).items():
        write_weight(module, snapshot[name])


def zeros_in(weight: torch.Tensor) -> int:
    """How many entries of `weight` are exactly zero.

    count_nonzero reduces the weight in one pass; (weight == 0).sum() first
    fills a boolean copy of it and sums that, about ten times slower on the CPU.
    """
    return weight.numel() - int(torch.count_nonzero(weight))


@dataclass
class ZeroCount:
    """Zeros of the block linears before and after pruning, counted block by block while each is open."""

    before: int = 0
    after: int = 0
    total: int = 0
    layers: dict[str, float] = field(default_factory=dict)  # "block.name" -> share of zeros after pruning
    # "block.name" -> how many entries a mask-only method set to zero there (filled by _prune_linear)
    zeroed: dict[str, int] = field(default_factory=dict)
    _before_layers: dict[str, int] = field(default_factory=dict)  # "block.name" -> zeros before pruning

    def count_before(self, index: int, linears: dict[str, nn.Module]) -> None:
        for name, linear in linears.items():
            weight = weight_matrix(linear)
            zeros = zeros_in(weight)
            self._before_layers[f"{index}.{name}"] = zeros
            self.before += zeros
            self.total += weight.numel()

    def count_after(self, index: int, linears: dict[str, nn.Module]) -> None:
        for name, linear in linears.items():  # one count per layer gives both its share and the total
            key, weight = f"{index}.{name}", weight_matrix(linear)
            zeroed = self.zeroed.pop(key, None)
            # A weight without zeros that a mask-only method pruned holds exactly the entries it zeroed:
            # no pass over the weight is needed (the common case, a dense model).
            zeros = zeroed if zeroed is not None and self._before_layers.get(key) == 0 else zeros_in(weight)
            self.after += zeros
            self.layers[key] = round(zeros / weight.numel(), 6)


def zero_share(linears: dict[str, nn.Module]) -> float:
    zeros = sum(zeros_in(weight_matrix(m)) for m in linears.values())
    return zeros / sum(weight_matrix(m).numel() for m in linears.values())


def _check_model(config: PruneConfig, linears: dict[str, nn.Module], method: Method, calibration: Calibration | None) -> None:
    """Every check that can fail, before any weight changes."""
    if config.nm:
        n, m = config.nm
        for name, linear in linears.items():
            if linear_in_features(linear) % m:
                raise BabelpruneError(
                    f"N:M pattern {config.pattern} needs input widths divisible by {m}, but layer {name} has "
                    f"{linear_in_features(linear)} inputs; choose another M or use unstructured sparsity."
                )
        if config.allocation != "uniform":
            raise BabelpruneError(f"Allocation '{config.allocation}' varies sparsity per block, which an N:M pattern fixes; use --allocation uniform.")
    if config.needs_calibration and calibration is None:
        raise BabelpruneError(f"Method '{config.method}' with allocation '{config.allocation}' needs calibration text; give --calib.")
    if calibration is not None and config.language_weights:
        check_weighted_languages(config.language_weights, calibration)
    if config.allocation == "cwl" and not config.nm and calibration is not None and len(calibration.language_set) < 2:
        raise BabelpruneError("CWL allocation compares languages, so it needs calibration text in at least two languages.")
    if config.setting == "per-language" and config.method == "sparsegpt":
        raise BabelpruneError(
            "The per-language setting stores masks over one set of dense weights, but sparsegpt also updates the weights; "
            "use --setting shared, or another method."
        )


@torch.no_grad()
def allocate_blocks(
    model: nn.Module, adapter: ArchAdapter, config: PruneConfig, calibration: Calibration | None, store: BlockStore = IN_MEMORY,
    activations: Activations | None = None,
) -> tuple[list[float], dict]:
    """Per-block sparsity targets. OWL and CWL read statistics from a dense pre-pass on a few samples per language."""
    n_blocks = len(adapter.get_blocks(model))
    allocation = "uniform" if config.nm else config.allocation
    if allocation == "uniform":
        return allocate_uniform(n_blocks, config.effective_sparsity), {}
    subset = calibration.subset(per_language=config.allocation_samples)
    activations = activations or Activations()
    inputs = activations.place(capture_block_inputs(model, adapter, subset.ids))
    rows = subset.rows()
    measures = []
    for index, block in enumerate(adapter.get_blocks(model)):
        seen: dict[str, tuple[nn.Module, LanguageStats]] = {}
        collector = StatsCollector(subset.language_set, False, config.mwanda.tau, track_activity=False).begin(rows)
        record = lambda name, linear, stats: seen.__setitem__(name, (linear, stats))  # noqa: E731
        with store.open(index, block):
            if inputs.runs_on is None:
                inputs.hidden = run_block_with_hooks(block, adapter, inputs, index, collector, record)
            else:  # hidden states in CPU memory: a dense pass needs no lockstep, micro-batches run one after the other
                spans = batch_spans(len(subset.languages), activations.fitting_windows(inputs.hidden))

                def run(batch, start, end):
                    collector.begin(rows_in_span(rows, start, end))
                    return run_block_with_hooks(block, adapter, batch, index, collector, record)

                inputs.hidden = run_in_spans(inputs, spans, run)
            if allocation == "owl":
                scores = [wanda_scores(weight_matrix(linear), stats.pooled_norm()) for linear, stats in seen.values()]
                measures.append(owl_outlier_ratio(scores, config.owl_m))
            else:
                measures.append(block_cross_lingual_correlation([stats for _, stats in seen.values()]))
    allocate = allocate_owl if allocation == "owl" else allocate_cwl
    key = "outlier_ratio" if allocation == "owl" else "cross_lingual_correlation"
    return allocate(measures, config.sparsity, config.lam), {key: measures}


def _needs_calibration(config: PruneConfig, method: Method) -> bool:
    return method.needs_calibration or config.reconstruct is not None


def _prune_linear(
    method: Method, config: PruneConfig, linear: nn.Module, stats: LanguageStats | None, sparsity: float,
    refit_errors: dict[str, list[float]], name: str, zeroed: dict[str, int] | None = None,
) -> None:
    """Choose the layer's mask (and weights, for SparseGPT); with --reconstruct, refit the kept weights.

    When only the mask is applied, `zeroed[name]` (if given) receives how many entries it set to zero.
    """
    dense = weight_matrix(linear)
    new_weight, pruned = method.fn(LayerTask(dense, stats, sparsity, config))
    if config.reconstruct is not None:
        options = config.reconstruct
        # Linears that read one input (q, k, v; gate, up) share its statistics, and so its damped Hessian.
        system = stats.derived(("refit", options.damp), lambda: RefitSystem.of(stats.hessian(), options.damp))
        # The refit starts again from the dense weight: only the method's mask is kept.
        new_weight, report = reconstruct(
            dense, pruned, None if options.solver == "pcg" else stats.hessian(), damp=options.damp, shrink=options.shrink,
            solver=options.solver, iterations=options.iterations, system=system,
        )
        refit_errors[name] = [round(report.error_before, 6), round(report.error_after, 6)]
    if new_weight is None:
        zero_pruned_(dense, pruned)
        if zeroed is not None:
            zeroed[name] = count_true(pruned)
    else:
        write_weight(linear, new_weight)


def _token_scale(config: PruneConfig, calibration: Calibration) -> torch.Tensor | None:
    """The per-language token factors of the statistics (None: every token counts once)."""
    if len(calibration.language_set) < 2:
        return None  # one language (a per-language mask): nothing to balance
    return token_scale(calibration, config.balance, config.language_weights)


@torch.no_grad()
def _prune_blocks(
    model: nn.Module, adapter: ArchAdapter, config: PruneConfig, method: Method,
    calibration: Calibration | None, targets: list[float], progress: Progress, label: str,
    refit_errors: dict[str, list[float]], store: BlockStore = IN_MEMORY, zeros: ZeroCount | None = None,
    activations: Activations | None = None,
) -> None:
    """Prune every block in place, in order. The masks are the weights' zeros afterwards; none are kept here."""
    blocks = adapter.get_blocks(model)
    task = progress.add_task(label, total=len(blocks))
    zeroed = zeros.zeroed if zeros is not None else None
    activations = activations or Activations()
    prune_block = _block_pruner(model, adapter, config, method, calibration, targets, refit_errors, activations, zeroed)
    for index, block in enumerate(blocks):
        with store.open(index, block):
            linears = adapter.block_linears(block)
            if zeros is not None:
                zeros.count_before(index, linears)
            prune_block(index, block)
            if zeros is not None:
                zeros.count_after(index, linears)
            store.pruned(index, block)
        progress.advance(task)


def _block_pruner(
    model: nn.Module, adapter: ArchAdapter, config: PruneConfig, method: Method,
    calibration: Calibration | None, targets: list[float], refit_errors: dict[str, list[float]], activations: Activations,
    zeroed: dict[str, int] | None = None,
) -> Callable[[int, nn.Module], None]:
    """The function that prunes block `index`; blocks must be given in order (each feeds the next)."""
    if not _needs_calibration(config, method):

        def prune_weights(index: int, block: nn.Module) -> None:
            for name, linear in adapter.block_linears(block).items():
                _prune_linear(method, config, linear, None, targets[index], refit_errors, f"{index}.{name}", zeroed)

        return prune_weights
    inputs = activations.place(capture_block_inputs(model, adapter, calibration.ids), record=True)
    rows = calibration.rows()
    n = len(calibration.languages)
    if inputs.runs_on is None:
        spans = batch_spans(n, config.calib_batch)
    else:  # streamed: micro-batches small enough for the budget (and no larger than --calib-batch)
        activations.windows = min(config.calib_batch or n, activations.windows)
        spans = batch_spans(n, activations.windows)
    scale = _token_scale(config, calibration)
    needs_hessian = method.needs_hessian or config.reconstruct is not None

    def prune_on_inputs(index: int, block: nn.Module) -> None:
        collector = StatsCollector(calibration.language_set, needs_hessian, config.mwanda.tau, method.needs_activity, scale)
        if method.needs_activity:  # the down-projection's input follows the activation: active means x > 0
            down = adapter.ffn_linears(block)["down"]
            collector.by_name["down"] = post_activation_stats(
                linear_in_features(down), collector.languages, token_scale=scale, device=weight_matrix(down).device
            )
        if config.order == "one-pass":

            def prune_now(name, linear, stats):
                _prune_linear(method, config, linear, stats, targets[index], refit_errors, f"{index}.{name}", zeroed)

            if inputs.runs_on is not None:  # one micro-batch inside the block at a time, moved in and out
                inputs.hidden = run_block_in_stages(block, adapter, inputs, index, collector, rows, spans, prune_now)
            elif len(spans) > 1:  # micro-batches of calib_batch windows, in lockstep: the same pass, fewer activations
                inputs.hidden = run_block_in_lockstep(block, adapter, inputs, index, collector, rows, spans, prune_now)
            else:
                inputs.hidden = run_block_with_hooks(block, adapter, inputs, index, collector.begin(rows), prune_now)
        else:
            # Dense pass (in batches of calib_batch windows), prune, pass again.
            seen: dict[str, nn.Module] = {}
            for start, end in spans:
                collector.begin(rows_in_span(rows, start, end))
                batch = slice_inputs(inputs, start, end)
                run_block_with_hooks(block, adapter, batch, index, collector, lambda n, lin, st: seen.__setitem__(n, lin))
            for name, linear in seen.items():
                _prune_linear(method, config, linear, collector.by_name[name], targets[index], refit_errors, f"{index}.{name}",
                              zeroed)
            inputs.hidden = run_in_spans(inputs, spans, lambda batch, start, end: run_block(block, adapter, batch, index))

    return prune_on_inputs


def prune(
    loaded: LoadedModel, config: PruneConfig, calibration: Calibration | None = None, progress: bool = True,
    store: BlockStore = IN_MEMORY, onload: torch.device | str | None = None, activation_memory: int | None = None,
) -> PruneResult:
    """Prune `loaded.model` with `config`, calibrating on `calibration` (per-language windows).

    `store` says where the blocks' weights are (babelprune.prune.offload keeps them on disk).
    `onload`: a device each block is moved to while it is pruned, its weights staying where
    `store` keeps them (the CPU); None prunes the blocks where they are. `activation_memory`:
    bytes of calibration hidden states allowed where the blocks run; beyond it they stay in
    CPU memory and stream in by micro-batch (None: no limit). Neither changes the masks.
    """
    started = time.perf_counter()
    model = loaded.model
    adapter = adapter_for(model)
    method = METHODS[config.method]
    linears = named_linears(model, adapter)
    _check_model(config, linears, method, calibration)
    if config.setting != "shared" and store is not IN_MEMORY:
        raise BabelpruneError("The per-language setting keeps every block's dense weights under each mask; use --setting shared.")
    if not _needs_calibration(config, method) and config.allocation == "uniform":
        calibration = None  # magnitude needs no data
    onload = torch.device(onload) if onload is not None else None
    if onload is not None:
        store = OnloadedBlocks(onload, store)
    activations = Activations(onload, activation_memory)
    bar = progress_bar(progress)
    refit_errors: dict[str, list[float]] = {}
    with bar, torch.no_grad():
        targets, allocation_stats = allocate_blocks(model, adapter, config, calibration, store, activations)
        if config.setting == "shared":
            label = f"{config.method}{' + refit' if config.reconstruct else ''}: pruning blocks"
            zeros = ZeroCount()
            _prune_blocks(model, adapter, config, method, calibration, targets, bar, label, refit_errors, store, zeros, activations)
            starting, achieved, layer_sparsity, bank = zeros.before / zeros.total, zeros.after / zeros.total, zeros.layers, None
        else:
            starting = zero_share(linears)
            bank, layer_sparsity, achieved = _prune_per_language(
                model, adapter, config, method, calibration, targets, linears, bar, store, activations,
            )
    return PruneResult(
        config=config,
        block_sparsity_targets=[round(t, 6) for t in targets],
        layer_sparsity=layer_sparsity,
        starting_sparsity=starting,
        achieved_sparsity=achieved,
        calibration=calibration.describe() if calibration is not None else None,
        seconds=round(time.perf_counter() - started, 3),
        mask_bank=bank,
        allocation_stats=allocation_stats,
        refit_errors=refit_errors,
        language_shares=language_shares(calibration, config.balance, config.language_weights) if calibration else {},
        device=str(onload if onload is not None else loaded.device),
        dtype=dtype_name(loaded.dtype),
        onload="none" if onload is None else "sequential",
        activation_memory=activation_memory,
        activation_windows=activations.windows,
    )


def _prune_per_language(model, adapter, config, method, calibration, targets, linears, bar, store=IN_MEMORY, activations=None):
    """One mask per language from that language's data alone, plus the pooled mask, over one set of dense weights.

    Sparsity figures are those of the languages' own masks; the pooled mask is
    the shared setting's mask, kept for languages that were not calibrated.
    """
    if calibration is None:
        raise BabelpruneError("The per-language setting needs calibration text in each language; give --calib.")
    if POOLED_MASK in calibration.language_set:
        raise BabelpruneError(f"'{POOLED_MASK}' names the bank's pooled mask and cannot be a calibration language; rename it.")
    dense = snapshot_linears(model)
    bank: dict[str, Masks] = {}
    shares = []
    subsets = [(lang, calibration.subset([lang])) for lang in calibration.language_set] + [(POOLED_MASK, calibration)]
    for key, subset in subsets:
        try:
            _prune_blocks(model, adapter, config, method, subset, targets, bar, f"{config.method} [{key}]", {}, store, None, activations)
            bank[key] = {name: weight_matrix(linear) == 0 for name, linear in linears.items()}  # source zeros included
            if key != POOLED_MASK:
                shares.append(zero_share(linears))
        finally:
            restore_linears(model, dense)
    own = [masks for key, masks in bank.items() if key != POOLED_MASK]
    layer_sparsity = {name: round(sum(float(masks[name].float().mean()) for masks in own) / len(own), 6) for name in linears}
    return bank, layer_sparsity, sum(shares) / len(shares)
