"""Options that say one thing must do it: an option without effect is refused, a grid collapses, mwanda is M-Wanda.

* `prune` refuses, in one sentence and before any model is loaded, an option typed
  where it cannot change the result (`--alpha` with wanda, `--sparsity` with 2:4...).
* PruneConfig refuses a field without effect that differs from its default (config
  files, the Python API); an experiment's grid instead leaves such a field out of the
  run's key, so that its grid points are one run, and its plan says so.
* `--method mwanda` runs the paper's method, CWL layer-wise sparsity included
  (uniform under N:M, which fixes every block's sparsity); the record and the command
  say which of its parts ran.
"""

from __future__ import annotations

import json

import pytest

from babelprune.errors import BabelpruneError
from babelprune.prune.config import PruneConfig
from babelprune.prune.methods import METHODS
from babelprune.sweep.runs import plan_experiment
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment

CORPUS = "tests/fixtures/tiny.jsonl"
SMALL = ["--calib", CORPUS, "--calib-langs", "en,fr", "--seq-len", "4", "--samples", "1", "--format", "hf"]


class Loaded(Exception):
    """Raised in place of loading a model or reading a corpus: a refusal must come before either."""


@pytest.fixture
def no_loading(monkeypatch):
    """Loading a model, opening one from disk, calibrating or reading a corpus raises Loaded."""
    import babelprune.api

    def refuse(*args, **kwargs):
        raise Loaded

    for name in ("load_model", "open_offloaded", "calibrate", "get_corpus"):
        monkeypatch.setattr(babelprune.api, name, refuse)


from tests.test_verb_configs import tiny_lm_folder  # noqa: E402,F401 - a saved tiny causal LM (fixture)


# (options, the start of the sentence): each option typed has no effect in its combination.
REFUSED = [
    (["--pattern", "2:4", "--sparsity", "0.3"], "--sparsity has no effect with --pattern 2:4, which keeps 2 of every 4 weights"),
    (["--pattern", "2:4", "--sparsity", "0.7"], "--sparsity has no effect with --pattern 2:4"),
    (["--pattern", "2:4", "--sparsity", "0.5"], "--sparsity has no effect with --pattern 2:4"),  # the same value says nothing either
    (["--pattern", "4:8", "--method", "mwanda", "--allocation", "cwl"], "--allocation has no effect with --pattern 4:8"),
    (["--method", "wanda", "--alpha", "0.3"], "--alpha is M-Wanda's and has no effect with --method wanda; drop it or use --method mwanda."),
    (["--alpha", "0.5"], "--alpha is M-Wanda's and has no effect with --method wanda"),  # typed at its default value
    (["--method", "sparsegpt", "--beta", "2"], "--beta is M-Wanda's and has no effect with --method sparsegpt"),
    (["--method", "ria", "--activation-prob"], "--activation-prob is M-Wanda's and has no effect with --method ria"),
    (["--method", "magnitude", "--no-language-aware"], "--no-language-aware is M-Wanda's and has no effect with --method magnitude"),
    (["--method", "wanda", "--score", "ria"], "--score is M-Wanda's and has no effect with --method wanda; drop it, or use --method mwanda (or --method ria"),
    (["--method", "mwanda", "--no-language-aware", "--alpha", "1"], "--alpha weighs the cross-language spread of M-Wanda's language-aware statistics, which are off; drop it or turn --language-aware on."),
    (["--method", "mwanda", "--beta", "2"], "--beta sets M-Wanda's activation-probability term, which is off; drop it or turn --activation-prob on."),
    (["--refit-damp", "0.2"], "--refit-damp sets the refit of the kept weights, which is off; add --reconstruct or drop it."),
    (["--refit-solver", "exact"], "--refit-solver sets the refit"),
    (["--refit-shrink", "0.5"], "--refit-shrink sets the refit"),
    (["--refit-iterations", "3"], "--refit-iterations sets the refit"),
    (["--reconstruct", "--refit-solver", "exact", "--refit-iterations", "3"], "--refit-iterations caps the conjugate-gradient steps, which --refit-solver exact does not take"),
    (["--budget-rounds", "2"], "--budget-rounds sets the language budget, which is off; add --language-budget minimax or drop it."),
    (["--holdout-samples", "1"], "--holdout-samples sets the language budget, which is off"),
    (["--method", "magnitude", "--language-budget", "minimax"], "--language-budget changes how much each language counts in the calibration statistics, which --method magnitude"),
    (["--language-budget", "minimax", "--balance", "tokens"], "--language-budget weighs calibration languages, but --balance tokens counts every token once"),
    (["--ranking", "per-layer"], "--ranking is an option of structured pruning and has no effect without --structured"),
    (["--gqa", "groups"], "--gqa is an option of structured pruning"),
    (["--importance", "magnitude"], "--importance is an option of structured pruning"),
    (["--structured", "ffn", "--method", "mwanda"], "--method has no effect on structured pruning (--structured), which removes whole units"),
    (["--structured", "ffn", "--alpha", "0.3"], "--alpha has no effect on structured pruning"),
    (["--structured", "ffn", "--reconstruct"], "--reconstruct has no effect on structured pruning"),
    (["--structured", "ffn", "--values", "fp16"], "--values has no effect on structured pruning"),
    (["--structured", "ffn", "--gqa", "groups"], "--gqa chooses how attention heads are removed, and --structured ffn removes none"),
    (["--structured", "heads", "--importance", "magnitude", "--calib-langs", "en,fr"], "--calib-langs chooses calibration text, which --importance magnitude does not read"),
    (["--refit"], "--refit is an option of structured pruning and has no effect without --structured"),
    (["--structured", "blocks", "--refit"], "--refit refits the linears that read removed heads or FFN neurons, and removed blocks leave none"),
    (["--structured", "ffn", "--importance", "activation", "--setting", "per-language", "--refit"], "--refit changes the weights, but the per-language setting keeps one dense model"),
    (["--method", "magnitude", "--calib-langs", "en,fr"], "--calib-langs chooses calibration text, which --method magnitude with a uniform allocation"),
    (["--method", "magnitude", "--order", "two-pass"], "--order shapes the calibration statistics, which --method magnitude without --reconstruct does not read"),
    (["--method", "magnitude", "--seed", "3"], "--seed chooses the calibration windows, which --method magnitude"),
    (["--setting", "per-language", "--values", "fp16"], "--values sets the type of the sparse copy, which --format hf, the per-language setting's default, does not write"),
    (["--format", "hf", "--values", "bf16"], "--values sets the type of the sparse copy, which --format hf does not write"),
]


