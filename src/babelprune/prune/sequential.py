"""Run a model block by block over calibration data, with hooks on every linear layer.

Only one block and its activations are live at a time. Capturing the
inputs of the blocks and running one (`capture_block_inputs`, `run_block`,
`BlockInputs`) live in babelprune.models.blockwise, which evaluation with
sequential onloading shares; they are importable from here too.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

from babelprune.models.adapters import ArchAdapter, weight_matrix
from babelprune.models.blockwise import BlockInputs, capture_block_inputs, onto, run_block  # noqa: F401 (re-exported)
from babelprune.prune.stats import LanguageStats


def _as_slice(index: torch.Tensor) -> slice | torch.Tensor:
    """slice(a, b) when `index` is a, a+1, ..., b-1; the index itself otherwise."""
    if len(index) and torch.equal(index, torch.arange(int(index[0]), int(index[0]) + len(index), device=index.device)):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


class StatsCollector:
    """Per-language input statistics of a block's linears, accumulated over one or more batches.

    q, k and v (and gate and up) read the same tensor: within a batch the
    statistics are cached by the identity of the input tensor, so they are
    computed once and the linears sharing an input share one statistics object.
    `begin(rows)` starts the next batch; `batch(rows)` gives a batch of its own,
    for micro-batches that are in flight at the same time (babelprune.prune.lockstep).
    """

    def __init__(
        self, languages: list[str], track_hessian: bool, tau: float, track_activity: bool = True,
        token_scale: torch.Tensor | None = None,
    ) -> None:
        self.languages = list(languages)
        self.token_scale = token_scale  # (L,) per-language token weight, None: every token counts once
        self.track_hessian = track_hessian
        self.track_activity = track_activity
        self.tau = tau
        self.by_name: dict[str, LanguageStats] = {}
        self._current: BatchStats | None = None

    def batch(self, rows: dict[str, torch.Tensor]) -> BatchStats:
        """A batch whose rows of each language are `rows` (indices into the batch), adding to these statistics."""
        return BatchStats(self, rows)

    def begin(self, rows: dict[str, torch.Tensor]) -> StatsCollector:
        """Start the next batch; calls then add its inputs."""
        self._current = self.batch(rows)
        return self

    def __call__(self, name: str, x: torch.Tensor) -> LanguageStats:
        return self._current(name, x)

    def new_stats(self, in_features: int, device: torch.device) -> LanguageStats:
        return LanguageStats(
            in_features, self.languages, tau=self.tau, track_activity=self.track_activity, token_scale=self.token_scale,
            device=device,
        )


class BatchStats:
    """One batch of a `StatsCollector`: adds a linear's input x (n, T, in) to the statistics of its name."""

    def __init__(self, collector: StatsCollector, rows: dict[str, torch.Tensor]) -> None:
        self.collector = collector
        # Contiguous row ranges become slices: views instead of copies of the activations.
        self.rows = {lang: _as_slice(index) for lang, index in rows.items() if len(index)}
        self.n_samples = sum(len(index) for index in rows.values())
        # id(tensor) -> (weak reference to it, stats). The weak reference tells a
        # reused id from the same tensor without keeping large activations alive.
        self._cache: dict[int, tuple[weakref.ref, LanguageStats]] = {}

    def __call__(self, name: str, x: torch.Tensor) -> LanguageStats:
        by_name = self.collector.by_name
        cached = self._cache.get(id(x))
        if cached is None or cached[0]() is not x:
            stats = by_name.get(name) or self.collector.new_stats(x.shape[-1], x.device)
            # Some blocks flatten (N, T, in) to (N*T, in) before a linear (OPT's FFN): undo it.
            per_sample = x.reshape(self.n_samples, -1, x.shape[-1])  # (N, T, in)
            for lang, rows in self.rows.items():
                stats.update(per_sample[rows], lang)  # (n_l, T, in): every position is one token
            if self.collector.track_hessian:
                self._add_hessian(stats, x, per_sample)
            self._cache[id(x)] = (weakref.ref(x), stats)
        by_name[name] = self._cache[id(x)][1]
        return by_name[name]

    def _add_hessian(self, stats: LanguageStats, x: torch.Tensor, per_sample: torch.Tensor) -> None:
        """One product for all the batch's tokens; balanced, each language's tokens scaled by sqrt(s_l) first."""
        scale_of = self.collector.token_scale
        if scale_of is None:
            stats.add_hessian(x.reshape(-1, x.shape[-1]).float())
            return
        root_scale = torch.zeros(self.n_samples, device=per_sample.device)  # (N,): every row belongs to one language
        for lang, rows in self.rows.items():
            root_scale[rows] = float(scale_of[self.collector.languages.index(lang)]) ** 0.5
        stats.add_hessian((per_sample.float() * root_scale.view(-1, 1, 1)).reshape(-1, x.shape[-1]))


