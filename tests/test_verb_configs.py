"""One config per verb: the CLI's flags map onto config fields in one table, and --config FILE runs the same config."""

from __future__ import annotations

import inspect
import json

import pytest

from babelprune import cli
from babelprune.errors import BabelpruneError
from babelprune.flags import DYNAMIC_FLAGS, PRUNE_FLAGS, STRUCTURED_FLAGS, SWITCHES, TRIM_FLAGS, CONVERTERS, nested_fields, read_verb_config
from babelprune.prune.config import PruneConfig, ReconstructConfig, StructuredConfig, TrimConfig
from babelprune.finetune.dynamic import DynamicConfig
from tests.cli_runner import run_cli
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

CORPUS = "tests/fixtures/tiny.jsonl"
SMALL = ["--calib", CORPUS, "--calib-langs", "en,fr", "--seq-len", "4", "--samples", "1", "--format", "hf"]


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


def _field_default(model, path: str):
    """The default of a dotted field of a config class (through nested configs)."""
    head, _, rest = path.partition(".")
    info = model.model_fields[head]
    if not rest:
        return info.get_default(call_default_factory=True)
    inner = {"mwanda": PruneConfig.model_fields["mwanda"].default_factory, "reconstruct": ReconstructConfig}[head]
    return _field_default(inner if isinstance(inner, type) else type(inner()), rest)


@pytest.mark.parametrize(("command", "model", "table"), [
    (cli.prune_command, PruneConfig, PRUNE_FLAGS),
    (cli.prune_command, StructuredConfig, STRUCTURED_FLAGS),
    (cli.trim_vocab_command, TrimConfig, TRIM_FLAGS),
    (cli.train_dynamic_command, DynamicConfig, DYNAMIC_FLAGS),
])
def test_every_flag_default_is_its_config_field_default(command, model, table):
    defaults = {name: parameter.default for name, parameter in inspect.signature(command).parameters.items()}
    for flag, path in table.items():
        assert flag in defaults, f"{flag} is not an option of {command.__name__}"
        if flag in SWITCHES or (flag == "structured"):
            continue  # a switch (None when off) and the structured units (required, no default)
        if defaults[flag] is None and flag not in CONVERTERS:
            # not given: the field is left out, so it takes the config's own default (PruneConfig resolves
            # sparsity from the pattern and allocation from the method; StructuredConfig's sparsity is 0.5)
            assert path not in nested_fields(table, defaults), f"--{flag} left unset still sets {path}"
            continue
        if path.split(".")[0] in SWITCHES:
            cli_value = defaults[flag]
        else:
            cli_value = CONVERTERS[flag](defaults[flag]) if flag in CONVERTERS else defaults[flag]
        assert cli_value == _field_default(model, path), f"--{flag} defaults to {cli_value!r}, {path} to {_field_default(model, path)!r}"


def test_every_finetune_flag_default_is_its_config_field_default():
    from babelprune.finetune.config import FinetuneConfig
    from babelprune.flags import FINETUNE_FLAGS
    from babelprune.prune.gradual import RelativeGMPConfig

    defaults = {name: parameter.default for name, parameter in inspect.signature(cli.finetune_command).parameters.items()}
    values = {flag: CONVERTERS[flag](defaults[flag]) if flag in CONVERTERS else defaults[flag] for flag in FINETUNE_FLAGS}
    for flag, path in FINETUNE_FLAGS.items():
        head, _, field = path.partition(".")
        if head == "gmp":  # the schedule's fields: RelativeGMPConfig's defaults; --gmp-final 0 is gmp None
            expected = 0.0 if field == "final_sparsity" else RelativeGMPConfig.model_fields[field].default
            assert values[flag] == expected, f"--{flag} defaults to {values[flag]!r}, gmp.{field} to {expected!r}"
        else:
            expected = FinetuneConfig.model_fields[path].default
            assert values[flag] == expected, f"--{flag} defaults to {values[flag]!r}, {path} to {expected!r}"
    assert FinetuneConfig.model_validate(nested_fields(FINETUNE_FLAGS, values)) == FinetuneConfig()


def test_flags_spell_nested_fields_and_a_switched_off_refit_is_none():
    values = {name: None for name in PRUNE_FLAGS} | {"method": "mwanda", "alpha": 0.3, "reconstruct": False, "refit_damp": 9.0,
                                                     "language_weights": "sw=2"}
    data = nested_fields(PRUNE_FLAGS, values)
    assert data["mwanda"]["alpha"] == 0.3 and data["reconstruct"] is None and data["language_weights"] == {"sw": 2.0}
    values["reconstruct"] = True
    assert nested_fields(PRUNE_FLAGS, values)["reconstruct"]["damp"] == 9.0