@pytest.mark.parametrize(("args", "expected"), REFUSED, ids=[" ".join(args) for args, _ in REFUSED])
def test_an_option_without_effect_is_one_sentence_before_any_model_is_loaded(monkeypatch, capsys, tmp_path, no_loading, args, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "prune", "--out", "pruned", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err + out
    assert lines[0].startswith(f"error: {expected}"), lines[0]
    assert list(tmp_path.iterdir()) == []


# The same options where they do have an effect pass the checks and reach the model (Loaded).
ACCEPTED = [
    ["--pattern", "2:4"],
    ["--method", "mwanda", "--alpha", "0.3", "--no-activation-prob"],
    ["--method", "mwanda", "--activation-prob", "--beta", "2"],
    ["--method", "mwanda", "--score", "ria", "--allocation", "uniform"],
    ["--reconstruct", "--refit-damp", "0.2", "--refit-solver", "exact"],
    ["--language-budget", "minimax", "--budget-rounds", "2", "--holdout-samples", "1"],
    ["--structured", "heads", "--gqa", "groups", "--ranking", "per-layer", "--sparsity", "0.3", "--calib-langs", "en,fr"],
    ["--method", "magnitude", "--allocation", "owl", "--calib-langs", "en,fr"],
    ["--method", "magnitude", "--reconstruct", "--order", "two-pass"],
    ["--setting", "per-language", "--format", "sparse", "--values", "fp16"],
    ["--structured", "heads,ffn", "--importance", "balanced", "--refit", "--sparsity", "0.2"],
    ["--structured", "ffn", "--importance", "magnitude", "--refit", "--calib-langs", "en,fr"],  # the refit reads the text
]


@pytest.mark.parametrize("args", ACCEPTED, ids=" ".join)
def test_the_same_options_where_they_have_an_effect_are_accepted(monkeypatch, capsys, tmp_path, no_loading, args):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Loaded):
        run_cli(monkeypatch, capsys, "prune", "--out", "pruned", *args)


