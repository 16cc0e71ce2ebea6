"""A fine-tuned run's model on disk: saved at the end of training, loaded back with its task head.

`finetune` writes each training run's model into ``<out>/runs/<run>/model``
(the format: `babelprune.formats.finetuned`); `load_finetuned_head` gives
back the encoder with its `TaskHead`, ready to `predict`. It reads any
babelprune folder with a task head: a fine-tuned run's model, a dynamic
model (`train-dynamic`) or a cut of one (`slice`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from babelprune.data.tasks import Task
from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.heads import TaskHead
from babelprune.formats.finetuned import read_task_head, save_finetuned
from babelprune.models.base import LoadedModel
from babelprune.formats.loading import load_model

MODEL_DIR = "model"  # a run folder's saved model: <out>/runs/<run>/model


def head_info(task: Task, config: FinetuneConfig) -> dict[str, Any]:
    """What the task head's JSON records: enough to rebuild the head and to feed it the inputs it was trained on."""
    return {"task": task.name, "kind": task.kind, "labels": list(task.labels), "pooling": config.pooling,
            "dropout": config.dropout, "text_prefix": config.text_prefix, "max_length": config.max_length}


def save_head_model(head: TaskHead, tokenizer, info: dict[str, Any], metadata: dict[str, Any], out: Path) -> Path:
    """Write `head` (encoder, sparse copy, classifier) and `metadata` to `out`, atomically."""
    classifier = head.classifier
    return save_finetuned(head.encoder, tokenizer, info, classifier.weight, classifier.bias, metadata, out)


@dataclass
class FinetunedModel:
    """An encoder loaded from a babelprune folder, its task head, and what the head's JSON says."""

    loaded: LoadedModel
    head: TaskHead
    info: dict[str, Any]  # task, kind, labels, pooling, dropout, text_prefix, max_length


def load_finetuned_head(folder: Path | str) -> FinetunedModel:
    """The encoder of `folder` (through `load_model`) with its task head, in eval mode."""
    folder = Path(folder)
    redo = "re-run the command that wrote it"
    saved = read_task_head(folder, redo)
    if saved is None:
        raise BabelpruneError(
            f"{folder} has no task head; give a model folder written by `babelprune finetune` (<out>/runs/<run>/model), "
            "`train-dynamic` or `slice`."
        )
    info, tensors = saved
    loaded = load_model(str(folder))
    try:
        head = TaskHead(loaded.model, info["kind"], len(info["labels"]), info["pooling"], info["dropout"])
        with torch.no_grad():
            head.classifier.load_state_dict(tensors)
    except (RuntimeError, TypeError, ValueError) as exc:  # a classifier that does not fit the encoder
        raise BabelpruneError(f"The task head in {folder} does not fit its encoder; {redo}.") from exc
    return FinetunedModel(loaded, head.eval(), info)
