"""Sweeps: one configuration per sparsity and seed, one folder each, finished runs reused."""

from __future__ import annotations

import pytest

import babelprune.finetune.sweep as sweep_module
from babelprune.errors import BabelpruneError
from babelprune.finetune.sweep import run_folder_name, run_sweep, sweep_configs
from babelprune.prune.gradual import GMPConfig, RelativeGMPConfig
from tests.test_finetune_trainer import TinyGenreTask, tiny_config
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer


def test_folder_names():
    assert run_folder_name(0.0, 0) == "sparsity0.00-seed0"
    assert run_folder_name(0.98, 2) == "sparsity0.98-seed2"


def test_configs_seed_by_seed_with_default_schedule():
    configs = sweep_configs(TinyGenreTask(), tiny_config(max_steps=20), sparsities=(0.0, 0.5), seeds=(0, 1))
    assert list(configs) == ["sparsity0.00-seed0", "sparsity0.50-seed0", "sparsity0.00-seed1", "sparsity0.50-seed1"]
    assert configs["sparsity0.00-seed1"].gmp is None and configs["sparsity0.00-seed1"].seed == 1
    # The default schedule is in shares of each run's steps: 10% to 70%.
    gmp = configs["sparsity0.50-seed0"].gmp
    assert isinstance(gmp, RelativeGMPConfig) and (gmp.final_sparsity, gmp.start, gmp.end) == (0.5, 0.1, 0.7)
    # 20 steps: start round(2.0) = 2, end round(14.0) = 14, interval ceil(12 / 10) = 2.
    steps = gmp.for_steps(20)
    assert (steps.final_sparsity, steps.start_step, steps.end_step, steps.interval) == (0.5, 2, 14, 2)


def test_configs_keep_the_base_shares_with_the_new_final_sparsity():
    base = tiny_config(gmp=RelativeGMPConfig(final_sparsity=0.3, start=0.0, end=0.5, interval=3, scope="global"))
    gmp = sweep_configs(TinyGenreTask(), base, sparsities=(0.9,), seeds=(0,))["sparsity0.90-seed0"].gmp
    assert gmp == RelativeGMPConfig(final_sparsity=0.9, start=0.0, end=0.5, interval=3, scope="global")


def test_configs_keep_the_base_schedule_with_the_new_final_sparsity():
    base = tiny_config(gmp=GMPConfig(final_sparsity=0.3, start_step=1, end_step=5, interval=1, scope="global"))
    gmp = sweep_configs(TinyGenreTask(), base, sparsities=(0.9,), seeds=(0,))["sparsity0.90-seed0"].gmp
    assert (gmp.final_sparsity, gmp.start_step, gmp.end_step, gmp.scope) == (0.9, 1, 5, "global")


def test_bad_sweeps_are_refused():
    with pytest.raises(BabelpruneError, match="outside"):
        sweep_configs(TinyGenreTask(), tiny_config(), sparsities=(0.0, 1.0), seeds=(0,))
    with pytest.raises(BabelpruneError, match="at least one sparsity and one seed"):
        sweep_configs(TinyGenreTask(), tiny_config(), sparsities=(0.5,), seeds=())


def test_sweep_runs_each_configuration_once_and_resumes(tiny_bert_folder, tmp_path, monkeypatch):  # noqa: F811
    base = tiny_config(max_steps=3, languages=["en"], perturbations=[])
    results = run_sweep(tiny_bert_folder, TinyGenreTask(), (0.0, 0.5), (0,), base, out_dir=tmp_path, progress=False)
    assert [(r.sparsity, r.seed, r.method) for r in results] == [(0.0, 0, "dense"), (0.5, 0, "gmp")]
    assert results[1].achieved_sparsity == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sparsity0.00-seed0", "sparsity0.50-seed0"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep_module, "finetune", no_training)
    again = run_sweep(tiny_bert_folder, TinyGenreTask(), (0.0, 0.5), (0,), base, out_dir=tmp_path, progress=False)
    assert again == results



# ----------------------------------------------------------------------------- stale runs are redone, not reused


class SizedGenreTask(TinyGenreTask):
    """The tiny genre task with an option that changes its training set, as `max_per_label` does."""

    def __init__(self, train_size: int = 16) -> None:
        super().__init__()
        self.train_size = train_size

    def _examples(self, lang, split):
        examples = super()._examples(lang, split)
        return examples[: self.train_size] if split == "train" else examples


def _sweep(model, task, base, out_dir, notices):
    return run_sweep(model, task, (0.0,), (0,), base, out_dir=out_dir, progress=False, on_notice=notices.append)


def _count_trainings(monkeypatch) -> list[str]:
    """Record the folder of every run the sweep trains (the training itself still happens)."""
    trained: list[str] = []
    real_finetune = sweep_module.finetune

    def counting(model, task, config, out, **options):
        trained.append(out.name)
        return real_finetune(model, task, config, out, **options)

    monkeypatch.setattr(sweep_module, "finetune", counting)
    return trained


SWEEP_BASE = dict(max_steps=2, languages=["en"], perturbations=[])


def test_a_changed_model_reruns_the_sweep_run_and_says_so(tiny_bert_folder, other_tiny_folder, tmp_path, monkeypatch):  # noqa: F811
    trained, notices = _count_trainings(monkeypatch), []
    base = tiny_config(**SWEEP_BASE)
    first = _sweep(tiny_bert_folder, TinyGenreTask(), base, tmp_path, notices)
    same = _sweep(tiny_bert_folder, TinyGenreTask(), base, tmp_path, notices)
    assert trained == ["sparsity0.00-seed0"] and notices == [] and same == first  # same settings: reused
    other = _sweep(other_tiny_folder, TinyGenreTask(), base, tmp_path, notices)
    assert trained == ["sparsity0.00-seed0", "sparsity0.00-seed0"]
    assert notices == ["run sparsity0.00-seed0: settings changed (model), rerunning"]
    assert other[0].model == other_tiny_folder
    reloaded = _sweep(other_tiny_folder, TinyGenreTask(), base, tmp_path, notices)
    assert reloaded == other and len(trained) == 2  # the new run is the one kept


def test_a_changed_task_option_reruns_the_sweep_run(tiny_bert_folder, tmp_path, monkeypatch):  # noqa: F811
    trained, notices = _count_trainings(monkeypatch), []
    base = tiny_config(**SWEEP_BASE)
    first = _sweep(tiny_bert_folder, SizedGenreTask(train_size=16), base, tmp_path, notices)
    smaller = _sweep(tiny_bert_folder, SizedGenreTask(train_size=8), base, tmp_path, notices)
    assert len(trained) == 2
    assert notices == ["run sparsity0.00-seed0: settings changed (task train_size, task examples), rerunning"]
    assert (first[0].train_examples, smaller[0].train_examples) == ({"en": 16}, {"en": 8})


def test_a_changed_configuration_reruns_the_sweep_run(tiny_bert_folder, tmp_path, monkeypatch):  # noqa: F811
    trained, notices = _count_trainings(monkeypatch), []
    _sweep(tiny_bert_folder, TinyGenreTask(), tiny_config(**SWEEP_BASE), tmp_path, notices)
    longer = _sweep(tiny_bert_folder, TinyGenreTask(), tiny_config(**{**SWEEP_BASE, "max_steps": 3}), tmp_path, notices)
    assert len(trained) == 2 and longer[0].steps == 3
    assert notices == ["run sparsity0.00-seed0: settings changed (max_steps), rerunning"]
