"""Structured pruning on a task, the protocol of Li et al. (ACL 2022), and Dynamic Sparsification scored the same way.

`run_task_structured(model, run, cache)`:

1. fine-tune the encoder on every language's training data together (the
   `finetune` loop, no pruning) and score the dense model on every language:
   the baseline. It depends only on the model, the task and the
   `FinetuneConfig`, so it is kept in `cache/dense-<digest>/` and every run
   of a sweep that shares it reuses it;
2. per setting: `shared` uses all languages' training data and gives one
   model scored on all of them; `per-language` repeats steps 3 to 5 for each
   language with that language's training examples alone and scores each
   pruned model on its own language only;
3. rank units on a copy of the fine-tuned model: `magnitude` (weights only),
   `gradient` (gate gradients of the task loss, `task_gradient_importance`)
   or `l0` (gates trained jointly with the weights, `train_joint_l0`, their
   allocation kept, `allocation_selection`, their values folded in);
4. remove the units physically (`apply_selection`);
5. fine-tune the pruned model again for `refinetune_steps` and score it:
   per language, every test item's outcome, the model's parameters, the
   share removed and its scoring throughput (items/s).

`run_task_dynamic(model, run, cache)` trains one model with Dynamic
Sparsification on the same training data with the task objective, cuts it
at every level, and scores each cut like a pruned model above.

Both keep scores only unless given `models_out`, a new folder: then
`run_task_structured` saves each scored pruned model (``shared``, or one per
language) in the structured format with its task head, and
`run_task_dynamic` the dynamic model (``dynamic``, which `babelprune slice`
cuts to any level); `load_model` and
`babelprune.finetune.saved.load_finetuned_head` read them back. A sweep of
many runs leaves it out.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from babelprune.cache import atomic_dir
from babelprune.data.tasks import Example, Task, TrainingRun, get_task
from babelprune.errors import BabelpruneError, refuse_existing_output
from babelprune.finetune.config import FinetuneConfig, limit_examples
from babelprune.finetune.heads import TaskHead, predict
from babelprune.finetune.prune_config import TaskDynamicRun, TaskPruneConfig, TaskStructuredRun
from babelprune.finetune.saved import head_info
from babelprune.finetune.task_importance import allocation_selection, fold_gates, task_gradient_importance, train_joint_l0
from babelprune.devices import CPU_FLOAT32, Placement
from babelprune.finetune.trainer import build_head, current_settings, plan_runs, train_run
from babelprune.formats.finetuned import write_task_head
from babelprune.formats.structured import save_structured
from babelprune.models.adapters import adapter_for
from babelprune.formats.loading import load_model
from babelprune.progress import progress_bar
from babelprune.prune.structured.importance import magnitude_importance
from babelprune.prune.structured.selection import apply_selection, select_units
from babelprune.prune.structured.units import layer_layouts, total_block_params
from babelprune.records.task_prune import LanguageOutcomes, ModelScores, TaskPruneResult

SCORED_KINDS = ("classification", "pair-classification")
_CLASSIFIER = "classifier.safetensors"
_DENSE = "dense.json"


def _task(name: str, options: dict) -> Task:
    task = get_task(name, **options)
    if task.kind not in SCORED_KINDS:
        raise BabelpruneError(f"Task '{task.name}' is a {task.kind} task; structured pruning on a task scores "
                              "classification tasks item by item (e.g. bible-genre).")
    return task


# --------------------------------------------------------------------------- scoring


def score_model(head: TaskHead, tokenizer, task: Task, langs, config: FinetuneConfig, name: str,
                dense_block_params: int) -> ModelScores:
    """Every test item's outcome per language (the same items as `finetune` scores), size and items/s."""
    languages, seconds, items = [], 0.0, 0
    for lang in langs:
        examples = limit_examples(task.examples(lang, "test"), config.max_eval_examples, "eval", by_key=True)
        clock = time.perf_counter()
        predicted = predict(head, tokenizer, examples, config.eval_batch_size, config.max_length, config.text_prefix)
        seconds += time.perf_counter() - clock
        items += len(examples)
        outcomes = [int(p == example.label) for p, example in zip(predicted, examples, strict=True)]
        languages.append(LanguageOutcomes(language=lang, keys=[e.key for e in examples], outcomes=outcomes))
    encoder = head.encoder
    blocks = total_block_params(encoder, adapter_for(encoder))
    widths = [{"heads": lay.n_heads, "ffn": lay.ffn} for lay in layer_layouts(encoder, adapter_for(encoder))]
    return ModelScores(
        name=name, languages=languages, parameters=sum(p.numel() for p in head.parameters()), block_parameters=blocks,
        sparsity=round(1 - blocks / dense_block_params, 6), items_per_second=round(items / max(seconds, 1e-9), 3),
        eval_seconds=round(seconds, 3), widths=widths,
    )


# --------------------------------------------------------------------------- the dense fine-tuned model


