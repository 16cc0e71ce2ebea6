"""Model folders never run their own code: `auto_map` folders and pickled weights are refused with one sentence.

A folder whose config.json maps a class to a Python file beside it makes
transformers ask "Do you wish to run the custom code? [y/N]" (answering y
runs it), and a pytorch_model.bin is unpickled, which can run code too. The
planted modules and pickles below write a marker file when they run, so
each test checks both the sentence and that nothing ran.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from babelprune.errors import BabelpruneError
from babelprune.formats.hf import load_config
from babelprune.formats.loading import load_model, resolve_spec
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _module_that_marks(marker: Path, class_name: str, base: str) -> str:
    """Source of a module that writes `marker` when imported, as code shipped with a model would run."""
    return (f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
            f"from transformers import {base}\nclass {class_name}({base}):\n    model_type = 'evilnet'\n")


def plant_remote_code_folder(folder: Path, marker: Path) -> Path:
    """A folder whose architecture transformers does not know, so only its own code could load it."""
    folder.mkdir()
    config = {
        "model_type": "evilnet",
        "architectures": ["EvilModel"],
        "auto_map": {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "configuration_evil.EvilConfig"},
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "configuration_evil.py").write_text(_module_that_marks(marker, "EvilConfig", "PretrainedConfig"))
    (folder / "modeling_evil.py").write_text(_module_that_marks(marker, "EvilModel", "PreTrainedModel"))
    char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "bert"
    tiny_model("bert").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


class _MarksWhenUnpickled:
    """A pickle payload: unpickling it calls Path.write_text, as a malicious checkpoint would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "ran")


# ----- auto_map ---------------------------------------------------------------------


def test_eval_refuses_a_folder_with_its_own_code_even_when_the_user_answers_yes(tmp_path):
    # A real process with "y" on stdin: before the fix transformers asked and then imported the module.
    marker = tmp_path / "MARKER"
    folder = plant_remote_code_folder(tmp_path / "evil", marker)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    done = subprocess.run(
        [sys.executable, "-m", "babelprune.cli", "eval", "--model", str(folder), "--corpus", "tests/fixtures/tiny.jsonl"],
        input="y\n", capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    assert not marker.exists(), "the folder's own code ran"
    assert "Do you wish to run the custom code" not in said
    assert said == (f"error: Model folder {folder} asks to run its own code (auto_map AutoModel -> "
                    "modeling_evil.EvilModel in config.json); babelprune never runs code from a model folder: "
                    "use a folder whose model transformers implements.")


def test_load_model_refuses_auto_map_in_config_before_transformers_reads_it(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    folder = plant_remote_code_folder(tmp_path / "evil", marker)
    monkeypatch.setattr("builtins.input", lambda *_: "y")  # were transformers to ask, the answer would be yes
    with pytest.raises(BabelpruneError, match=r"auto_map AutoModel -> modeling_evil\.EvilModel in config\.json"):
        load_model(str(folder))
    assert not marker.exists()


def test_load_model_refuses_auto_map_in_tokenizer_config(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "tok")
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    with pytest.raises(BabelpruneError) as caught:
        load_model(str(folder))
    assert "(auto_map AutoTokenizer -> tokenization_evil.EvilTokenizer in tokenizer_config.json)" in str(caught.value)


def test_saved_format_folders_are_checked_too(tmp_path):
    # A babelprune marker file routes the folder to a saved-format loader, which must refuse as well.
    marker = tmp_path / "MARKER"
    folder = plant_remote_code_folder(tmp_path / "evil", marker)
    (folder / "babelprune_structured.json").write_text('{"format_version": 1}', encoding="utf-8")
    with pytest.raises(BabelpruneError, match="asks to run its own code"):
        load_model(str(folder))
    assert not marker.exists()


def test_resolve_spec_refuses_before_offloaded_pruning_reads_the_config(tmp_path):
    folder = plant_remote_code_folder(tmp_path / "evil", tmp_path / "MARKER")
    with pytest.raises(BabelpruneError, match="auto_map AutoModel"):
        resolve_spec(str(folder))


def test_a_hub_model_with_its_own_code_becomes_one_sentence(monkeypatch):
    # Hub files are only seen once transformers fetched them; its refusal (trust_remote_code=False) is translated.
    def refuse(*args, **kwargs):
        assert kwargs.get("trust_remote_code") is False
        raise ValueError("The repository someone/evil contains custom code which must be executed to correctly load "
                         "the model.\nPlease pass the argument `trust_remote_code=True` to allow custom code to be run.")

    monkeypatch.setattr("babelprune.formats.hf.AutoConfig.from_pretrained", refuse)
    with pytest.raises(BabelpruneError, match=r"^Model 'someone/evil' asks to run its own code .*transformers implements\.$"):
        load_config("someone/evil", "someone/evil")


def _from_pretrained_calls_without_trust_remote_code_false(file: Path) -> list[str]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
            given = {k.arg: k.value for k in node.keywords}
            value = given.get("trust_remote_code")
            if not (isinstance(value, ast.Constant) and value.value is False):
                missing.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    return missing


def test_every_from_pretrained_call_says_trust_remote_code_false():
    # Without the argument transformers prompts on stdin for folders it cannot load natively.
    missing = [where for file in sorted((ROOT / "src" / "babelprune").rglob("*.py"))
               for where in _from_pretrained_calls_without_trust_remote_code_false(file)]
    assert missing == []


# ----- pickled weights -------------------------------------------------------------------


def pickled_folder(tiny_folder: Path, target: Path, name: str) -> Path:
    """The tiny model with its weights in `name` (torch.save) instead of model.safetensors."""
    folder = copy_folder(tiny_folder, target)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    if name.endswith(".index.json"):
        torch.save(state, folder / "pytorch_model-00001-of-00001.bin")
        index = {"weight_map": {key: "pytorch_model-00001-of-00001.bin" for key in state}}
        (folder / name).write_text(json.dumps(index), encoding="utf-8")
    else:
        torch.save(state, folder / name)
    return folder


@pytest.mark.parametrize("name", ["pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "weights.ckpt", "model.pth"])
def test_pickled_weights_are_refused_in_one_sentence(tiny_folder, tmp_path, name):
    folder = pickled_folder(tiny_folder, tmp_path / "pickled", name)
    with pytest.raises(BabelpruneError) as caught:
        load_model(str(folder))
    assert str(caught.value) == (
        f"{folder} holds only pickled weights ({name}), which babelprune does not load because unpickling can run "
        "code; convert them to safetensors (load the model once where you trust the file and save_pretrained writes "
        "model.safetensors) and try again."
    )


def test_a_folder_with_only_a_pytorch_model_bin_fails_in_the_cli_with_one_line(tiny_folder, tmp_path):
    # Before, transformers unpickled it (a pickle holding more than tensors ended in a 109-line traceback).
    folder = pickled_folder(tiny_folder, tmp_path / "pickled", "pytorch_model.bin")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    done = subprocess.run(
        [sys.executable, "-m", "babelprune.cli", "eval", "--model", str(folder), "--corpus", "tests/fixtures/tiny.jsonl"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder} holds only pickled weights (pytorch_model.bin)")


def test_a_stray_pickle_beside_safetensors_weights_is_never_unpickled(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "both")
    marker = tmp_path / "MARKER"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_MarksWhenUnpickled(marker)))
    loaded = load_model(str(folder))
    assert loaded.model.config.model_type == "bert"
    assert not marker.exists()
