"""The `ogueji2022` recipe: the grid it plans, and (real) that the Bible task gives what it asks for."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from babelprune.sweep.experiment import recipe_path
from babelprune.sweep.runs import plan_experiment
from tests.cli_runner import run_cli

SPARSITIES = (0.1, 0.3, 0.5, 0.7, 0.9)
SEEDS = (0, 1, 2)


def test_the_recipe_is_dense_plus_five_sparsities_with_and_without_embeddings_over_three_seeds():
    plan = plan_experiment(recipe_path("ogueji2022"), check_data=False)
    assert len(plan.runs) == (1 + len(SPARSITIES) * 2) * len(SEEDS) == 33 and plan.duplicates == 0
    conditions = Counter()
    for run in plan.runs:
        config = run.verb.config
        gmp = config.gmp
        conditions[(gmp.final_sparsity, gmp.include_embeddings) if gmp else (0.0, None)] += 1
        assert (run.model, run.kind, run.verb.task, run.verb.task_options) == ("e5-small", "finetune", "bible-genre", {"max_eval": 105})
        assert config.mode == "multilingual" and config.train_per_language == {"high": 56, "medium": 28, "low": 14}
        assert config.max_train_examples is None and config.max_eval_examples is None
        assert config.perturbations == ["chars"] and not config.freeze_embeddings
        assert config.languages == ["en", "zh", "ar", "ru", "hi", "ko", "sw", "bn", "tl"]
    expected = {(0.0, None): 3} | {(s, e): 3 for s in SPARSITIES for e in (False, True)}
    assert dict(conditions) == expected
    assert len({run.key for run in plan.runs}) == 33
    labels = {run.label for run in plan.runs}
    assert "finetune bible-genre dense seed 0" in labels and "finetune bible-genre gmp 90% seed 2 include_embeddings=True" in labels


@pytest.mark.real
def test_the_dry_run_lists_every_run_and_the_task_has_the_test_items(monkeypatch, capsys, tmp_path):
    from babelprune.data.tasks import get_task

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", "--recipe", "ogueji2022", "--dry-run")
    assert code == 0, err
    assert "33 of 33 to run; store ogueji2022.sqlite" in out
    assert len(re.findall(r"\bfinetune\b", out)) >= 33 and list(tmp_path.iterdir()) == []
    plan = plan_experiment(recipe_path("ogueji2022"), check_data=False)
    langs = plan.runs[0].verb.config.languages
    task = get_task("bible-genre", max_eval=105)
    assert {lang: len(task.examples(lang, "test")) for lang in langs} == {lang: 105 for lang in langs}
    assert Counter(task.language(lang).resource for lang in langs) == {"high": 3, "medium": 3, "low": 3}
    assert min(len(task.examples(lang, "train")) for lang in langs) >= 56  # every level gets what it asks