def _dense_folder(cache: Path, model_spec: str, task: Task, config: FinetuneConfig, runs: list[TrainingRun],
                  place: Placement = CPU_FLOAT32) -> Path:
    # The placement is part of the settings unless it is the CPU in float32: a bfloat16 baseline is its own.
    digest = hashlib.sha256(current_settings(model_spec, task, config, runs, place).key().encode()).hexdigest()[:16]
    return Path(cache) / f"dense-{digest}"


def dense_finetuned(model_spec: str, task: Task, config: FinetuneConfig, cache: Path, bar,
                    place: Placement = CPU_FLOAT32) -> tuple[TaskHead, object, ModelScores, dict]:
    """The fine-tuned dense head in `place`, its tokenizer, its scores on every language and {steps, seconds}; trained once per cache."""
    runs = plan_runs(task, config)  # one multilingual run: every input check happens here
    folder = _dense_folder(cache, model_spec, task, config, runs, place)
    if (folder / _DENSE).is_file():
        loaded = load_model(str(folder / "encoder"), place.dtype, place.device)
        head = TaskHead(loaded.model, task.kind, len(task.labels), config.pooling, config.dropout)
        head.classifier.load_state_dict(load_file(folder / _CLASSIFIER))  # copied into the head's device and dtype
        if not config.trains_embeddings():
            adapter_for(head.encoder).get_embeddings(head.encoder).weight.requires_grad_(False)
        record = json.loads((folder / _DENSE).read_text(encoding="utf-8"))
        return head.eval(), loaded.tokenizer, ModelScores.model_validate(record["scores"]), record["info"]
    clock = time.perf_counter()
    head, tokenizer = build_head(model_spec, task, config, place)
    _, steps = train_run(head, tokenizer, runs[0], config, folder.with_name(folder.name + "-checkpoints"), "dense", bar)
    blocks = total_block_params(head.encoder, adapter_for(head.encoder))
    scores = score_model(head, tokenizer, task, runs[0].eval_languages, config, "dense", blocks)
    info = {"steps": steps, "seconds": round(time.perf_counter() - clock, 3), "train_examples": len(runs[0].train)}
    with atomic_dir(folder, overwrite=True) as tmp:
        head.encoder.save_pretrained(tmp / "encoder")
        tokenizer.save_pretrained(tmp / "encoder")
        save_file({k: v.contiguous() for k, v in head.classifier.state_dict().items()}, tmp / _CLASSIFIER)
        (tmp / _DENSE).write_text(json.dumps({"scores": scores.model_dump(mode="json"), "info": info}), encoding="utf-8")
    return head, tokenizer, scores, info


# --------------------------------------------------------------------------- pruning one model


def _refinetune(head: TaskHead, tokenizer, examples: list[Example], langs, config: FinetuneConfig, steps: int,
                scratch: Path, bar) -> None:
    """Fine-tune the pruned head again for `steps` (its classifier kept: no probe, no new head)."""
    if steps == 0:
        return
    again = config.model_copy(update={"max_steps": steps, "head_init": "random", "checkpoint_every": None})
    train_run(head, tokenizer, TrainingRun("refinetune", examples, tuple(langs)), again, scratch, "refinetune", bar)


def prune_head(head: TaskHead, tokenizer, examples: list[Example], prune: TaskPruneConfig, config: FinetuneConfig) -> dict | None:
    """Rank units of the fine-tuned `head` on `examples` and remove them in place; L0's record (None otherwise)."""
    units = set(prune.units)
    ranking_examples = limit_examples(examples, prune.importance_examples, f"importance-{config.seed}")
    if prune.importance == "l0":
        gates = train_joint_l0(head, tokenizer, examples, units, prune.sparsity, config, prune.l0_steps, prune.l0_lr,
                               prune.l0_lambda_lr, prune.l0_warmup)
        selection, summary = allocation_selection(head.encoder, gates, prune.sparsity, prune.tolerance)
        fold_gates(head.encoder, gates)
        summary["expected_sparsity_last"] = round(gates.expected_sparsity[-1], 6)
        summary["loss_first_last"] = [round(gates.loss[0], 6), round(gates.loss[-1], 6)]
    else:
        if prune.importance == "magnitude":
            importance = magnitude_importance(head.encoder, units, "query")
        else:
            importance = task_gradient_importance(head, tokenizer, ranking_examples, units, config)
        selection, summary = select_units(head.encoder, importance, prune.sparsity, prune.ranking, prune.tolerance), None
    with torch.no_grad():
        apply_selection(head.encoder, selection)
    return summary


def save_pruned_head(head: TaskHead, tokenizer, task: Task, config: FinetuneConfig, metadata: dict, out: Path) -> Path:
    """The structured-pruned encoder of `head` (`save_structured`) with its task head beside it, written whole into `out`."""
    with atomic_dir(out) as tmp:
        inner = save_structured(head.encoder, tokenizer, tmp / "model", metadata)
        for item in inner.iterdir():
            item.rename(tmp / item.name)
        inner.rmdir()
        write_task_head(tmp, head_info(task, config), head.classifier.weight, head.classifier.bias)
    return out


