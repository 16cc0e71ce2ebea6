"""Sweeps: one configuration per sparsity and seed, one folder each, finished runs reused."""

from __future__ import annotations

import pytest

import babelprune.finetune.sweep as sweep_module
from babelprune.errors import BabelpruneError
from babelprune.finetune.sweep import run_folder_name, run_sweep, sweep_configs
from babelprune.prune.gradual import GMPConfig
from tests.test_finetune_trainer import TinyGenreTask, tiny_config, tiny_folder  # noqa: F401 (fixture)


def test_folder_names():
    assert run_folder_name(0.0, 0) == "sparsity0.00-seed0"
    assert run_folder_name(0.98, 2) == "sparsity0.98-seed2"


def test_configs_seed_by_seed_with_default_schedule():
    configs = sweep_configs(TinyGenreTask(), tiny_config(max_steps=20), sparsities=(0.0, 0.5), seeds=(0, 1))
    assert list(configs) == ["sparsity0.00-seed0", "sparsity0.50-seed0", "sparsity0.00-seed1", "sparsity0.50-seed1"]
    assert configs["sparsity0.00-seed1"].gmp is None and configs["sparsity0.00-seed1"].seed == 1
    # 20 steps: start round(2.0) = 2, end round(14.0) = 14, interval ceil(12 / 10) = 2.
    gmp = configs["sparsity0.50-seed0"].gmp
    assert (gmp.final_sparsity, gmp.start_step, gmp.end_step, gmp.interval) == (0.5, 2, 14, 2)


def test_configs_keep_the_base_schedule_with_the_new_final_sparsity():
    base = tiny_config(gmp=GMPConfig(final_sparsity=0.3, start_step=1, end_step=5, interval=1, scope="global"))
    gmp = sweep_configs(TinyGenreTask(), base, sparsities=(0.9,), seeds=(0,))["sparsity0.90-seed0"].gmp
    assert (gmp.final_sparsity, gmp.start_step, gmp.end_step, gmp.scope) == (0.9, 1, 5, "global")


def test_bad_sweeps_are_refused():
    with pytest.raises(BabelpruneError, match="outside"):
        sweep_configs(TinyGenreTask(), tiny_config(), sparsities=(0.0, 1.0), seeds=(0,))
    with pytest.raises(BabelpruneError, match="at least one sparsity and one seed"):
        sweep_configs(TinyGenreTask(), tiny_config(), sparsities=(0.5,), seeds=())


def test_sweep_runs_each_configuration_once_and_resumes(tiny_folder, tmp_path, monkeypatch):  # noqa: F811
    base = tiny_config(max_steps=3, languages=["en"], perturbations=[])
    results = run_sweep(tiny_folder, TinyGenreTask(), (0.0, 0.5), (0,), base, out_dir=tmp_path, progress=False)
    assert [(r.sparsity, r.seed, r.method) for r in results] == [(0.0, 0, "dense"), (0.5, 0, "gmp")]
    assert results[1].achieved_sparsity == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sparsity0.00-seed0", "sparsity0.50-seed0"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep_module, "finetune", no_training)
    again = run_sweep(tiny_folder, TinyGenreTask(), (0.0, 0.5), (0,), base, out_dir=tmp_path, progress=False)
    assert again == results
    with pytest.raises(BabelpruneError, match="result of another configuration"):
        other = base.model_copy(update={"lr": 0.1})
        run_sweep(tiny_folder, TinyGenreTask(), (0.0,), (0,), other, out_dir=tmp_path, progress=False)
