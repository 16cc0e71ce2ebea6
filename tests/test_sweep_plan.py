"""Experiment files: grids expand to the hand-counted runs, keys are stable, and every bad file is one sentence with its line."""

from __future__ import annotations

import re

import pytest

from babelprune.errors import BabelpruneError
from babelprune.sweep.runs import plan_experiment
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny.jsonl")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    # Planning never loads a model: a folder with a config.json is enough to name one.
    folder = tmp_path_factory.mktemp("model")
    (folder / "config.json").write_text("{}")
    return folder


def _plan(tmp_path, data, name="exp.yaml"):
    return plan_experiment(write_experiment(tmp_path / name, data))


GRID = [
    {"kind": "dense"},
    {"kind": "oneshot", "prune": {"method": ["magnitude", "wanda", "mwanda"], "sparsity": [0.5, 0.6]}},  # 3 x 2
    {"kind": "structured", "structured": {"units": [["heads"], ["ffn"]], "importance": ["magnitude", "activation"]}},  # 2 x 2
    {"kind": "trim", "trim": {"languages": [["en"], ["en", "fr"]]}},  # 2
]


def test_grid_counts(tmp_path, corpus, model_folder):
    plan = _plan(tmp_path, experiment(model_folder, corpus, GRID))
    assert len(plan.runs) == 1 + 6 + 4 + 2
    kinds = [run.kind for run in plan.runs]
    assert kinds.count("oneshot") == 6 and kinds.count("structured") == 4 and kinds.count("trim") == 2
    two_models = experiment(model_folder, corpus, GRID) | {"models": [str(model_folder), "gemma3-270m"]}
    assert len(_plan(tmp_path, two_models).runs) == 2 * 13


def test_a_field_that_takes_a_list_is_one_value_unless_given_a_list_of_lists(tmp_path, corpus, model_folder):
    runs = [{"kind": "structured", "structured": {"units": ["heads", "ffn"]}},
            {"kind": "trim", "trim": {"languages": ["en", "fr"]}}]
    plan = _plan(tmp_path, experiment(model_folder, corpus, runs))
    assert len(plan.runs) == 2
    assert plan.runs[0].verb.units == ["ffn", "heads"] and plan.runs[1].verb.languages == ["en", "fr"]


def test_nested_fields_and_the_calibration_expand_too(tmp_path, corpus, model_folder):
    runs = [{"kind": "oneshot", "prune": {"method": "mwanda", "mwanda": {"alpha": [0.3, 0.5]}}}]
    data = experiment(model_folder, corpus, runs)
    data["calibration"]["samples"] = [1, 2, 4]
    plan = _plan(tmp_path, data)
    assert len(plan.runs) == 2 * 3
    assert {run.verb.mwanda.alpha for run in plan.runs} == {0.3, 0.5}
    assert {run.calibration.samples for run in plan.runs} == {1, 2, 4}
    # mwanda's default allocation is CWL, part of the method, and the label says it
    assert "mwanda 50% cwl alpha=0.3 samples=1" in {run.label for run in plan.runs}


def test_labels_are_short_names(tmp_path, corpus, model_folder):
    runs = [{"kind": "dense"}, {"kind": "oneshot", "prune": {"method": "sparsegpt", "pattern": "2:4"}},
            {"kind": "oneshot", "prune": {"method": "wanda", "sparsity": 0.6, "setting": "per-language"}},
            {"kind": "structured", "structured": {"units": "heads,ffn", "importance": "magnitude", "sparsity": 0.3}}]
    plan = _plan(tmp_path, experiment(model_folder, corpus, runs))
    assert [run.label for run in plan.runs] == ["dense", "sparsegpt 2:4", "wanda 60% per-language", "structured ffn,heads magnitude 30%"]


def test_a_structured_refit_is_its_own_run_and_reads_calibration_even_with_magnitude(tmp_path, corpus, model_folder):
    runs = [{"kind": "structured", "structured": {"units": "ffn", "importance": "magnitude", "sparsity": 0.3, "refit": [False, True]}}]
    data = experiment(model_folder, corpus, runs)
    plan = _plan(tmp_path, data)
    labels = {run.label: run for run in plan.runs}
    assert sorted(labels) == ["structured ffn magnitude 30%", "structured ffn magnitude 30% + refit"]
    # Without the refit the key is what it was before the option existed (no refit field in the config).
    plain = _plan(tmp_path, experiment(model_folder, corpus, [{"kind": "structured", "structured": {
        "units": "ffn", "importance": "magnitude", "sparsity": 0.3}}]), "plain.yaml").runs[0]
    assert labels["structured ffn magnitude 30%"].key == plain.key
    assert "refit" not in labels["structured ffn magnitude 30%"].verb.to_dict()
    more_samples = data | {"calibration": data["calibration"] | {"samples": 3}}
    changed = {run.label: run.key for run in _plan(tmp_path, more_samples, "more.yaml").runs}
    assert changed["structured ffn magnitude 30% + refit"] != labels["structured ffn magnitude 30% + refit"].key
    assert changed["structured ffn magnitude 30%"] == plain.key


