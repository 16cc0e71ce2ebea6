"""`finetune()`: fine-tune an encoder on a task, optionally pruning it gradually, and score every language.

The loop is plain PyTorch: AdamW (no weight decay on biases and norms),
linear warm-up then linear decay of the learning rate, gradient clipping,
and, with a `GMPConfig`, a `GradualPruner` that raises the sparsity on its
cubic schedule and keeps pruned weights at exactly zero.

Everything random comes from the seed: the classifier's initialisation,
the order of the training examples (a permutation drawn per epoch from
``seed`` and the epoch number, so the batch of any step is known without
replaying the ones before it) and dropout (torch's global generator, seeded
at the start and saved in checkpoints).

Checkpoints (``checkpoint_every`` steps) hold the trainable weights, the
optimizer, the scheduler, the pruning masks, the random state and the step,
written atomically into ``<out>/runs/<run>/checkpoints/step-N``. Starting
again with the same output folder and settings resumes from the last
one and gives the same final weights as an uninterrupted run. Frozen
weights (by default the word-embedding matrix) are not saved: they are
reloaded from the model. Checkpoints are deleted when a run finishes.

When training ends, the run's model is saved (unless ``save_model`` is
False) in ``<out>/runs/<run>/model``: the encoder as a Hugging Face folder,
its compact sparse copy and the task head (`babelprune.finetune.saved`,
`babelprune.formats.finetuned`), which `load_model` and
`load_finetuned_head` read back. Monolingual mode saves one model per
language. ``save_model`` does not change the scores, so it is no part of
the settings; a finished run asked for again with its model, which was not
saved, is trained again to save it.

``<out>/settings.json`` records everything that decides the result (model,
task, configuration; `babelprune.finetune.settings`). A folder holding a
run of other settings is refused, or, with ``rerun_changed`` (sweeps),
cleared and trained again with a notice saying what changed.

Before training, the classifier is fitted as a linear probe on the frozen
encoder's features of the training examples (``head_init="probe"``, the
first stage of LP-FT); the whole model is then fine-tuned from there.

After training, each evaluation language's test set is scored clean and
under each perturbation (`babelprune.evaluate.perturb`); the gap is clean
minus perturbed. Retrieval tasks are not trained: the encoder (magnitude-
pruned at once to the final sparsity when a schedule is given) is scored
by English-to-X top-1 retrieval.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rich.progress import Progress

from babelprune.data.tasks import Example, Task, TrainingRun, get_task, training_runs
from babelprune.devices import CPU_FLOAT32, Placement, placement
from babelprune.errors import BabelpruneError
from babelprune.progress import progress_bar
from babelprune.finetune.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from babelprune.finetune.config import (
    FinetuneConfig,
    check_length_fits,
    default_perturbations,
    limit_training,
    planned_steps,
    record_train_sizes,
    run_schedule,
    scores_config,
)
from babelprune.finetune.evaluation import evaluate_head, evaluate_retrieval
from babelprune.finetune.heads import TaskHead, encode, init_head_by_probe
from babelprune.finetune.saved import MODEL_DIR, head_info, save_head_model
from babelprune.formats.finetuned import FINETUNED_FILE, has_finetuned_model
from babelprune.models.adapters import adapter_for
from babelprune.formats.loading import load_model
from babelprune.names import child_path
from babelprune.finetune.settings import (
    RESULT_FILE,
    RUN_OUTPUTS,
    SETTINGS_FILE,
    RunSettings,
    check_run_folder,
    record_settings,
    recorded_changes,
    run_settings,
)
from babelprune.prune.gradual import GMPConfig, GradualPruner, gmp_targets
from babelprune.records.finetune import FinetuneResult

__all__ = ["FinetuneConfig", "finetune", "plan_runs", "planned_steps"]

StepCallback = Callable[[int, float], None]  # (step just done, its loss)
Notice = Callable[[str], None]  # one line for the user, e.g. why a run is trained again
_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- planning and validation


def check_examples(task: Task, examples: list[Example], where: str) -> None:
    """Raise if an example's label or tags do not fit the task's labels."""
    for example in examples:
        place = f"{where} example '{example.key}' ({example.lang})"
        if task.kind == "token-classification":
            if example.tokens is None or example.tags is None or len(example.tokens) != len(example.tags):
                raise BabelpruneError(f"The {place} does not have one tag per token; fix the task's data.")
            for tag in example.tags:
                task.label_id(tag, place)
        elif task.kind != "retrieval":
            if example.label is None or example.text is None:
                raise BabelpruneError(f"The {place} has no text or no label; fix the task's data.")
            if isinstance(example.label, str):
                raise BabelpruneError(
                    f"The {place} gives its label by name ('{example.label}'); tasks give label indices."
                )
            task.label_id(example.label, place)


def eval_languages(task: Task, config: FinetuneConfig) -> list[str]:
    langs = list(dict.fromkeys(config.languages)) if config.languages is not None else task.languages()
    if not langs:
        raise BabelpruneError(f"Give at least one language to evaluate task '{task.name}' on.")
    for lang in langs:
        task.check_language(lang)
    return langs


def plan_runs(task: Task, config: FinetuneConfig) -> list[TrainingRun]:
    """The training runs of `config`, after checking every input that could fail later (no training yet)."""
    langs = eval_languages(task, config)
    perturbations = config.perturbations if config.perturbations is not None else default_perturbations(task)
    for kind in perturbations:  # the names themselves are checked by FinetuneConfig
        if kind == "entities" and task.kind != "token-classification":
            raise BabelpruneError(
                f"Entity replacement needs a token-classification task, and '{task.name}' is {task.kind}; "
                "use 'words' or 'chars'."
            )
    for lang in langs:
        check_examples(task, task.examples(lang, "test"), "test")
        if "words" in perturbations:
            task.examples(lang, "train")  # the replacement vocabulary comes from it
    if task.kind == "retrieval":
        if config.source_lang not in task.languages():
            raise BabelpruneError(
                f"Retrieval needs queries in '{config.source_lang}', which task '{task.name}' lacks; "
                "set the source language to one of its languages."
            )
        return []
    if not task.labels or len(task.labels) < 2:
        raise BabelpruneError(f"Task '{task.name}' has fewer than 2 labels, so there is nothing to classify.")
    runs = [limit_training(task, run, config) for run in training_runs(task, config.mode, langs, config.source_lang)]
    for run in runs:
        check_examples(task, run.train, "training")
        steps = planned_steps(len(run.train), config)
        if isinstance(config.gmp, GMPConfig) and config.gmp.end_step > steps:
            raise BabelpruneError(
                f"The pruning schedule ends at step {config.gmp.end_step} but run '{run.name}' has only {steps} "
                f"steps; set its end step to {steps} or less, or give the schedule as shares of the run "
                "(RelativeGMPConfig, --gmp-start/--gmp-end)."
            )
    return runs


# --------------------------------------------------------------------------- training


def linear_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: rises linearly to 1 over `warmup_steps`, then falls linearly to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def build_head(model_spec: str, task: Task, config: FinetuneConfig, place: Placement = CPU_FLOAT32) -> tuple[TaskHead, object]:
    """The encoder of `model_spec` in `place` with a fresh head (initialised from the seed), and its tokenizer."""
    loaded = load_model(model_spec, place.dtype, place.device)
    if loaded.kind != "encoder":
        raise BabelpruneError(
            f"Model '{model_spec}' is a {loaded.kind}, not an encoder; fine-tune an encoder such as e5-small."
        )
    check_length_fits(loaded.model.config, config.max_length, model_spec)  # else a long input crashes mid-run
    torch.manual_seed(config.seed)
    head = TaskHead(loaded.model, task.kind, len(task.labels), config.pooling, config.dropout)
    if not config.trains_embeddings():
        adapter_for(loaded.model).get_embeddings(loaded.model).weight.requires_grad_(False)
    return head, loaded.tokenizer


def make_optimizer(head: TaskHead, config: FinetuneConfig, total_steps: int):
    """AdamW with four groups: encoder / new classifier, each with and without weight decay.

    The classifier starts from random weights and gets `head_lr`: with the
    few hundred steps a CPU budget allows, the encoder's small learning rate
    would leave it barely trained. Biases and norm weights (1-D) get no decay.
    """
    classifier = {id(p) for p in head.classifier.parameters()}
    groups = []
    for is_head, lr in ((False, config.lr), (True, config.head_lr or config.lr)):
        params = [p for p in head.parameters() if p.requires_grad and (id(p) in classifier) == is_head]
        groups.append({"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay, "lr": lr})
        groups.append({"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr})
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    warmup_steps = max(1, round(config.warmup * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_schedule(step, warmup_steps, total_steps)
    )
    return optimizer, scheduler


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of 1-based optimizer step `step`: a slice of the epoch's seeded permutation."""
    per_epoch = math.ceil(n_examples / batch_size)
    epoch, position = divmod(step - 1, per_epoch)
    # On the CPU whatever the model's device: the order is the same on every machine.
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch), device="cpu")
    return order[position * batch_size : (position + 1) * batch_size].tolist()


