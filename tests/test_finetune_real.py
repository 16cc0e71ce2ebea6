"""Gradual pruning while fine-tuning the real `e5-small` on a tiny slice of `bible-genre`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.progress import Progress

from babelprune.data.tasks import get_task
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.evaluation import evaluate_head
from babelprune.finetune.trainer import build_head, plan_runs, train_run
from babelprune.prune.gradual import GMPConfig

pytestmark = pytest.mark.real


def test_e5_small_gmp_on_bible_genre(tmp_path: Path):
    task = get_task("bible-genre", languages=["en", "sw"], max_per_label=2, max_eval=7)
    gmp = GMPConfig(final_sparsity=0.5, start_step=1, end_step=3, interval=1)
    config = FinetuneConfig(max_steps=4, batch_size=7, gmp=gmp, perturbations=["chars"], eval_batch_size=7)
    run = plan_runs(task, config)[0]
    assert len(run.train) == 14  # 2 verses of each of the 7 genres, English only
    head, tokenizer = build_head("e5-small", task, config)
    pruner, steps = train_run(head, tokenizer, run, config, tmp_path / "checkpoints", "real", Progress(disable=True))
    assert steps == 4
    report = pruner.sparsity_report()
    # 12 blocks x (q, k, v, o, up, down), all of even size: exactly half of each is zero.
    assert len(report.per_matrix) == 72 and set(report.per_matrix.values()) == {0.5}
    for name, pruned in pruner.masks.items():
        assert torch.count_nonzero(pruner.targets[name].detach()[pruned]) == 0, name
    scores = evaluate_head(head, tokenizer, task, ["en", "sw"], config)
    assert [(s.language, s.perturbation, s.n_examples) for s in scores] == [
        ("en", None, 7), ("en", "chars", 7), ("sw", None, 7), ("sw", "chars", 7),
    ]
    assert all(0.0 <= s.value <= 1.0 for s in scores)