def batch_spans(n: int, batch: int | None) -> list[tuple[int, int]]:
    """[(start, end)] covering range(n) in pieces of at most `batch` (all at once when None)."""
    step = batch or n
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def is_batched(value: object, n: int) -> bool:
    """Whether an argument is batched like N windows' hidden states: a tensor whose first dimension is k * N.

    It is taken as batch-major with k rows per window (BLOOM's ALiBi bias is (N * heads, 1, T)).
    """
    return isinstance(value, torch.Tensor) and bool(value.dim()) and value.shape[0] % n == 0


def slice_inputs(inputs: BlockInputs, start: int, end: int) -> BlockInputs:
    """The rows start:end of the hidden states and of every argument batched like them.

    With `inputs.runs_on` set, the rows are copies on that device (the micro-batch moved in to run).
    """
    n = inputs.hidden.shape[0]
    device = inputs.runs_on

    def cut(value):
        if not is_batched(value, n):
            return value
        per_window = value.shape[0] // n
        return _onto(value[start * per_window : end * per_window], device)

    return BlockInputs(
        hidden=_onto(inputs.hidden[start:end], device),
        args=[tuple(cut(a) for a in args) for args in inputs.args],
        kwargs=[{key: cut(value) for key, value in kwargs.items()} for kwargs in inputs.kwargs],
    )


def _onto(tensor: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return tensor if device is None else onto(tensor, device)


def new_hidden(inputs: BlockInputs) -> torch.Tensor:
    """An empty (N, T, H) tensor beside `inputs.hidden` (pinned like it) for the outputs of a block."""
    hidden = inputs.hidden
    pinned = hidden.device.type == "cpu" and hidden.is_pinned()
    return torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device, pin_memory=pinned)


def run_in_spans(
    inputs: BlockInputs, spans: list[tuple[int, int]], run: Callable[[BlockInputs, int, int], torch.Tensor],
) -> torch.Tensor:
    """`run(micro-batch, start, end)` over the micro-batches `spans`: their outputs as the next hidden states (N, T, H).

    Streamed (`inputs.runs_on`), each output is copied back beside the inputs as soon as it
    is made, so the device holds one micro-batch at a time.
    """
    if inputs.runs_on is None:
        return torch.cat([run(slice_inputs(inputs, start, end), start, end) for start, end in spans])
    out = new_hidden(inputs)
    for start, end in spans:
        out[start:end].copy_(run(slice_inputs(inputs, start, end), start, end))
    return out


def rows_in_span(rows: dict[str, torch.Tensor], start: int, end: int) -> dict[str, torch.Tensor]:
    """Each language's rows that fall in start:end, renumbered from 0."""
    return {lang: index[(index >= start) & (index < end)] - start for lang, index in rows.items()}


LinearAction = Callable[[str, nn.Module, LanguageStats], None]


@torch.no_grad()
def run_block_with_hooks(
    block: nn.Module,
    adapter: ArchAdapter,
    inputs: BlockInputs,
    index: int,
    collector: StatsCollector,
    action: LinearAction,
) -> torch.Tensor:
    """Run one block; just before each linear is applied, call `action(name, linear, stats of its input)`.

    When `action` prunes the linear in place, the linear is applied already
    pruned, so later sublayers of the block see pruned inputs: one pass.
    """
    handles = []
    for name, linear in adapter.block_linears(block).items():

        def hook(module, args, name=name):
            action(name, module, collector(name, args[0]))

        handles.append(linear.register_forward_pre_hook(hook))
    try:
        return run_block(block, adapter, inputs, index)
    finally:
        for handle in handles:
            handle.remove()


def write_weight(linear: nn.Module, new_weight: torch.Tensor) -> None:
    """Copy an (out, in) weight into a linear layer, whatever its storage layout."""
    weight_matrix(linear).copy_(new_weight)