def train_run(
    head: TaskHead, tokenizer, run: TrainingRun, config: FinetuneConfig, folder: Path, fingerprint: str,
    bar: Progress, on_step: StepCallback | None = None,
) -> tuple[GradualPruner | None, int]:
    """Train `head` on the run's examples (resuming from `folder`); return the pruner and the steps done."""
    total = planned_steps(len(run.train), config)
    optimizer, scheduler = make_optimizer(head, config, total)
    schedule = run_schedule(config, total)  # shares of the run become this run's steps
    pruner = GradualPruner(head.encoder, schedule) if schedule is not None else None
    if latest_checkpoint(folder) is None and config.head_init == "probe":  # deterministic: no random numbers
        init_head_by_probe(head, tokenizer, run.train, config.eval_batch_size, config.max_length, config.text_prefix)
    torch.manual_seed(config.seed)  # dropout; replaced by the saved state when resuming
    start = load_checkpoint(folder, head, optimizer, scheduler, pruner, fingerprint)
    if pruner is not None and start == 0:
        pruner.step(0)
    task_id = bar.add_task(f"fine-tuning {run.name}", total=total, completed=start)
    head.train()
    for step in range(start + 1, total + 1):
        chosen = batch_indices(step, len(run.train), config.batch_size, config.seed)
        batch = encode(tokenizer, [run.train[i] for i in chosen], head.kind, config.max_length, config.text_prefix, device=head.device)
        loss = head.loss(head(batch), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if pruner is not None:
            pruner.mask_gradients()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in head.parameters() if p.requires_grad], config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if pruner is not None:
            pruner.step(step)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
            save_checkpoint(folder, step, head, optimizer, scheduler, pruner, fingerprint)
        bar.update(task_id, advance=1)
        if on_step is not None:
            on_step(step, float(loss.detach()))
    bar.remove_task(task_id)
    head.eval()
    return pruner, total


