"""Dynamic Sparsification (Li et al., ACL 2022): train once, cut to any size at inference.

1. Rank: the heads and FFN neurons of every block are scored once with a
   structured importance (magnitude, gradient, activation or balanced) and each block's
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

What ranks the units: the gradient and activation importances read
calibration windows. A causal LM trains on them, so they rank it too. An
encoder ranks on the calibration windows when given, else on windows cut
from its own training texts (`training_windows`): the text it is about to
train on, with the encoder's label-free masked-token proxy loss, since the
task head is still random. `babelprune_dynamic.json` records which
(`ranking`).

Grouped-query attention: query heads are the head units and every key/value
head is kept; a block's query heads are ranked within their own group, so
each group keeps the same number of them.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from babelprune.choices import DynamicImportance
from babelprune.data.tasks import Example, Task
from babelprune.devices import CPU_FLOAT32, Placement, dtype_name
from babelprune.errors import BabelpruneError, refuse_existing_output
from babelprune.evaluate.windows import SEPARATOR, start_token_id
from babelprune.models.layouts import (
    check_head_removal,
    layer_layouts,
    structure_of,
)
from babelprune.progress import progress_bar
from babelprune.finetune.heads import IGNORE_INDEX, TaskHead, encode
from babelprune.finetune.trainer import batch_indices, check_examples, linear_schedule
from babelprune.formats.dynamic import (
    DYNAMIC_FILE,
    DYNAMIC_UNITS,
    FORMAT_VERSION,
    REDO,
    head_error,
    read_dynamic_metadata,
    read_head_files,
    write_dynamic_folder,
    write_sliced_folder,
)
from babelprune.formats.hf import load_hf_model
from babelprune.formats.loading import place_model
from babelprune.models.adapters import adapter_for
from babelprune.models.base import LoadedModel
from babelprune.prune.calibration import Calibration
from babelprune.prune.kernels import check_sparsity
from babelprune.prune.structured.selection import (
    DEFAULT_TOLERANCE,
    Selection,
    apply_selection,
)

# ----- the dynamic model in memory: saving, loading, slicing ----------------------------
# Here, beside the training, rather than in babelprune.formats.dynamic: a dynamic model holds a
# task head (babelprune.finetune.heads) and slicing applies a structured selection, while the
# format module below them writes and reads plain parts only.


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


def _head_parts(head: TaskHead, info: dict[str, Any]) -> tuple[dict[str, Any], nn.Linear]:
    """What the format writes of a task head: its description and its classifier."""
    return info, head.classifier


def save_dynamic(dynamic: DynamicModel, out: Path) -> Path:
    """A normal HF folder (full-width, reordered weights) + `babelprune_dynamic.json` (+ the task head)."""
    head = _head_parts(dynamic.head, dynamic.metadata["task"]) if dynamic.head is not None else None
    return write_dynamic_folder(dynamic.loaded.model, dynamic.loaded.tokenizer, dynamic.metadata, head, out)


def load_task_head(folder: Path | str, encoder: nn.Module) -> TaskHead | None:
    """The task head saved in a dynamic or sliced folder, around `encoder`, in eval mode; None when there is none."""
    files = read_head_files(folder)
    if files is None:
        return None
    info, weights = files
    try:
        head = TaskHead(encoder, info["kind"], len(info["labels"]), info["pooling"], info["dropout"])
        head.classifier.load_state_dict(weights)
    except Exception as exc:  # a description or shapes that do not fit mean the same to the user as damaged files
        raise head_error(Path(folder)) from exc
    return head.eval()


def load_dynamic(folder: Path | str, place: Placement = CPU_FLOAT32) -> DynamicModel:
    """Reload a folder written by `save_dynamic` in `place` (model in eval mode, metadata in `loaded.pruning`)."""
    metadata = read_dynamic_metadata(folder)
    loaded = place_model(load_hf_model(Path(folder), str(folder), REDO, place.dtype), place.device, place.dtype)
    loaded.pruning = metadata
    return DynamicModel(loaded, load_task_head(folder, loaded.model), metadata)


def slice_width(source: DynamicModel | Path | str, sparsity: float, out: Path | str, place: Placement | None = None) -> Path:
    """Cut a dynamic model to `sparsity` without training; save it as a normal smaller model in `out`.

    Keeps the first units of every block (`level_selection`), removes the rest
    physically and saves with `save_structured` (plus the task head, whose
    input width does not change), so `load_structured` / `load_model` reload
    it. A folder is loaded in `place` (default: float32 on the CPU), so the cut
    model is saved in its dtype; a `DynamicModel` given in memory is cut where
    and in the type it is, and left untouched. The sliced model's record names both.
    """
    out = Path(out)
    refuse_existing_output(out)
    from_folder = not isinstance(source, DynamicModel)
    if not from_folder and place is not None:
        raise BabelpruneError("A dynamic model in memory is sliced where it is; move it first, or slice its folder.")
    dynamic = load_dynamic(source, place or CPU_FLOAT32) if from_folder else source  # type: ignore[arg-type]
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
        "device": str(dynamic.loaded.device), "dtype": dtype_name(dynamic.loaded.dtype),
    }
    head = _head_parts(dynamic.head, meta["task"]) if dynamic.head is not None else None
    return write_sliced_folder(model, dynamic.loaded.tokenizer, metadata, head, out)


_TOKENIZE_CHUNK = 64  # training texts tokenized at a time while filling the ranking windows


class DynamicConfig(BaseModel):
    """Everything that decides a dynamic training run. Defaults fit e5-small + bible-genre on a CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    levels: tuple[float, ...] = (0.3, 0.5, 0.7)  # sparsities; 0.0 is always added (train-dynamic --levels has the same default)
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
    importance: DynamicImportance = "magnitude"
    tolerance: float = DEFAULT_TOLERANCE
    max_length: int = 64
    ranking_windows: int = 32  # encoders ranked without calibration: windows of max_length tokens per language
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
        for name in ("steps", "batch_size", "lr", "temperature", "max_length", "ranking_windows"):
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
class DynamicResult:
    """What `train_dynamic` did: the trained model and the loss of every width it trained, step by step."""

    model: DynamicModel
    config: DynamicConfig
    achieved: dict[float, float]  # level -> share of block parameters its width removes
    history: dict[float, list[tuple[int, float]]] = field(default_factory=dict)  # level -> (step, loss)
    seconds: float = 0.0


