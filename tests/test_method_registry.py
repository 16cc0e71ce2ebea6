"""A one-shot method registered outside babelprune.prune.methods reaches the config, the CLI and the shared checks.

The toy method below is registered only inside a fixture, after the CLI and
the config were imported, and unregistered afterwards. That it shows in
`babelprune prune --help`, is accepted by `--method`, prunes a saved model and
passes tests/method_matrix.py shows that adding a method is one registered
function: no Literal, flag table or test list to extend.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from babelprune.errors import BabelpruneError
from babelprune.formats.pruned import load_pruned
from babelprune.models.adapters import adapter_for, weight_matrix
from babelprune.prune.config import PruneConfig
from babelprune.prune.engine import named_linears, prune
from babelprune.prune.methods import METHODS, mask_from_scores, register
from tests.cli_runner import run_cli
from tests.method_matrix import MATRIX, loaded, masks_of
from tests.sweep_fixtures import write_tiny_model

TOY = "toy"


@pytest.fixture
def toy():
    """Register TOY (prune the smallest |W_ij|, like magnitude) for one test; return the shapes it was called on."""
    assert TOY not in METHODS
    before = dict(METHODS)
    calls: list[tuple[int, int]] = []

    @register(TOY, needs_calibration=False)
    def smallest_magnitude(task):
        calls.append(tuple(task.weight.shape))
        return None, mask_from_scores(task.weight.abs(), task)

    yield calls
    # Other tests see the registry as the package defines it.
    METHODS.clear()
    METHODS.update(before)


def _help(monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: the choices are not wrapped
    code, out, _ = run_cli(monkeypatch, capsys, "prune", "--help")
    assert code == 0
    return out


def test_prune_help_lists_the_methods_registered_when_it_runs(monkeypatch, capsys, request):
    before = _help(monkeypatch, capsys)
    assert "<" + "|".join(METHODS) + ">" in before and TOY not in before
    request.getfixturevalue("toy")  # registered after the CLI was imported and had already run once
    after = _help(monkeypatch, capsys)
    assert "<" + "|".join(METHODS) + ">" in after and f"|{TOY}>" in after


def test_prune_help_lists_the_methods_without_importing_torch():
    # --help reads the registry, so the registry must stay light: methods.py imports its kernels
    # (and torch) inside the functions that run them. A fresh interpreter shows what it imports.
    code = (
        "import sys\n"
        "from babelprune import cli\n"
        "sys.argv = ['babelprune', 'prune', '--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "COLUMNS": "400"})
    assert "<" + "|".join(METHODS) + ">" in result.stdout
    assert result.stdout.rstrip().endswith("torch imported: False")


def test_a_wrong_method_name_lists_the_toy_in_one_line(toy, monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--out", str(tmp_path / "out"), "--method", "toys")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "'toys'" in lines[0] and f"'{TOY}'" in lines[0] and "'magnitude'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_config_takes_the_toy_only_while_it_is_registered(request):
    with pytest.raises(BabelpruneError, match="Unknown pruning method 'toy'"):
        PruneConfig(method=TOY)
    request.getfixturevalue("toy")
    assert PruneConfig(method=TOY).method == TOY


def test_the_cli_prunes_a_saved_model_with_the_toy(toy, monkeypatch, capsys, tmp_path):
    model = write_tiny_model(tmp_path / "model")
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", "--model", str(model), "--out", str(out),
                                "--method", TOY, "--sparsity", "0.5")
    assert code == 0, err
    assert f"{TOY}: block sparsity 0.0% -> 50.0%" in stdout
    assert toy  # the registered function did the pruning
    saved = load_pruned(out)
    assert saved.pruning["method"] == TOY and saved.pruning["achieved_sparsity"] == pytest.approx(0.5)
    for name, linear in named_linears(saved.model, adapter_for(saved.model)).items():
        zeros_per_row = (weight_matrix(linear) == 0).sum(dim=1)
        assert torch.all(zeros_per_row == weight_matrix(linear).shape[1] // 2), name
    # The toy scores like magnitude, so the engine must give it magnitude's masks.
    reference = loaded("llama")  # write_tiny_model saves tiny_model("llama", seed=0)
    prune(reference, PruneConfig(method="magnitude", sparsity=0.5), None, progress=False)
    expected = masks_of(reference.model)
    assert masks_of(saved.model).keys() == expected.keys()
    for name, mask in masks_of(saved.model).items():
        assert torch.equal(mask, expected[name]), name


@pytest.mark.parametrize("check", MATRIX, ids=lambda check: check.__name__)
def test_the_toy_passes_the_shared_matrix(toy, check):
    check(TOY)
    assert toy