# --------------------------------------------------------------------------- public entry point


def _save_run_model(
    folder: Path, head: TaskHead, tokenizer, model_spec: str, task: Task, config: FinetuneConfig, run: TrainingRun,
    pruner: GradualPruner | None, steps: int, settings: RunSettings,
) -> None:
    """The run's fine-tuned model, its sparse copy and its head in `folder` (`babelprune.formats.finetuned`)."""
    counts: dict[str, int] = {}
    for example in run.train:
        counts[example.lang] = counts.get(example.lang, 0) + 1
    metadata = {
        # What a pruned model's record says (`api.pruning_info` reads it when the folder is evaluated).
        "method": "gmp" if pruner is not None else "dense",
        "sparsity": config.gmp.final_sparsity if config.gmp else 0.0,
        "setting": "shared",
        "achieved_sparsity": round(_achieved_sparsity(pruner, head.encoder, config), 6),
        "parent": model_spec, "task": task.name, "run": run.name, "mode": config.mode, "train_examples": counts,
        "eval_languages": list(run.eval_languages), "steps": steps,
        "gmp": pruner.config.model_dump(mode="json") if pruner is not None else None,  # the run's schedule in steps
        "settings_key": settings.key(), "config": scores_config(config),
    }
    save_head_model(head, tokenizer, head_info(task, config), metadata, folder)


def _fingerprint(settings: RunSettings, run: TrainingRun) -> str:
    """What a checkpoint must have been written by: these settings, this run."""
    return f"{settings.key()}|{run.name}|{len(run.train)}"


def _achieved_sparsity(pruner: GradualPruner | None, encoder, config: FinetuneConfig) -> float:
    """The share of exact zeros in the weights GMP prunes (or would prune, for a dense run)."""
    if pruner is not None:
        return pruner.sparsity_report().overall
    targets = gmp_targets(encoder, bool(config.gmp and config.gmp.include_embeddings))
    return sum(int((p == 0).sum()) for p in targets.values()) / sum(p.numel() for p in targets.values())