def test_mwanda_on_one_calibration_language_is_refused_before_loading_and_names_the_ablation(monkeypatch, capsys, tmp_path, no_loading):
    # CWL, mwanda's default, compares languages; the engine would only say so after loading the model.
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--out", "pruned", "--method", "mwanda", "--calib-langs", "en")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "CWL layer-wise sparsity (mwanda's default allocation) compares calibration languages" in lines[0]
    assert "--allocation uniform" in lines[0] and list(tmp_path.iterdir()) == []
    with pytest.raises(Loaded):
        run_cli(monkeypatch, capsys, "prune", "--out", "pruned", "--method", "mwanda", "--allocation", "uniform", "--calib-langs", "en")


def test_a_config_file_with_a_field_without_effect_names_its_line(monkeypatch, capsys, tmp_path, no_loading):
    config = tmp_path / "p.yaml"
    config.write_text("method: wanda\nsparsity: 0.5\nmwanda:\n  alpha: 0.3\n")
    code, out, err = run_cli(monkeypatch, capsys, "prune", "--out", str(tmp_path / "pruned"), "--config", str(config))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err + out, err
    assert "p.yaml line 4: mwanda.alpha: mwanda.alpha 0.3 is M-Wanda's and has no effect with method=wanda" in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p.yaml"]


def test_a_config_file_seed_chooses_the_calibration_windows(monkeypatch, capsys, tmp_path):
    # `prune --config` used to calibrate with the command line's seed (0), whatever the file said.
    import babelprune.api

    seeds = []

    def calibrate(loaded, corpus, languages, samples, seq_len, seed):
        seeds.append(seed)
        raise Loaded

    monkeypatch.setattr(babelprune.api, "load_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(babelprune.api, "calibrate", calibrate)
    config = tmp_path / "p.yaml"
    config.write_text("method: wanda\nseed: 7\n")
    with pytest.raises(Loaded):
        run_cli(monkeypatch, capsys, "prune", "--out", str(tmp_path / "pruned"), "--config", str(config))
    assert seeds == [7]


# ----- the config's own rule (files, the Python API) --------------------------------------


@pytest.mark.parametrize(("fields", "expected"), [
    (dict(method="wanda", mwanda={"alpha": 0.3}), "mwanda.alpha 0.3 is M-Wanda's and has no effect with method=wanda"),
    (dict(pattern="2:4", sparsity=0.3), "sparsity 0.3 has no effect with pattern=2:4"),
    (dict(pattern="2:4", allocation="owl"), "allocation owl has no effect with pattern=2:4"),
    (dict(method="mwanda", mwanda={"activation_prob": False, "beta": 2.0}), "mwanda.beta 2.0 sets M-Wanda's activation-probability term"),
    (dict(method="wanda", lam=0.1), "lam 0.1 spreads a layer-wise allocation, and the allocation is uniform"),
    (dict(method="wanda", allocation="cwl", owl_m=3.0), "owl_m 3.0 is OWL's outlier threshold and has no effect with allocation=cwl"),
    (dict(method="wanda", damp=0.1), "damp 0.1 is SparseGPT's"),
    (dict(method="sparsegpt", per_row=False), "per_row False chooses rows or whole layers"),
    (dict(method="wanda", ria_exponent=1.0), "ria_exponent 1.0 is RIA's exponent"),
    (dict(method="magnitude", calib_batch=2), "calib_batch 2 shapes the calibration statistics"),
    (dict(reconstruct={"solver": "exact", "iterations": 9}), "reconstruct.iterations 9 caps the conjugate-gradient steps"),
])
def test_a_config_refuses_a_field_without_effect_that_differs_from_its_default(fields, expected):
    with pytest.raises(BabelpruneError, match="^" + expected.replace("(", r"\(").replace(".", r"\.")):
        PruneConfig(**fields)


def test_a_field_without_effect_left_at_its_default_is_accepted():
    assert PruneConfig(method="wanda", mwanda={"alpha": 0.5}).mwanda.alpha == 0.5
    assert PruneConfig(pattern="2:4", sparsity=0.5).sparsity == 0.5  # N:M's own sparsity may be written
    assert PruneConfig(pattern="3:8", sparsity=0.625).sparsity == 0.625
    assert PruneConfig(method="sparsegpt", damp=0.1).damp == 0.1  # where it has an effect, any value


def test_sparsity_is_what_the_pattern_fixes_unless_unstructured():
    assert PruneConfig().sparsity == 0.5
    assert PruneConfig(pattern="2:4").sparsity == 0.5
    assert PruneConfig(pattern="1:4").sparsity == 0.75  # the record's sparsity is the one pruned to
    assert PruneConfig(pattern="1:4").to_dict()["sparsity"] == 0.75


# ----- mwanda is M-Wanda --------------------------------------------------------------------


def test_mwanda_defaults_to_cwl_unstructured_and_to_uniform_under_nm():
    assert PruneConfig(method="mwanda").allocation == "cwl"
    assert PruneConfig(method="mwanda", sparsity=0.6).to_dict()["allocation"] == "cwl"  # keyed and recorded
    assert PruneConfig(method="mwanda", pattern="2:4").allocation == "uniform"
    assert PruneConfig(method="mwanda", allocation="uniform").allocation == "uniform"  # the ablation
    for method in sorted(set(METHODS) - {"mwanda"}):  # CWL is M-Wanda's own; every other method prunes uniformly
        assert PruneConfig(method=method).allocation == "uniform"
    # A config read back from its record is the same config.
    config = PruneConfig(method="mwanda")
    assert PruneConfig.model_validate(config.to_dict()) == config


def test_mwanda_parts_say_what_ran():
    assert PruneConfig(method="wanda").mwanda_parts() is None
    assert PruneConfig(method="mwanda").mwanda_parts() == {"language_aware": True, "activation_prob": False, "cwl": True, "score": "wanda"}
    assert PruneConfig(method="mwanda", pattern="2:4").mwanda_parts()["cwl"] is False
    parts = PruneConfig(method="mwanda", allocation="uniform", mwanda={"activation_prob": True, "score": "ria"}).mwanda_parts()
    assert parts == {"language_aware": True, "activation_prob": True, "cwl": False, "score": "ria"}


def _record(folder) -> dict:
    return json.loads((folder / "babelprune_pruning.json").read_text())


def test_prune_mwanda_runs_cwl_and_says_which_parts_ran(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    out = tmp_path / "mwanda"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(out), *SMALL, "--method", "mwanda")
    assert code == 0, err
    record = _record(out)
    assert record["allocation"] == "cwl" and record["config"]["allocation"] == "cwl"
    assert "cross_lingual_correlation" in record["allocation_stats"]
    assert record["mwanda_parts"] == {"language_aware": True, "activation_prob": False, "cwl": True, "score": "wanda"}
    assert ("M-Wanda parts: language-aware statistics on (alpha 0.5), activation-probability term off, "
            "CWL layer-wise sparsity on (lam 0.08), wanda score.") in " ".join(stdout.split())

    ablation = tmp_path / "uniform"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(ablation), *SMALL,
                                "--method", "mwanda", "--allocation", "uniform", "--activation-prob")
    assert code == 0, err
    assert _record(ablation)["mwanda_parts"] == {"language_aware": True, "activation_prob": True, "cwl": False, "score": "wanda"}
    assert "activation-probability term on (beta 1), CWL layer-wise sparsity off" in " ".join(stdout.split())
    assert set(_record(ablation)["block_sparsity_targets"]) == {0.5}


def test_prune_mwanda_at_2_4_is_uniform(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    out = tmp_path / "nm"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(out), *SMALL,
                                "--method", "mwanda", "--pattern", "2:4")
    assert code == 0, err
    record = _record(out)
    assert record["allocation"] == "uniform" and record["mwanda_parts"]["cwl"] is False and record["sparsity"] == 0.5
    assert "CWL layer-wise sparsity off" in stdout


def test_other_methods_record_no_mwanda_parts_and_print_none(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    out = tmp_path / "wanda"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(out), *SMALL)
    assert code == 0, err
    assert _record(out)["mwanda_parts"] is None and "M-Wanda parts" not in stdout


# ----- sweeps: a field without effect is left out of the key -------------------------------


from tests.test_sweep_plan import corpus, model_folder  # noqa: E402,F401 - the plan tests' fixtures (planning loads no model)


def _plan(tmp_path, model_folder, corpus, runs, name="exp.yaml"):
    return plan_experiment(write_experiment(tmp_path / name, experiment(model_folder, corpus, runs)))


def test_a_grid_over_an_option_without_effect_is_one_run_per_model_and_the_plan_says_so(tmp_path, corpus, model_folder):
    grid = [{"kind": "oneshot", "prune": {"method": ["wanda", "mwanda"], "sparsity": [0.5, 0.6], "mwanda": {"alpha": [0.3, 0.5]}}}]
    plan = _plan(tmp_path, model_folder, corpus, grid)
    methods = [run.verb.method for run in plan.runs]
    assert methods.count("wanda") == 2 and methods.count("mwanda") == 4  # 8 grid points for wanda would be 4 + 4
    assert len({run.key for run in plan.runs}) == 6
    for run in plan.runs:
        if run.verb.method == "wanda":
            assert run.verb.mwanda.alpha == 0.5 and "alpha" not in run.label  # back at the default, out of the label
    assert plan.notes == ("mwanda.alpha has no effect on wanda runs, so their keys leave it out: 4 grid points are 2 runs.",)
    # The collapsed run is the plain one: the same key as wanda written without alpha.
    plain = _plan(tmp_path, model_folder, corpus, [{"kind": "oneshot", "prune": {"method": "wanda", "sparsity": [0.5, 0.6]}}], "plain.yaml")
    assert {run.key for run in plain.runs} == {run.key for run in plan.runs if run.verb.method == "wanda"}
    assert plain.notes == ()


def test_a_grid_over_sparsity_and_allocation_gives_one_nm_run(tmp_path, corpus, model_folder):
    grid = [{"kind": "oneshot", "prune": {"method": "wanda", "pattern": ["unstructured", "2:4"], "sparsity": [0.5, 0.7],
                                          "allocation": ["uniform", "owl"]}}]
    plan = _plan(tmp_path, model_folder, corpus, grid)
    assert len(plan.runs) == 4 + 1
    nm = [run for run in plan.runs if run.verb.nm]
    assert len(nm) == 1 and (nm[0].verb.sparsity, nm[0].verb.allocation) == (0.5, "uniform") and nm[0].label == "wanda 2:4"
    assert set(plan.notes) == {
        "sparsity has no effect on 2:4 runs, so their keys leave it out: 4 grid points are 1 run.",
        "allocation has no effect on 2:4 runs, so their keys leave it out: 4 grid points are 1 run.",
    }


def test_a_grid_whose_options_all_have_an_effect_has_no_notes(tmp_path, corpus, model_folder):
    grid = [{"kind": "oneshot", "prune": {"method": "mwanda", "mwanda": {"alpha": [0.3, 0.5], "activation_prob": True, "beta": [1.0, 2.0]}}}]
    plan = _plan(tmp_path, model_folder, corpus, grid)
    assert len(plan.runs) == 4 and len({run.key for run in plan.runs}) == 4 and plan.notes == ()


def test_the_prune_seed_of_a_sweep_is_left_out_since_the_calibration_seed_chooses_the_windows(tmp_path, corpus, model_folder):
    plan = _plan(tmp_path, model_folder, corpus, [{"kind": "oneshot", "prune": {"method": "wanda", "seed": [0, 1, 2]}}])
    assert len(plan.runs) == 1 and plan.runs[0].verb.seed == 0
    assert plan.notes == ("seed has no effect on oneshot runs of a sweep, so their keys leave it out: 3 grid points are 1 run.",)


def test_mwanda_runs_are_keyed_on_their_allocation(tmp_path, corpus, model_folder):
    runs = [{"kind": "oneshot", "prune": {"method": "mwanda"}}, {"kind": "oneshot", "prune": {"method": "mwanda", "allocation": "cwl"}},
            {"kind": "oneshot", "prune": {"method": "mwanda", "allocation": "uniform"}}]
    plan = _plan(tmp_path, model_folder, corpus, runs)
    # the default and the written cwl are one run; the uniform ablation is another
    assert sorted(run.label for run in plan.runs) == ["mwanda 50%", "mwanda 50% cwl"] and plan.duplicates == 1
    assert {run.config["verb"]["allocation"] for run in plan.runs} == {"cwl", "uniform"}


def test_the_mwanda_recipe_keeps_uniform_rows_and_the_demo_runs_the_paper_method():
    from babelprune.sweep.experiment import recipe_path

    mwanda = plan_experiment(recipe_path("mwanda"), check_data=False)
    by_label = {run.label: run for run in mwanda.runs}
    # its results tables were measured with uniform mwanda rows; the recipe still says so
    assert by_label["mwanda 60%"].verb.allocation == "uniform"
    assert by_label["mwanda 50% activation_prob=True"].verb.allocation == "uniform"
    assert by_label["mwanda 50% cwl activation_prob=False"].verb.allocation == "cwl"
    demo = plan_experiment(recipe_path("demo"), check_data=False)
    labels = {run.label for run in demo.runs}
    assert "mwanda 50% cwl" in labels and "mwanda 2:4 + refit" in labels