def test_keys_are_stable_ignore_entry_order_and_follow_every_field(tmp_path, corpus, model_folder):
    data = experiment(model_folder, corpus, GRID)
    keys = [run.key for run in _plan(tmp_path, data).runs]
    assert all(re.fullmatch(r"[0-9a-f]{16}", key) for key in keys) and len(set(keys)) == len(keys)
    assert [run.key for run in _plan(tmp_path, data, "again.yaml").runs] == keys
    reordered = data | {"runs": list(reversed(GRID))}
    assert {run.key for run in _plan(tmp_path, reordered).runs} == set(keys)

    by_label = {run.label: run.key for run in _plan(tmp_path, data).runs}
    more_samples = data | {"calibration": data["calibration"] | {"samples": 3}}
    changed = {run.label: run.key for run in _plan(tmp_path, more_samples).runs}
    # Calibration decides wanda's result, not magnitude's, the dense model's or a trim's.
    assert changed["wanda 50%"] != by_label["wanda 50%"]
    assert changed["structured ffn activation 50%"] != by_label["structured ffn activation 50%"]
    for label in ("magnitude 50%", "dense", "trim en", "structured heads magnitude 50%"):
        assert changed[label] == by_label[label]

    longer_eval = data | {"evaluation": [data["evaluation"][0] | {"max_tokens": 128}]}
    assert not set(keys) & {run.key for run in _plan(tmp_path, longer_eval).runs}


def test_a_run_given_twice_is_run_once(tmp_path, corpus, model_folder):
    runs = [{"kind": "oneshot", "prune": {"method": "wanda"}}, {"kind": "oneshot", "prune": {"method": ["wanda", "magnitude"], "sparsity": 0.5}}]
    plan = _plan(tmp_path, experiment(model_folder, corpus, runs))
    assert len(plan.runs) == 2 and plan.duplicates == 1


BAD_FILES = [
    # (text, expected start of the sentence)
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS}]\nruns:\n  - kind: oneshot\n    prune:\n      methd: wanda\n",
     "exp.yaml line 7: runs[0].prune.methd: unknown key 'methd'; the keys here are: allocation"),
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS}]\nruns:\n  - kind: oneshot\n    prune:\n      sparsity:\n        - 0.5\n        - 1.5\n",
     "exp.yaml line 9: runs[0].prune.sparsity[1]: sparsity 1.5 is outside [0, 1)"),
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS}]\nruns:\n  - kind: oneshot\n    prune: {method: wandaa}\n",
     "exp.yaml line 6: runs[0].prune.method: unknown pruning method 'wandaa'; choose one of: magnitude, wanda"),
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS}]\nruns:\n  - kind: onesh0t\n",
     "exp.yaml line 5: runs[0].kind: input should be 'dense', 'oneshot', 'structured', 'trim', 'finetune', 'task-structured' or 'task-dynamic' (given 'onesh0t')"),
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS}]\nruns:\n  - kind: dense\n    prune: {method: wanda}\n",
     "exp.yaml line 5: runs[0]: a 'dense' run has no 'prune' (it takes no config)"),
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS, max_tokens: 0}]\nruns: [{kind: dense}]\n",
     "exp.yaml line 3: evaluation[0].max_tokens: input should be greater than or equal to 1 (given 0)"),
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS}]\nruns:\n  - kind: dense\n  - {kind: oneshot, prune: {sparsity: [0.5, 0.6}\n",
     "exp.yaml line 6: not valid YAML"),
    ("name: x\nmodels: [MODEL]\nname: y\nruns: [{kind: dense}]\n", "exp.yaml line 3: name: the key 'name' is given twice"),
    ("name: x\nmodels: [gemma9]\nevaluation: [{name: e, corpus: CORPUS}]\nruns: [{kind: dense}]\n",
     "exp.yaml line 2: models[0]: unknown model 'gemma9'"),
    ("name: x\nmodels: [MODEL]\nevaluation:\n  - {name: e, corpus: CORPUS, languages: [en, xx]}\nruns: [{kind: dense}]\n",
     "exp.yaml line 4: evaluation[0].languages[1]: corpus 'files' has no language 'xx'"),
    ("name: x\nmodels: [MODEL]\nevaluation:\n  - name: e\n    corpus: no-such-corpus\nruns: [{kind: dense}]\n",
     "exp.yaml line 5: evaluation[0].corpus: unknown corpus 'no-such-corpus'"),
    ("name: x\nmodels: [MODEL]\nruns: [{kind: dense}]\n", "exp.yaml line 1: (top): the experiment has runs to evaluate but no evaluation sets"),
    ("name: x\nmodels: [MODEL]\nevaluation: [{name: e, corpus: CORPUS}]\nruns:\n  - kind: oneshot\n    prune: {method: []}\n",
     "exp.yaml line 6: runs[0].prune.method: an empty list gives no runs"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES, ids=[expected.split(": ", 2)[1] for _, expected in BAD_FILES])
def test_a_bad_file_is_one_sentence_naming_its_line_and_nothing_is_written(monkeypatch, capsys, tmp_path, corpus, model_folder,
                                                                           text, expected):
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("MODEL", str(model_folder)).replace("CORPUS", str(corpus)))
    with pytest.raises(BabelpruneError) as raised:
        plan_experiment(path)
    assert str(raised.value).startswith(expected), str(raised.value)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--store", str(tmp_path / "runs.sqlite"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_dry_run_lists_every_run_and_writes_nothing(monkeypatch, capsys, tmp_path, corpus, model_folder):
    monkeypatch.setenv("COLUMNS", "300")
    path = write_experiment(tmp_path / "exp.yaml", experiment(model_folder, corpus, GRID))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--dry-run")
    assert code == 0, err
    plan = plan_experiment(path)
    for run in plan.runs:
        assert re.search(rf"{run.key}.*{re.escape(run.label)}.*to run", out), run.label
    assert "13 of 13 to run; store tiny.sqlite" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_runs_from_different_entries_with_one_label_are_told_apart(tmp_path, corpus, model_folder):
    runs = [{"kind": "oneshot", "prune": {"method": "mwanda", "sparsity": 0.5}},
            {"kind": "oneshot", "prune": {"method": "mwanda", "sparsity": 0.5, "mwanda": {"alpha": 2.0}}},
            {"kind": "oneshot", "prune": {"method": "wanda", "sparsity": 0.5}}]
    labels = [run.label for run in _plan(tmp_path, experiment(model_folder, corpus, runs)).runs]
    assert labels == ["mwanda 50% cwl alpha=0.5", "mwanda 50% cwl alpha=2.0", "wanda 50%"]