def _run_result(
    model_spec, task, config, mode, train_langs, train_counts, pruner, head_encoder, steps, seconds, scores, place: Placement
) -> FinetuneResult:
    return FinetuneResult(**place.record(),
        model=model_spec, task=task.name, mode=mode, train_languages=train_langs, train_examples=train_counts,
        seed=config.seed, sparsity=config.gmp.final_sparsity if config.gmp else 0.0,
        gmp=pruner.config if pruner is not None else None,  # the run's schedule in steps
        achieved_sparsity=_achieved_sparsity(pruner, head_encoder, config), steps=steps, seconds=seconds,
        config=scores_config(config), scores=scores,
    )


def _combine(results: list[FinetuneResult], config: FinetuneConfig, seconds: float) -> FinetuneResult:
    first = results[0]
    counts: dict[str, int] = {}
    for result in results:
        counts.update(result.train_examples)
    return first.model_copy(update={
        "train_languages": list(counts), "train_examples": counts, "mode": config.mode,
        "achieved_sparsity": sum(r.achieved_sparsity for r in results) / len(results),
        "steps": sum(r.steps for r in results), "seconds": seconds,
        "scores": [score for result in results for score in result.scores],
    })


def finetune(
    model_spec: str, task: Task | str, config: FinetuneConfig, out: Path, progress: bool = True,
    on_step: StepCallback | None = None, rerun_changed: bool = False, on_notice: Notice | None = None,
    device: str = "cpu", dtype: str = "auto",
) -> FinetuneResult:
    """Fine-tune `model_spec` on `task` (pruning gradually if `config.gmp`), score every language.

    Writes ``<out>/result.json`` and, per training run, ``<out>/runs/<run>/result.json``
    and, unless `config.save_model` is False, the fine-tuned model with its
    task head in ``<out>/runs/<run>/model`` (`babelprune.finetune.saved`;
    retrieval tasks train nothing and save no model). A run whose result
    exists is not trained again, unless its model is asked for and was not
    saved (it was made with `save_model` False): it is then trained again,
    to the same scores, and `on_notice` is told. An interrupted run resumes
    from its last checkpoint. `on_step(step, loss)` is called after every
    optimizer step. `task` is a `Task` or a built-in task name.

    An `out` that is a file, or a non-empty folder without a fine-tuning
    run's settings file, is refused before anything is loaded. If `out`
    holds a run of other settings (model, task, task options or
    configuration), it is refused, or with `rerun_changed` its outputs are
    removed and the run is trained again, after `on_notice` (default: a
    logged warning) was told what changed.

    The model is loaded and trained in `dtype` on `device` (names as `babelprune.devices.resolve`
    takes them); anything but CPU float32 is part of the settings, so a run resumes only where it began.
    """
    started = time.perf_counter()
    place = placement(device, dtype)  # a device this machine lacks is refused before anything is read
    out = Path(out)
    check_run_folder(out)  # before the task's data or the model is loaded
    task = get_task(task) if isinstance(task, str) else task
    runs = plan_runs(task, config)  # every input check happens here, before any training
    settings = current_settings(model_spec, task, config, runs, place)
    changes = recorded_changes(out, settings)
    if changes and not rerun_changed:
        raise BabelpruneError(
            f"{out} holds a fine-tuning run with other settings ({', '.join(changes)}); "
            "delete that folder or use a new --out."
        )
    if changes:
        (on_notice or _log.warning)(f"run {out.name}: settings changed ({', '.join(changes)}), rerunning")
        clear_run_outputs(out)
    bar = progress_bar(progress)
    with bar:
        if task.kind == "retrieval":
            result = _retrieval_run(model_spec, task, config, started, place)
            record_settings(out, settings)
        else:
            notice = on_notice or _log.warning
            results = [
                _train_and_score(model_spec, task, config, run, out, settings, bar, on_step, notice, place) for run in runs
            ]
            result = _combine(results, config, time.perf_counter() - started)
            result = record_train_sizes(task, config, result, on_notice or _log.warning)
    result.save(out / RESULT_FILE)
    return result