def test_a_structured_config_file_is_recognised_by_its_units(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("units: heads,ffn\nimportance: magnitude\nsparsity: 0.25\n")
    config = read_verb_config(path, [StructuredConfig, PruneConfig])
    assert isinstance(config, StructuredConfig) and config.units == ["ffn", "heads"] and config.sparsity == 0.25
    path.write_text('{"method": "sparsegpt", "pattern": "2:4"}')  # JSON is read the same way
    assert read_verb_config(path, [StructuredConfig, PruneConfig]) == PruneConfig(method="sparsegpt", pattern="2:4")


def test_a_bad_field_in_a_config_file_names_its_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("method: wanda\n\nsparsity: 2\n")
    with pytest.raises(BabelpruneError, match=r"^p.yaml line 3: sparsity: sparsity 2.0 is outside"):
        read_verb_config(path, [StructuredConfig, PruneConfig])
    path.write_text("method: wanda\nmwanda:\n  alpah: 1\n")
    with pytest.raises(BabelpruneError, match=r"^p.yaml line 3: mwanda.alpah: unknown key 'alpah'; the keys here are: activation_prob, alpha"):
        read_verb_config(path, [StructuredConfig, PruneConfig])


def test_prune_config_file_gives_the_same_model_as_the_flags(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    by_flags, by_file = tmp_path / "flags", tmp_path / "file"
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(by_flags), *SMALL,
                           "--method", "mwanda", "--sparsity", "0.6", "--alpha", "0.2")
    assert code == 0, err
    config = tmp_path / "mwanda.yaml"
    config.write_text("method: mwanda\nsparsity: 0.6\nmwanda: {alpha: 0.2}\n")
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(by_file), *SMALL,
                           "--config", str(config))
    assert code == 0, err
    records = [json.loads((folder / "babelprune_pruning.json").read_text()) for folder in (by_flags, by_file)]
    assert records[0]["config"] == records[1]["config"]
    assert records[1]["config"]["mwanda"]["alpha"] == 0.2 and records[1]["sparsity"] == 0.6
    assert records[0]["layer_sparsity"] == records[1]["layer_sparsity"]


def test_a_structured_config_file_prunes_structurally(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    config = tmp_path / "ffn.yaml"
    config.write_text("units: [ffn]\nimportance: magnitude\nsparsity: 0.25\n")
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(out), "--config", str(config))
    assert code == 0, err
    meta = json.loads((out / "babelprune_structured.json").read_text())
    assert meta["units"] == ["ffn"] and meta["importance"] == "magnitude" and meta["sparsity"] == 0.25
    assert "magnitude structured (ffn)" in stdout


@pytest.mark.parametrize("typed", [["--sparsity", "0.4"], ["--alpha", "0.1", "--method", "wanda"], ["--structured", "ffn"]])
def test_a_config_flag_typed_beside_config_is_refused(monkeypatch, capsys, tmp_path, typed):
    config = tmp_path / "p.yaml"
    config.write_text("method: wanda\n")
    out = tmp_path / "pruned"
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--model", "no-such-model", "--out", str(out), "--config", str(config), *typed)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    for flag in typed[::2]:
        assert flag in lines[0]
    assert "sets the whole configuration" in lines[0]
    assert not out.exists()


def test_flags_outside_the_config_still_apply_with_config(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    config = tmp_path / "p.yaml"
    config.write_text("method: wanda\nsparsity: 0.5\n")
    out = tmp_path / "pruned"
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--model", tiny_lm_folder, "--out", str(out), *SMALL, "--config", str(config))
    assert code == 0, err
    assert json.loads((out / "babelprune_pruning.json").read_text())["calibration"]["languages"] == ["en", "fr"]


def test_a_bad_config_file_is_one_line_with_its_line_number(monkeypatch, capsys, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("method: wanda\npattern: 3:2\n")
    out = tmp_path / "pruned"
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--model", "no-such-model", "--out", str(out), "--config", str(config))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "p.yaml line 2: pattern:" in lines[0], err
    assert not out.exists()


def test_trim_config_file(monkeypatch, capsys, tmp_path, tiny_lm_folder):
    config = tmp_path / "trim.yaml"
    config.write_text(f"languages: [fr]\ncorpus: {CORPUS}\nsplit: all\n")
    out = tmp_path / "trimmed"
    code, stdout, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", tiny_lm_folder, "--out", str(out), "--config", str(config))
    assert code == 0, err
    record = json.loads((out / "babelprune_vocabulary.json").read_text())
    assert "Kept" in stdout
    assert record["languages"] == ["fr"] and record["split"] == "all"
    code, _, err = run_cli(monkeypatch, capsys, "trim-vocab", "--model", tiny_lm_folder, "--out", str(tmp_path / "again"),
                           "--config", str(config), "--min-count", "2")
    assert code == 2 and "--min-count" in err and not (tmp_path / "again").exists()
