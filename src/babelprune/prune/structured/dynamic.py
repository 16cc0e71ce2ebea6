"""Dynamic Sparsification (Li et al., ACL 2022): train once, cut to any size at inference.

1. Rank: the heads and FFN neurons of every block are scored once with a
   structured importance (magnitude, gradient or activation) and each block's
   units are physically reordered, most important first. Reordering only
   permutes rows and columns (q/k/v rows and o columns of a head, gate/up rows
   and the down column of a neuron), so the model computes the same function,
   and "keep the first k units" now means "keep the top k".
2. Train: the weights are shared by every width. A width is a sparsity level
   s: each block keeps the prefix of its units that removes a share s of its
   attention + FFN parameters (`level_selection`: the structured selection
   with "per-layer" ranking, so every block has the same widths). Each step
   trains the full model, the smallest width and `samples_per_step` random
   widths in between (the sandwich rule) by masking the other units' outputs
   (0/1 masks on the input of the attention output projection and of the FFN
   down projection) and sums their losses. With `distill`, every narrower
   width also learns from a teacher: (1 - w) * CE + w * T^2 * KL(teacher/T ||
   student/T). The teacher is the full width of the same step ("full-width",
   the only sensible choice when a task head starts random) or a frozen copy
   of the starting model ("dense", for language models that already are good
   teachers); "auto" picks the first for task heads and the second for LMs.
3. Cut: `slice_width` keeps the same prefixes physically and saves a normal
   smaller model (`save_structured`). Any sparsity from 0 to the largest
   trained level is allowed (widths are nested, so levels between trained ones
   are prefixes of trained widths too); beyond it, the error names the limit.

Uses: an encoder with a task head (`babelprune.finetune.heads.TaskHead`) on a
classification task, or a causal LM trained on calibration windows.

Grouped-query attention: query heads are the head units and every key/value
head is kept; a block's query heads are ranked within their own group, so
each group keeps the same number of them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from safetensors.torch import load_file, save_file
from torch import nn

from babelprune.cache import atomic_dir
from babelprune.data.tasks import Example, Task
from babelprune.errors import BabelpruneError
from babelprune.finetune.heads import IGNORE_INDEX, TaskHead, encode
from babelprune.finetune.trainer import batch_indices, check_examples, linear_schedule
from babelprune.models.adapters import ArchAdapter, adapter_for, fused_qkv_rows
from babelprune.models.base import LoadedModel
from babelprune.models.loading import load_model
from babelprune.prune.calibration import Calibration
from babelprune.prune.kernels import check_sparsity
from babelprune.prune.structured.importance import (
    activation_importance,
    gradient_importance,
    head_gates,
    magnitude_importance,
)
from babelprune.prune.structured.selection import (
    DEFAULT_TOLERANCE,
    Importance,
    Selection,
    apply_selection,
    select_units,
)
from babelprune.prune.structured.storage import save_structured
from babelprune.prune.structured.units import (
    LayerLayout,
    check_head_removal,
    layer_layouts,
    shrink_linear,
    structure_of,
)

DYNAMIC_FILE = "babelprune_dynamic.json"
HEAD_FILE = "babelprune_task_head.json"
HEAD_WEIGHTS = "task_head.safetensors"
FORMAT_VERSION = 1
DYNAMIC_UNITS = ("heads", "ffn")
Order = dict[str, list[int]]  # per block: "heads" / "neurons" -> original position of each new position


class DynamicConfig(BaseModel):
    """Everything that decides a dynamic training run. Defaults fit e5-small + bible-genre on a CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    levels: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # sparsities; 0.0 is always added
    samples_per_step: int = 1  # random levels per step besides the full and the smallest width
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-4
    head_lr: float | None = 3e-3  # the new classifier layer; None: `lr`
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    distill: bool = True
    distill_weight: float = 0.5
    temperature: float = 2.0
    teacher: Literal["auto", "dense", "full-width"] = "auto"
    seed: int = 0
    units: tuple[str, ...] = DYNAMIC_UNITS
    importance: Literal["magnitude", "gradient", "activation"] = "magnitude"
    tolerance: float = DEFAULT_TOLERANCE
    max_length: int = 64
    text_prefix: str = "query: "  # e5 models expect it
    pooling: Literal["mean", "cls"] = "mean"
    dropout: float = 0.1
    freeze_embeddings: bool = True

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, value: object) -> tuple[float, ...]:
        levels = [check_sparsity(level) for level in (value or ())]  # type: ignore[union-attr]
        return tuple(sorted({0.0, *levels}))

    @field_validator("units", mode="before")
    @classmethod
    def _units(cls, value: object) -> tuple[str, ...]:
        units = set(value or ())  # type: ignore[arg-type]
        if not units or not units <= set(DYNAMIC_UNITS):
            raise BabelpruneError(f"Unknown dynamic units {sorted(units)}; choose 'heads', 'ffn' or both.")
        return tuple(sorted(units))

    @model_validator(mode="after")
    def _valid(self) -> DynamicConfig:
        for name in ("steps", "batch_size", "lr", "temperature", "max_length"):
            if not getattr(self, name) > 0:
                raise BabelpruneError(f"Dynamic training option {name} is {getattr(self, name)}; give a positive value.")
        if self.samples_per_step < 0:
            raise BabelpruneError(f"samples_per_step is {self.samples_per_step}; give 0 or more random levels per step.")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise BabelpruneError(f"distill_weight is {self.distill_weight}; give a share between 0 and 1.")
        for name in ("warmup", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise BabelpruneError(f"Dynamic training option {name} is {getattr(self, name)}; give a share in [0, 1).")
        return self


@dataclass
class DynamicModel:
    """A dynamically trained model: full width, units in ranked order, and what `babelprune_dynamic.json` holds."""

    loaded: LoadedModel
    head: TaskHead | None  # the task head around `loaded.model`; None for language models
    metadata: dict[str, Any]

    @property
    def levels(self) -> list[float]:
        return list(self.metadata["levels"])

    def selection(self, sparsity: float) -> Selection:
        """The units kept at `sparsity` (a prefix of every block's units)."""
        return level_selection(self.loaded.model, sparsity, self.metadata["units"], self.metadata.get("tolerance", DEFAULT_TOLERANCE))

    def save(self, out: Path) -> Path:
        return save_dynamic(self, out)


@dataclass
class DynamicResult:
    """What `train_dynamic` did: the trained model and the loss of every width it trained, step by step."""

    model: DynamicModel
    config: DynamicConfig
    achieved: dict[float, float]  # level -> share of block parameters its width removes
    history: dict[float, list[tuple[int, float]]] = field(default_factory=dict)  # level -> (step, loss)
    seconds: float = 0.0


# --------------------------------------------------------------------------- ranking and reordering


def unit_orders(importance: Importance, layouts: Sequence[LayerLayout]) -> list[Order]:
    """Per block, the original unit at each new position: most important first.

    Query heads (scores (n_heads,) per block) are sorted over the block when
    each has its own key/value head (which moves with it), else within their
    key/value group, which stays in place; neurons are sorted over the block.
    Unscored unit types keep their order; ties keep it too (stable sort).
    """
    orders = []
    for i, layout in enumerate(layouts):
        heads = list(range(layout.n_heads))
        if importance.heads is not None and layout.group_size == 1:  # a head moves with its own key/value head
            heads = torch.argsort(-importance.heads[i].double(), stable=True).tolist()
        elif importance.heads is not None:
            scores = importance.heads[i].double().view(layout.n_kv_heads, layout.group_size)  # (KV, r)
            within = torch.argsort(-scores, dim=1, stable=True)  # (KV, r): positions inside each group, best first
            heads = (within + torch.arange(layout.n_kv_heads).unsqueeze(1) * layout.group_size).reshape(-1).tolist()
        neurons = list(range(layout.ffn))
        if importance.neurons is not None:
            neurons = torch.argsort(-importance.neurons[i].double(), stable=True).tolist()
        orders.append({"heads": heads, "neurons": neurons})
    return orders


def _head_rows(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Row numbers of the given heads' slices, in the order given."""
    heads = torch.as_tensor(list(heads), dtype=torch.long)
    return (heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)


def _permute_heads(adapter: ArchAdapter, block: nn.Module, layout: LayerLayout, order: list[int]) -> None:
    parts, linears, d = adapter.attention, adapter.attention_linears(block), layout.head_dim
    # Without grouping every query head has its own key/value head, which moves with it;
    # with grouping heads move only inside their group, so key/value heads stay.
    kv_order = order if layout.group_size == 1 else list(range(layout.n_kv_heads))
    q_rows, kv_rows = _head_rows(order, d), _head_rows(kv_order, d)
    if parts.is_fused:
        rows = fused_qkv_rows(parts.fused_layout, layout.n_heads, layout.n_kv_heads, d)
        index = torch.empty(sum(len(r) for r in rows.values()), dtype=torch.long)
        for part, chosen in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
            index[rows[part]] = rows[part][chosen]  # each part stays where the layout puts it
        block.set_submodule(parts.fused_qkv, shrink_linear(linears["qkv"], rows=index))
    else:
        block.set_submodule(parts.q, shrink_linear(linears["q"], rows=q_rows))
        block.set_submodule(parts.k, shrink_linear(linears["k"], rows=kv_rows))
        block.set_submodule(parts.v, shrink_linear(linears["v"], rows=kv_rows))
    block.set_submodule(parts.o, shrink_linear(linears["o"], cols=q_rows))


def _permute_neurons(adapter: ArchAdapter, block: nn.Module, order: list[int]) -> None:
    parts, linears, index = adapter.ffn, adapter.ffn_linears(block), torch.as_tensor(order, dtype=torch.long)
    if parts.is_gated:
        block.set_submodule(parts.gate, shrink_linear(linears["gate"], rows=index))
    block.set_submodule(parts.up, shrink_linear(linears["up"], rows=index))
    block.set_submodule(parts.down, shrink_linear(linears["down"], cols=index))


@torch.no_grad()
def permute_units(model: nn.Module, orders: Sequence[Order]) -> None:
    """Reorder every block's heads and neurons in place (same function, new positions)."""
    adapter = adapter_for(model)
    for block, layout, order in zip(adapter.get_blocks(model), layer_layouts(model, adapter), orders, strict=True):
        if order["heads"] != list(range(layout.n_heads)):
            _permute_heads(adapter, block, layout, order["heads"])
        if order["neurons"] != list(range(layout.ffn)):
            _permute_neurons(adapter, block, order["neurons"])


def rank_units(loaded: LoadedModel, units: Sequence[str], importance: str, calibration: Calibration | None) -> Importance:
    """One importance for the model, summed over calibration languages."""
    model, units = loaded.model, set(units)
    if importance == "magnitude":
        return magnitude_importance(model, units, "query")
    if calibration is None:
        raise BabelpruneError(f"Importance '{importance}' needs calibration text; give calibration windows or use 'magnitude'.")
    if importance == "activation":
        per_language = activation_importance(model, calibration, units, "query")
    else:
        mask_id = getattr(loaded.tokenizer, "mask_token_id", None)
        per_language = gradient_importance(model, calibration, units, "query", mask_token_id=mask_id)
    return reduce(lambda a, b: a + b, per_language.values())


# --------------------------------------------------------------------------- widths and masks


def level_selection(model: nn.Module, sparsity: float, units: Sequence[str], tolerance: float = DEFAULT_TOLERANCE) -> Selection:
    """The units a width keeps: in every block, the first units up to a share `sparsity` of its parameters.

    Scores that fall with the position make the structured selection remove
    units from the end of each block ("per-layer" ranking: every block gets
    the same target, heads the target share of attention, the FFN the rest).
    """
    layouts = layer_layouts(model, adapter_for(model))

    def by_position(n: int) -> torch.Tensor:
        return -torch.arange(n, dtype=torch.float64)  # earlier = more important

    importance = Importance(
        heads=[by_position(lay.n_heads) for lay in layouts] if "heads" in units else None,
        neurons=[by_position(lay.ffn) for lay in layouts] if "ffn" in units else None,
        gqa="query",
    )
    return select_units(model, importance, sparsity, "per-layer", tolerance)


@contextlib.contextmanager
def width_masks(model: nn.Module, selection: Selection) -> Iterator[None]:
    """Inside, units `selection` does not keep output zeros (the model keeps its full width).

    Heads: a 0/1 gate per query head on the input of the attention output
    projection, (N, T, H*d). Neurons: a 0/1 mask on the input of the FFN down
    projection, (N, T, ffn). Both equal removing the units: their rows feed
    nothing else.
    """
    adapter = adapter_for(model)
    head_masks: dict[int, torch.Tensor] = {}
    handles = []
    for i, (block, layout, keep) in enumerate(zip(adapter.get_blocks(model), layer_layouts(model, adapter), selection.layers, strict=True)):
        if len(keep.query_heads) < layout.n_heads:
            head_masks[i] = torch.zeros(1, layout.n_heads)  # (G=1, H)
            head_masks[i][0, keep.query_heads] = 1.0
        if len(keep.neurons) < layout.ffn:
            mask = torch.zeros(layout.ffn)
            mask[keep.neurons] = 1.0

            def hook(module, args, mask=mask):
                return (args[0] * mask.to(args[0]), *args[1:])  # mask (ffn,) on the last dim, input's dtype and device

            handles.append(adapter.ffn_linears(block)["down"].register_forward_pre_hook(hook))
    gates = head_gates(model, "query", head_masks.get) if head_masks else contextlib.nullcontext()
    try:
        with gates:
            yield
    finally:
        for handle in handles:
            handle.remove()


def sandwich_levels(levels: Sequence[float], samples: int, generator: torch.Generator) -> list[float]:
    """The widths of one step: the full model, the smallest width, then `samples` random levels in between."""
    middle = list(levels[1:-1])
    picked = torch.randperm(len(middle), generator=generator)[: min(samples, len(middle))].sort().values.tolist()
    return list(dict.fromkeys([levels[0], levels[-1], *(middle[i] for i in picked)]))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over positions.

    student, teacher: logits (..., C); valid: bool (...) positions to count (all when None).
    """
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    s = F.log_softmax(student.float() / temperature, dim=-1)
    per_position = (t.exp() * (t - s)).sum(dim=-1)  # (...)
    if valid is not None:
        per_position = per_position[valid]
    return per_position.mean() * temperature**2


# --------------------------------------------------------------------------- training


@dataclass
class _Objective:
    """How to draw the batch of a step, and get (logits, labels) of a module on it; label -100 is ignored."""

    batch: Callable[[int], Any]
    forward: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]


def _task_objective(tokenizer, kind: str, examples: list[Example], config: DynamicConfig) -> _Objective:
    def batch(step: int):
        chosen = batch_indices(step, len(examples), config.batch_size, config.seed)
        return encode(tokenizer, [examples[i] for i in chosen], kind, config.max_length, config.text_prefix)  # type: ignore[arg-type]

    return _Objective(batch, lambda module, b: (module(b), b.labels))  # (B, C) and (B,), or per token


def _lm_objective(calibration: Calibration, config: DynamicConfig) -> _Objective:
    def batch(step: int) -> torch.Tensor:
        return calibration.ids[batch_indices(step, calibration.ids.shape[0], config.batch_size, config.seed)]  # (B, T)

    def forward(module: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = module(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, :-1]  # (B, T-1, V)
        return logits, ids[:, 1:]

    return _Objective(batch, forward)


def _check(loaded: LoadedModel, config: DynamicConfig, task: Task | None, calibration: Calibration | None) -> None:
    """Every check that can fail, before any work."""
    adapter = adapter_for(loaded.model)
    structure_of(adapter)
    if "heads" in config.units:
        check_head_removal(adapter)
    if task is not None:
        if loaded.kind != "encoder":
            raise BabelpruneError(f"Task heads go on encoders and '{loaded.spec}' is a {loaded.kind}; train it without a task, on calibration text.")
        if task.kind not in ("classification", "pair-classification", "token-classification"):
            raise BabelpruneError(f"Task '{task.name}' is a {task.kind} task with nothing to train; choose a classification task such as bible-genre.")
        if config.teacher == "dense":
            raise BabelpruneError("A dense teacher needs a trained task head, and the head starts random; use teacher 'full-width' or 'auto'.")
    elif loaded.kind != "causal-lm":
        raise BabelpruneError(f"The encoder '{loaded.spec}' is trained dynamically on a task; give one, e.g. bible-genre.")
    elif calibration is None:
        raise BabelpruneError("A language model is trained on calibration windows; give them (see babelprune.api.calibrate).")


def _optimizer(trainee: nn.Module, head: TaskHead | None, config: DynamicConfig):
    """AdamW (no decay on biases and norms; the new classifier at `head_lr`), linear warm-up then decay."""
    classifier = {id(p) for p in head.classifier.parameters()} if head is not None else set()
    groups = []
    for is_head, lr in ((False, config.lr), (True, config.head_lr or config.lr)):
        params = [p for p in trainee.parameters() if p.requires_grad and (id(p) in classifier) == is_head]
        groups.append({"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay, "lr": lr})
        groups.append({"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)
    warmup = max(1, round(config.warmup * config.steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_schedule(step, warmup, config.steps))
    return optimizer, scheduler


def _step(trainee: nn.Module, model: nn.Module, objective: _Objective, batch, levels: list[float],
          selections: dict[float, Selection], dense_teacher: nn.Module | None, config: DynamicConfig) -> dict[float, float]:
    """Forward and backward every width of one step (their gradients add up); each width's loss.

    The full width comes first, so that with a full-width teacher its logits
    (detached) are the targets of the narrower widths.
    """
    target = None
    if dense_teacher is not None:
        with torch.no_grad():
            target = objective.forward(dense_teacher, batch)[0]
    losses = {}
    for level in levels:
        with width_masks(model, selections[level]):
            logits, labels = objective.forward(trainee, batch)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        if config.distill and target is not None:
            kd = distillation_loss(logits, target, config.temperature, labels != IGNORE_INDEX)
            loss = (1.0 - config.distill_weight) * loss + config.distill_weight * kd
        loss.backward()
        if config.distill and dense_teacher is None and target is None:
            target = logits.detach()  # the full width teaches the others
        losses[level] = float(loss.detach())
    return losses


def _train_loop(trainee, model, head, objective, selections, dense_teacher, config, progress, on_step) -> dict[float, list[tuple[int, float]]]:
    optimizer, scheduler = _optimizer(trainee, head, config)
    params = [p for p in trainee.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(config.seed)
    history: dict[float, list[tuple[int, float]]] = {level: [] for level in config.levels}
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress, transient=True)
    trainee.train()
    try:
        with bar:
            bar_id = bar.add_task(f"dynamic training, {len(config.levels)} widths", total=config.steps)
            for step in range(1, config.steps + 1):
                levels = sandwich_levels(config.levels, config.samples_per_step, generator)
                optimizer.zero_grad(set_to_none=True)
                losses = _step(trainee, model, objective, objective.batch(step), levels, selections, dense_teacher, config)
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                for level, loss in losses.items():
                    history[level].append((step, loss))
                bar.update(bar_id, advance=1)
                if on_step is not None:
                    on_step(step, losses)
    finally:
        trainee.eval()
    return history


def _task_info(task: Task, config: DynamicConfig) -> dict:
    return {"task": task.name, "kind": task.kind, "labels": list(task.labels), "pooling": config.pooling,
            "dropout": config.dropout, "text_prefix": config.text_prefix, "max_length": config.max_length}


def train_dynamic(
    loaded: LoadedModel,
    config: DynamicConfig,
    task: Task | None = None,
    train_examples: Sequence[Example] | None = None,
    calibration: Calibration | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[float, float]], None] | None = None,
) -> DynamicResult:
    """Rank, reorder and train `loaded` (in place) so that every level of `config.levels` works when sliced.

    Encoders get a task head and train on `train_examples` (default: the
    task's English training set, or its first language's); causal LMs train
    on the `calibration` windows. `calibration` also feeds the gradient and
    activation importances. `on_step(step, {level: loss})` runs after each step.
    """
    started = time.perf_counter()
    _check(loaded, config, task, calibration)
    model = loaded.model
    # Widths depend on the layouts only, which reordering keeps: unreachable levels fail before any work.
    selections = {level: level_selection(model, level, config.units, config.tolerance) for level in config.levels}
    orders = unit_orders(rank_units(loaded, config.units, config.importance, calibration), layer_layouts(model, adapter_for(model)))
    permute_units(model, orders)
    torch.manual_seed(config.seed)  # the classifier's initialisation and dropout
    head, info = None, None
    if task is not None:
        langs = task.languages()
        examples = list(train_examples) if train_examples is not None else task.examples("en" if "en" in langs else langs[0], "train")
        check_examples(task, examples, "training")
        head, info = TaskHead(model, task.kind, len(task.labels), config.pooling, config.dropout), _task_info(task, config)
        objective = _task_objective(loaded.tokenizer, task.kind, examples, config)
    else:
        objective = _lm_objective(calibration, config)  # type: ignore[arg-type]
    if config.freeze_embeddings:
        adapter_for(model).get_embeddings(model).weight.requires_grad_(False)
    teacher = config.teacher if config.teacher != "auto" else ("full-width" if head is not None else "dense")
    dense_teacher = copy.deepcopy(model).eval().requires_grad_(False) if config.distill and teacher == "dense" else None
    history = _train_loop(head or model, model, head, objective, selections, dense_teacher, config, progress, on_step)
    seconds = round(time.perf_counter() - started, 3)
    metadata = {
        "format_version": FORMAT_VERSION, "method": "dynamic", "parent": loaded.spec, "units": list(config.units),
        "gqa": "query", "importance": config.importance, "levels": list(config.levels), "tolerance": config.tolerance,
        "teacher": teacher if config.distill else None,
        "achieved": {str(level): round(s.sparsity, 6) for level, s in selections.items()},
        "widths": {str(level): {"heads": [len(k.query_heads) for k in s.layers], "ffn": [len(k.neurons) for k in s.layers]}
                   for level, s in selections.items()},
        "order": orders, "task": info, "calibration": calibration.describe() if calibration is not None else None,
        "config": config.model_dump(mode="json"), "steps": config.steps, "seconds": seconds,
    }
    loaded.pruning = metadata
    achieved = {level: s.sparsity for level, s in selections.items()}
    return DynamicResult(DynamicModel(loaded, head, metadata), config, achieved, history, seconds)


# --------------------------------------------------------------------------- saving and slicing


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_head(folder: Path, head: TaskHead, info: dict) -> None:
    _write_json(folder / HEAD_FILE, info)
    weights = {"weight": head.classifier.weight.detach().contiguous(), "bias": head.classifier.bias.detach().contiguous()}
    save_file(weights, str(folder / HEAD_WEIGHTS))


def _check_new(out: Path) -> Path:
    out = Path(out)
    if out.exists():
        raise BabelpruneError(f"Output folder {out} exists; choose another --out or remove it.")
    return out


def save_dynamic(dynamic: DynamicModel, out: Path) -> Path:
    """A normal HF folder (full-width, reordered weights) + `babelprune_dynamic.json` (+ the task head)."""
    out = _check_new(out)
    with atomic_dir(out) as tmp:
        dynamic.loaded.model.save_pretrained(tmp)
        if dynamic.loaded.tokenizer is not None:
            dynamic.loaded.tokenizer.save_pretrained(tmp)
        _write_json(tmp / DYNAMIC_FILE, dynamic.metadata)
        if dynamic.head is not None:
            _write_head(tmp, dynamic.head, dynamic.metadata["task"])
    return out


def read_dynamic_metadata(folder: Path | str) -> dict:
    """What `babelprune_dynamic.json` of a folder holds; BabelpruneError when the folder was not trained dynamically."""
    file = Path(folder) / DYNAMIC_FILE
    if not file.is_file():
        raise BabelpruneError(f"{folder} was not trained dynamically (it has no {DYNAMIC_FILE}); give a folder saved after train-dynamic.")
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
        levels, units = metadata["levels"], metadata["units"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BabelpruneError(f"{file} is corrupt; re-run the dynamic training.") from exc
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise BabelpruneError(f"{file} was written by a newer babelprune; upgrade babelprune to read it.")
    if not levels or not set(units) <= set(DYNAMIC_UNITS):
        raise BabelpruneError(f"{file} is corrupt; re-run the dynamic training.")
    return metadata


def load_task_head(folder: Path | str, encoder: nn.Module) -> TaskHead | None:
    """The task head saved in a dynamic or sliced folder, around `encoder`, in eval mode; None when there is none."""
    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file():
        return None
    try:
        info = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
        head = TaskHead(encoder, info["kind"], len(info["labels"]), info["pooling"], info["dropout"])
        head.classifier.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)))
    except Exception as exc:  # json, safetensors and shape errors all mean the same to the user
        raise BabelpruneError(f"The task head in {folder} is corrupt or missing; re-run the dynamic training.") from exc
    return head.eval()


def load_dynamic(folder: Path | str) -> DynamicModel:
    """Reload a folder written by `save_dynamic` (model in eval mode, metadata in `loaded.pruning`)."""
    metadata = read_dynamic_metadata(folder)
    loaded = load_model(str(folder))
    loaded.pruning = metadata
    return DynamicModel(loaded, load_task_head(folder, loaded.model), metadata)


def slice_width(source: DynamicModel | Path | str, sparsity: float, out: Path | str) -> Path:
    """Cut a dynamic model to `sparsity` without training; save it as a normal smaller model in `out`.

    Keeps the first units of every block (`level_selection`), removes the rest
    physically and saves with `save_structured` (plus the task head, whose
    input width does not change), so `load_structured` / `load_model` reload
    it. A `DynamicModel` given in memory is left untouched.
    """
    out = _check_new(Path(out))
    from_folder = not isinstance(source, DynamicModel)
    dynamic = load_dynamic(source) if from_folder else source  # type: ignore[arg-type]
    sparsity = check_sparsity(sparsity)
    deepest = max(dynamic.levels)
    if sparsity > deepest + 1e-9:
        raise BabelpruneError(f"The model was trained down to sparsity {deepest}, not {sparsity}; slice at {deepest} or less, or train deeper levels.")
    selection = dynamic.selection(sparsity)
    model = dynamic.loaded.model if from_folder else copy.deepcopy(dynamic.loaded.model)
    with torch.no_grad():
        apply_selection(model, selection)
    meta = dynamic.metadata
    metadata = {
        "method": "dynamic", "sparsity": sparsity, "setting": "shared", "achieved_sparsity": round(selection.sparsity, 6),
        "parent": str(source) if from_folder else meta.get("parent"),
        "dynamic": {"units": meta["units"], "importance": meta.get("importance"), "levels": meta["levels"]},
    }
    with atomic_dir(out) as tmp:
        inner = save_structured(model, dynamic.loaded.tokenizer, tmp / "model", metadata)
        for item in inner.iterdir():
            item.rename(tmp / item.name)
        inner.rmdir()
        if dynamic.head is not None:
            _write_head(tmp, dynamic.head, meta["task"])
    return out