def current_settings(model_spec: str, task: Task, config: FinetuneConfig, runs: list[TrainingRun],
                     place: Placement = CPU_FLOAT32) -> RunSettings:
    """The settings that key `config`'s result on `task` (`runs` from `plan_runs`) when trained in `place`."""
    return run_settings(model_spec, task, config, runs, eval_languages(task, config), place)


def clear_run_outputs(out: Path) -> None:
    """Remove a run folder's settings, result and per-run folders (checkpoints included), nothing else."""
    for name in (SETTINGS_FILE, *RUN_OUTPUTS):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def finished_result(out: Path, settings: RunSettings, needs_models: Sequence[TrainingRun] = ()) -> FinetuneResult | None:
    """The result in `out` if it was made with exactly `settings` (and saved the model of each run of `needs_models`), else None."""
    if any(not has_finetuned_model(run_model_folder(out, run)) for run in needs_models):
        return None  # made with save_model False: `finetune` trains the run again to save its model
    if (out / RESULT_FILE).is_file() and not recorded_changes(out, settings):
        return FinetuneResult.load(out / RESULT_FILE)
    return None


def run_model_folder(out: Path, run: TrainingRun) -> Path:
    """Where `finetune` saves the model of `run`: ``<out>/runs/<run>/model``."""
    return child_path(Path(out) / "runs", run.name, "run name") / MODEL_DIR


def saved_models(out: Path) -> list[Path]:
    """The model folders of the training runs in `out` (one per language in monolingual mode), sorted."""
    return sorted(path.parent for path in (Path(out) / "runs").glob(f"*/{MODEL_DIR}/{FINETUNED_FILE}"))


def _retrieval_run(model_spec: str, task: Task, config: FinetuneConfig, started: float, place: Placement) -> FinetuneResult:
    loaded = load_model(model_spec, place.dtype, place.device)
    check_length_fits(loaded.model.config, config.max_length, model_spec)  # else a long text crashes the scoring
    pruner = None
    schedule = run_schedule(config, 0)  # no training: a schedule of 0 steps prunes at once, at step 0
    if schedule is not None:
        pruner = GradualPruner(loaded.model, schedule)
        pruner.update_masks(schedule.final_sparsity)
    scores = evaluate_retrieval(loaded.model, loaded.tokenizer, task, eval_languages(task, config), config)
    seconds = time.perf_counter() - started
    return _run_result(model_spec, task, config, "none", [], {}, pruner, loaded.model, 0, seconds, scores, place)


def _train_and_score(
    model_spec, task, config, run: TrainingRun, out: Path, settings: RunSettings, bar: Progress, on_step, notice: Notice,
    place: Placement = CPU_FLOAT32,
) -> FinetuneResult:
    """One training run in ``<out>/runs/<run>``: its result if finished (`out`'s settings are checked), else train.

    The model is saved after training and before the result, so a run with a
    result has its model unless it was made with `save_model` False.
    """
    folder = child_path(out / "runs", run.name, "run name")  # a run is named after a language code: checked here
    if (folder / RESULT_FILE).is_file():
        if not config.save_model or has_finetuned_model(folder / MODEL_DIR):
            return FinetuneResult.load(folder / RESULT_FILE)
        # Scores are kept, the model is not: training again (from the seed) gives both.
        notice(f"run {run.name} was scored without saving its model (scores only); training it again to save the model")
    started = time.perf_counter()
    head, tokenizer = build_head(model_spec, task, config, place)
    record_settings(out, settings)  # once the model is known to fit: nothing is written for bad input
    checkpoints = folder / "checkpoints"
    pruner, steps = train_run(head, tokenizer, run, config, checkpoints, _fingerprint(settings, run), bar, on_step)
    if config.save_model:
        _save_run_model(folder / MODEL_DIR, head, tokenizer, model_spec, task, config, run, pruner, steps, settings)
    eval_id = bar.add_task(f"scoring {len(run.eval_languages)} languages", total=None)
    scores = evaluate_head(head, tokenizer, task, run.eval_languages, config)
    bar.remove_task(eval_id)
    counts: dict[str, int] = {}
    for example in run.train:
        counts[example.lang] = counts.get(example.lang, 0) + 1
    seconds = time.perf_counter() - started
    result = _run_result(
        model_spec, task, config, config.mode, list(counts), counts, pruner, head.encoder, steps, seconds, scores, place
    )
    result.save(folder / RESULT_FILE)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result