# --------------------------------------------------------------------------- ranking and reordering


@dataclass
class _Objective:
    """How to draw the batch of a step, and get (logits, labels) of a module on it; label -100 is ignored."""

    batch: Callable[[int], Any]
    forward: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]


def _task_objective(tokenizer, kind: str, examples: list[Example], config: DynamicConfig, device: torch.device) -> _Objective:
    def batch(step: int):
        chosen = batch_indices(step, len(examples), config.batch_size, config.seed)
        return encode(tokenizer, [examples[i] for i in chosen], kind, config.max_length, config.text_prefix, device=device)  # type: ignore[arg-type]

    return _Objective(batch, lambda module, b: (module(b), b.labels))  # (B, C) and (B,), or per token


def _lm_objective(calibration: Calibration, config: DynamicConfig, device: torch.device) -> _Objective:
    def batch(step: int) -> torch.Tensor:
        # The windows stay on the CPU; each step's batch alone goes to the model's device.
        return calibration.ids[batch_indices(step, calibration.ids.shape[0], config.batch_size, config.seed)].to(device)  # (B, T)

    def forward(module: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = module(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, :-1]  # (B, T-1, V)
        return logits, ids[:, 1:]

    return _Objective(batch, forward)


def _ranking_text(example: Example) -> str:
    """The words of an example, as one line: its text (and pair), or its tokens."""
    if example.tokens is not None:
        return " ".join(example.tokens)
    return " ".join(part for part in (example.text, example.text_pair) if part)


def training_windows(tokenizer, examples: Sequence[Example], source: str, seq_len: int, windows_per_language: int,
                     prefix: str = "", seed: int = 0) -> Calibration:
    """Calibration-style windows cut from training examples, to rank an encoder's units on its own training text.

    Per language, the examples are visited in a seeded order and their texts
    (`prefix` + text) joined by newlines into one token stream; a window is
    the start token + seq_len - 1 tokens of it, at most `windows_per_language`
    windows per language. When a language's text is shorter than one window,
    every window is shortened to fit it (the windows of a calibration have
    one length).
    """
    by_language: dict[str, list[Example]] = {}
    for example in examples:
        by_language.setdefault(example.lang, []).append(example)
    separator = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    needed = windows_per_language * (seq_len - 1)
    streams = {}
    for lang, chosen in by_language.items():
        chosen = list(chosen)
        random.Random(f"{seed}:{lang}").shuffle(chosen)
        stream: list[int] = []
        for start in range(0, len(chosen), _TOKENIZE_CHUNK):
            texts = [prefix + _ranking_text(example) for example in chosen[start : start + _TOKENIZE_CHUNK]]
            for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
                stream.extend(ids + separator)
            if len(stream) >= needed:
                break
        streams[lang] = stream
    body_length = min(seq_len - 1, *(len(stream) for stream in streams.values()))
    if body_length < 1:
        raise BabelpruneError(f"The training texts of '{source}' have no tokens to rank units on; give examples with text.")
    windows, languages = [], []
    for lang, stream in streams.items():
        count = min(windows_per_language, len(stream) // body_length)
        # On the CPU, as every calibration's windows are: each batch goes to the model's device when it is used.
        body = torch.tensor(stream[: count * body_length], device="cpu").reshape(count, body_length)  # (count, T - 1)
        windows.append(torch.cat([torch.full((count, 1), start_token_id(tokenizer), device="cpu"), body], dim=1))  # (count, T)
        languages += [lang] * count
    return Calibration(torch.cat(windows), tuple(languages), f"{source}:train")


def _ranking_data(loaded: LoadedModel, config: DynamicConfig, task: Task | None, examples: list[Example],
                  calibration: Calibration | None) -> Calibration | None:
    """The windows that rank the units: none for magnitude, else the calibration, else an encoder's training texts."""
    if config.importance == "magnitude":
        return None
    if calibration is not None or task is None:
        return calibration
    return training_windows(loaded.tokenizer, examples, task.name, config.max_length, config.ranking_windows,
                            config.text_prefix, config.seed)


def _ranking_info(loaded: LoadedModel, importance: str, data: Calibration | None, from_training: bool) -> dict:
    """What ranked the units, for the metadata."""
    if data is None:
        return {"importance": importance, "data": "weights"}
    info = {"importance": importance, "data": "task-train" if from_training else "calibration", **data.describe()}
    if importance == "gradient":
        info["loss"] = "causal-lm" if loaded.kind == "causal-lm" else "masked-token proxy"
    return info


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
    bar = progress_bar(progress)
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
    on the `calibration` windows. The gradient and activation importances
    rank on `calibration`; an encoder given none ranks on windows of its
    training texts (`training_windows`). `on_step(step, {level: loss})` runs
    after each step.
    """
    started = time.perf_counter()
    _check(loaded, config, task, calibration)
    model = loaded.model
    # Widths depend on the layouts only, which reordering keeps: unreachable levels fail before any work.
    selections = {level: level_selection(model, level, config.units, config.tolerance) for level in config.levels}
    examples: list[Example] = []
    if task is not None:
        langs = task.languages()
        examples = list(train_examples) if train_examples is not None else task.examples("en" if "en" in langs else langs[0], "train")
        check_examples(task, examples, "training")
    ranking_data = _ranking_data(loaded, config, task, examples, calibration)
    orders = unit_orders(rank_units(loaded, config.units, config.importance, ranking_data), layer_layouts(model, adapter_for(model)))
    permute_units(model, orders)
    torch.manual_seed(config.seed)  # the classifier's initialisation and dropout
    head, info = None, None
    if task is not None:
        head, info = TaskHead(model, task.kind, len(task.labels), config.pooling, config.dropout), _task_info(task, config)
        objective = _task_objective(loaded.tokenizer, task.kind, examples, config, loaded.device)
    else:
        objective = _lm_objective(calibration, config, loaded.device)  # type: ignore[arg-type]
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
        "ranking": _ranking_info(loaded, config.importance, ranking_data, ranking_data is not calibration),
        "config": config.model_dump(mode="json"), "steps": config.steps, "seconds": seconds,
        "device": str(loaded.device), "dtype": dtype_name(loaded.dtype),
    }
    loaded.pruning = metadata
    achieved = {level: s.sparsity for level, s in selections.items()}
    return DynamicResult(DynamicModel(loaded, head, metadata), config, achieved, history, seconds)





# The widths live in their own module; their names are part of this module's API.
from babelprune.prune.structured.dynamic_widths import (  # noqa: E402
    Order,
    distillation_loss,
    level_selection,
    permute_units,
    rank_units,
    sandwich_levels,
    unit_orders,
    width_masks,
)

__all__ = [
    "DYNAMIC_FILE", "DYNAMIC_UNITS", "DynamicConfig", "DynamicModel", "DynamicResult", "Order", "distillation_loss",
    "level_selection", "load_dynamic", "load_task_head", "permute_units", "rank_units", "read_dynamic_metadata",
    "sandwich_levels", "save_dynamic", "slice_width", "train_dynamic", "unit_orders", "width_masks",
]
