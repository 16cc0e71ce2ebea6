"""The fine-tuning sweep as a sweep of the results store: its experiment file, its runs, old run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig
from babelprune.prune.gradual import GMPConfig, RelativeGMPConfig
from babelprune.records.finetune import FinetuneResult
from babelprune.sweep import finetune_sweep as shortcut
from babelprune.sweep.finetune_sweep import (
    config_for,
    experiment_data,
    is_finetune_sweep_folder,
    plan_data,
    run_finetune_sweep,
    sweep_configs,
)
from babelprune.sweep.runs import plan_experiment
from babelprune.sweep.store import ResultsStore

WIKIANN = {"source": str(Path(__file__).parent / "fixtures" / "tasks" / "wikiann")}
BASE = FinetuneConfig(max_steps=2, batch_size=4, max_train_examples=8, max_eval_examples=2, languages=["en", "sw"],
                      perturbations=[], checkpoint_every=1, max_length=48)


def _sweep(model: str, out: Path, base: FinetuneConfig = BASE, sparsities=(0.0,), seeds=(0,), notices=None):
    return run_finetune_sweep(model, "wikiann", out, task_options=WIKIANN, base=base, sparsities=sparsities, seeds=seeds,
                              progress=False, on_notice=(notices.append if notices is not None else None))


def _no_training(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("babelprune.finetune.trainer.finetune", refuse)


def _records(out: Path) -> dict:
    with ResultsStore(out / "results.sqlite", create=False) as store:
        return {record.label: record for record in store.records()}


# ----------------------------------------------------------------------------- the configurations


def test_configs_go_seed_by_seed_with_the_default_schedule():
    configs = sweep_configs(BASE, sparsities=(0.0, 0.5), seeds=(0, 1))
    assert [(c.gmp.final_sparsity if c.gmp else 0.0, c.seed) for c in configs] == [(0.0, 0), (0.5, 0), (0.0, 1), (0.5, 1)]
    # The default schedule is in shares of each run's steps: 10% to 70%.
    gmp = configs[1].gmp
    assert isinstance(gmp, RelativeGMPConfig) and (gmp.final_sparsity, gmp.start, gmp.end) == (0.5, 0.1, 0.7)
    # 20 steps: start round(2.0) = 2, end round(14.0) = 14, interval ceil(12 / 10) = 2.
    steps = gmp.for_steps(20)
    assert (steps.final_sparsity, steps.start_step, steps.end_step, steps.interval) == (0.5, 2, 14, 2)


def test_configs_keep_the_base_shares_with_the_new_final_sparsity():
    base = FinetuneConfig(gmp=RelativeGMPConfig(final_sparsity=0.3, start=0.0, end=0.5, interval=3, scope="global"))
    assert config_for(base, 0.9, 0).gmp == RelativeGMPConfig(final_sparsity=0.9, start=0.0, end=0.5, interval=3, scope="global")


def test_configs_keep_the_base_schedule_with_the_new_final_sparsity():
    base = FinetuneConfig(gmp=GMPConfig(final_sparsity=0.3, start_step=1, end_step=5, interval=1, scope="global"))
    gmp = config_for(base, 0.9, 2).gmp
    assert (gmp.final_sparsity, gmp.start_step, gmp.end_step, gmp.scope) == (0.9, 1, 5, "global")


def test_bad_sweeps_are_refused():
    with pytest.raises(BabelpruneError, match="outside"):
        sweep_configs(BASE, sparsities=(0.0, 1.0), seeds=(0,))
    with pytest.raises(BabelpruneError, match="at least one sparsity and one seed"):
        sweep_configs(BASE, sparsities=(0.5,), seeds=())


@pytest.mark.parametrize("schedule", [None, RelativeGMPConfig(final_sparsity=0.2, start=0.0, end=0.5, scope="global"),
                                      GMPConfig(final_sparsity=0.2, start_step=0, end_step=1, interval=1)],
                         ids=["default", "shares", "steps"])
def test_the_experiment_file_plans_exactly_the_rule_s_configurations(tiny_bert_folder, schedule):
    base = BASE.model_copy(update={"gmp": schedule, "lr": 3e-4})
    plan, text = plan_data(experiment_data(tiny_bert_folder, "wikiann", WIKIANN, base, (0.0, 0.5, 0.7), (1, 0)))
    planned = [run.verb.config for run in plan.runs]
    wanted = [config_for(base, sparsity, seed) for seed in (1, 0) for sparsity in (0.0, 0.5, 0.7)]
    # The store sweep keeps scores only; the rest is the rule's, in the rule's order (seed by seed).
    assert planned == [config.model_copy(update={"save_model": True}) for config in wanted]
    assert [run.label for run in plan.runs][:3] == ["finetune wikiann dense seed 1", "finetune wikiann gmp 50% seed 1",
                                                    "finetune wikiann gmp 70% seed 1"]
    assert "lr: 0.0003" in text and "save_model" not in text


def test_a_sweep_in_another_dtype_says_so_in_its_file_and_is_a_sweep_of_other_settings(tiny_bert_folder):
    from babelprune.sweep.finetune_sweep import settings_changes, shared_settings

    plain, plain_text = plan_data(experiment_data(tiny_bert_folder, "wikiann", WIKIANN, BASE, (0.0,), (0,)))
    low, low_text = plan_data(experiment_data(tiny_bert_folder, "wikiann", WIKIANN, BASE, (0.0,), (0,), dtype="bfloat16"))
    assert "dtype" not in plain_text and "device" not in plain_text  # the file of a CPU sweep reads as it always has
    assert "dtype: bfloat16" in low_text and [run.dtype for run in low.runs] == ["bfloat16"]
    assert low.runs[0].key != plain.runs[0].key
    # A store of float32 runs is refused to a bfloat16 sweep: the report would average the two.
    assert settings_changes(shared_settings(low.runs[0].config), shared_settings(plain.runs[0].config)) == ["dtype"]


# ----------------------------------------------------------------------------- running into the store


def test_the_sweep_runs_into_its_store_and_skips_done_runs(tiny_bert_folder, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    first = _sweep(tiny_bert_folder, out, sparsities=(0.0, 0.5))
    assert (first.summary.planned, len(first.summary.done), first.summary.skipped, first.imported) == (2, 2, 0, 0)
    records = _records(out)
    assert set(records) == {"finetune wikiann dense seed 0", "finetune wikiann gmp 50% seed 0"}
    assert records["finetune wikiann gmp 50% seed 0"].finetune.achieved_sparsity == 0.5
    # `babelprune sweep <out>/experiment.yaml --store <out>/results.sqlite` would find every run done.
    assert {run.key for run in plan_experiment(out / "experiment.yaml").runs} == {r.key for r in records.values()}
    assert is_finetune_sweep_folder(out)

    _no_training(monkeypatch)
    again = _sweep(tiny_bert_folder, out, sparsities=(0.0, 0.5))
    assert (again.summary.planned, again.summary.done, again.summary.skipped) == (2, [], 2)


def test_a_store_of_other_settings_is_refused_before_anything_is_written(tiny_bert_folder, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    _sweep(tiny_bert_folder, out)
    written = (out / "experiment.yaml").read_text(encoding="utf-8")
    _no_training(monkeypatch)
    with pytest.raises(BabelpruneError, match=r"other settings \(lr\)"):
        _sweep(tiny_bert_folder, out, base=BASE.model_copy(update={"lr": 3e-4}))
    assert (out / "experiment.yaml").read_text(encoding="utf-8") == written
    assert len(_records(out)) == 1


def test_a_folder_of_anything_else_is_not_a_sweep_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    assert not is_finetune_sweep_folder(tmp_path)


# ----------------------------------------------------------------------------- the earlier folder-per-run sweep


def _old_run(model: str, out: Path, config: FinetuneConfig) -> FinetuneResult:
    """A run folder as the earlier `finetune-sweep` wrote it, e.g. <out>/sparsity0.00-seed0/."""
    from babelprune.data.tasks import get_task
    from babelprune.finetune.trainer import finetune

    return finetune(model, get_task("wikiann", **WIKIANN), config, out, progress=False)


def test_old_run_folders_are_imported_not_trained_again(tiny_bert_folder, tmp_path, monkeypatch):
    out = tmp_path / "old"
    old = _old_run(tiny_bert_folder, out / "sparsity0.00-seed0", BASE)
    (out / "report").mkdir()
    (out / "report" / "finetune_report.md").write_text("# the Markdown report\n", encoding="utf-8")
    assert is_finetune_sweep_folder(out)
    _no_training(monkeypatch)
    swept = _sweep(tiny_bert_folder, out)
    assert (swept.imported, swept.summary.skipped, swept.summary.done) == (1, 1, [])
    (record,) = _records(out).values()
    assert record.state == "done" and record.finetune == old
    assert record.measurements["imported_from"] == str(out / "sparsity0.00-seed0")
    assert (out / "sparsity0.00-seed0" / "result.json").is_file()  # the old folder is left as it was
    assert not (out / "report").exists()  # the old Markdown report makes way for the HTML one


def test_an_old_run_of_other_settings_is_trained_again_and_said_so(tiny_bert_folder, tmp_path):
    out = tmp_path / "old"
    _old_run(tiny_bert_folder, out / "sparsity0.00-seed0", BASE.model_copy(update={"max_steps": 1}))
    notices: list[str] = []
    swept = _sweep(tiny_bert_folder, out, notices=notices)
    assert notices == ["run sparsity0.00-seed0: settings changed (max_steps), rerunning"]
    assert (swept.imported, len(swept.summary.done)) == (0, 1)
    (record,) = _records(out).values()
    assert record.finetune.steps == 2 and "imported_from" not in record.measurements