def test_the_mwanda_recipe_is_the_documented_grid():
    from babelprune.sweep.experiment import recipe_path

    plan = plan_experiment(recipe_path("mwanda"), check_data=False)  # the UDHR may not be fetched here
    assert len(plan.runs) == 1 + 4 * 4 + 4 + 3  # dense, 4 methods x 5 settings, M-Wanda's ablation at 50%
    labels = {run.label for run in plan.runs}
    assert {"dense", "magnitude 30%", "mwanda 60%", "sparsegpt 2:4", "mwanda 2:4"} <= labels
    # the default M-Wanda at 50% and its ablation: labels that tell them apart
    assert {"mwanda 50% activation_prob=False", "mwanda 50% activation_prob=True", "mwanda 50% cwl activation_prob=False",
            "mwanda 50% cwl activation_prob=True"} <= labels
    assert len(labels) == len(plan.runs)
    assert {run.model for run in plan.runs} == {"gemma3-270m"}
    by_label = {run.label: run for run in plan.runs}
    assert by_label["wanda 50%"].calibration.languages == ["en", "es", "fr", "zh", "ru", "ar", "hi", "sw"]
    assert by_label["magnitude 50%"].calibration is None
    bible, udhr = plan.runs[0].evaluation
    assert (bible.name, bible.languages, udhr.name, len(udhr.languages)) == ("bible", None, "udhr", 16)


def test_recipes_are_listed_and_an_unknown_one_names_them(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(monkeypatch, capsys, "recipes")
    assert code == 0 and "mwanda  24 runs" in out and "demo  7 runs" in out and "ogueji2022  33 runs" in out
    assert "li2022  61 runs" in out
    code, _, err = run_cli(monkeypatch, capsys, "sweep", "--recipe", "mwandaa")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Unknown recipe 'mwandaa'; the recipes are: " in lines[0]
    named = lines[0].split("the recipes are: ")[1].split(" (see")[0].split(", ")
    assert {"demo", "li2022", "mwanda", "ogueji2022"} <= set(named)
    code, _, err = run_cli(monkeypatch, capsys, "sweep")
    assert code == 2 and "Give an experiment file or --recipe NAME" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["tiny\n", "x" * 201, "../tiny", ".hidden", "a/b"])
def test_an_experiment_name_that_could_not_name_its_store_file_is_refused(tmp_path, corpus, model_folder, name):
    from babelprune.errors import BabelpruneError

    with pytest.raises(BabelpruneError, match="a name is letters, digits"):
        _plan(tmp_path, experiment(model_folder, corpus, [{"kind": "dense"}], name=name))