def run_task_structured(
    model_spec: str, run: TaskStructuredRun, cache: Path, progress: bool = False, models_out: Path | None = None,
    place: Placement = CPU_FLOAT32,
) -> TaskPruneResult:
    """Fine-tune, prune by units (shared or per language), fine-tune again and score, in `place`; see the module docstring."""
    task, config, prune = _task(run.task, run.task_options), run.finetune, run.prune
    if models_out is not None:
        refuse_existing_output(models_out)  # before hours of training, not after
    seconds: dict[str, float] = {}
    bar = progress_bar(progress)
    with bar:
        clock = time.perf_counter()
        dense_head, tokenizer, dense, info = dense_finetuned(model_spec, task, config, cache, bar, place)
        seconds["dense"] = round(time.perf_counter() - clock, 3)
        train = plan_runs(task, config)[0].train
        langs = [item.language for item in dense.languages]
        if prune.setting == "shared":
            groups = {"shared": (train, langs)}
        else:
            groups = {lang: ([e for e in train if e.lang == lang], [lang]) for lang in langs}
            empty = [lang for lang, (examples, _) in groups.items() if not examples]
            if empty:
                raise BabelpruneError(f"The training sample has no '{empty[0]}' example to rank units on; "
                                      "raise finetune.max_train_examples or drop that language.")
        models, l0 = [], {}
        dense_blocks = dense.block_parameters
        for name, (examples, score_langs) in groups.items():
            head = copy.deepcopy(dense_head)
            clock = time.perf_counter()
            summary = prune_head(head, tokenizer, examples, prune, config)
            seconds[f"prune {name}"] = round(time.perf_counter() - clock, 3)
            if summary is not None:
                l0[name] = summary
            clock = time.perf_counter()
            _refinetune(head, tokenizer, examples, score_langs, config, prune.refinetune_steps,
                        Path(cache) / "no-checkpoints", bar)
            seconds[f"refinetune {name}"] = round(time.perf_counter() - clock, 3)
            models.append(score_model(head, tokenizer, task, score_langs, config, name, dense_blocks))
            if models_out is not None:
                metadata = {"method": f"task-structured-{prune.importance}", "sparsity": prune.sparsity,
                            "setting": prune.setting, "achieved_sparsity": models[-1].sparsity, "parent": model_spec,
                            "task": task.name, "languages": list(score_langs), "prune": prune.model_dump(mode="json")}
                save_pruned_head(head, tokenizer, task, config, metadata, Path(models_out) / name)
    steps = {"finetune": info["steps"], "refinetune": prune.refinetune_steps}
    if prune.importance == "l0":
        steps["joint_l0"] = prune.l0_steps
    notes = []
    if prune.importance == "l0" and prune.ranking != "global":
        notes.append("ranking is not used by l0: the gates' own allocation over heads and neurons is kept")
    return TaskPruneResult(
        kind="task-structured", task=task.name, metric=task.metric, units=list(prune.units), importance=prune.importance,
        setting=prune.setting, ranking=prune.ranking, target_sparsity=prune.sparsity, dense=dense, models=models,
        steps=steps, l0=l0 or None, seconds=seconds, notes=notes,
    )


def run_task_dynamic(
    model_spec: str, run: TaskDynamicRun, cache: Path, progress: bool = False, models_out: Path | None = None,
    place: Placement = CPU_FLOAT32,
) -> TaskPruneResult:
    """Train once with Dynamic Sparsification on the task in `place`, cut at every level, score each cut on every language."""
    from babelprune.finetune.dynamic import train_dynamic

    task, config, dynamic = _task(run.task, run.task_options), run.finetune, run.dynamic
    if models_out is not None:
        refuse_existing_output(models_out)  # before the training, not after
    seconds: dict[str, float] = {}
    bar = progress_bar(progress)
    with bar:
        _, _, dense, info = dense_finetuned(model_spec, task, config, cache, bar, place)
    train = plan_runs(task, config)[0].train
    langs = [item.language for item in dense.languages]
    clock = time.perf_counter()
    loaded = load_model(model_spec, place.dtype, place.device)
    trained = train_dynamic(loaded, dynamic, task, train_examples=train, progress=progress)
    seconds["dynamic"] = round(time.perf_counter() - clock, 3)
    if models_out is not None:  # the full-width model: every level is a cut of it (`babelprune slice`)
        trained.model.save(Path(models_out) / "dynamic")
    models = []
    for level in trained.model.levels:
        head = copy.deepcopy(trained.model.head)
        with torch.no_grad():
            apply_selection(head.encoder, trained.model.selection(level))
        models.append(score_model(head.eval(), loaded.tokenizer, task, langs, config, f"{level:g}", dense.block_parameters))
    return TaskPruneResult(
        kind="task-dynamic", task=task.name, metric=task.metric, units=list(dynamic.units), importance=dynamic.importance,
        setting="shared", ranking="per-layer", target_sparsity=None, dense=dense, models=models,
        steps={"finetune": info["steps"], "dynamic": dynamic.steps}, seconds=seconds,
        notes=[f"units ranked by {dynamic.importance} before training ({trained.model.metadata['ranking'].get('data')})"],
    )
