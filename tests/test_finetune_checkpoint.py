"""Fine-tuning checkpoints: no pickle, exact round trips, and one sentence for every bad checkpoint."""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from rich.progress import Progress

import babelprune
from babelprune.errors import BabelpruneError
from babelprune.finetune.checkpoint import STATE_FILE, TENSORS_FILE, join_tensors, split_tensors
from babelprune.finetune.trainer import build_head, plan_runs, train_run
from babelprune.prune.gradual import GMPConfig
from tests.test_finetune_trainer import Interrupt, TinyGenreTask, _interrupt_at, tiny_config

CONFIG = dict(checkpoint_every=2, gmp=GMPConfig(final_sparsity=0.5, start_step=1, end_step=3, interval=1))


def assert_one_sentence(message: str) -> None:
    assert message.endswith(".") and "\n" not in message
    assert re.search(r"[.!?]\s+[A-Z]", message[:-1]) is None, message  # no second sentence


def _train(folder: str, checkpoints: Path, fingerprint: str = "fingerprint", on_step=None):
    config = tiny_config(**CONFIG)
    task = TinyGenreTask()
    head, tokenizer = build_head(folder, task, config)
    return train_run(head, tokenizer, plan_runs(task, config)[0], config, checkpoints, fingerprint,
                     Progress(disable=True), on_step)


@pytest.fixture
def cut_run(tiny_bert_folder, tmp_path) -> tuple[Path, Path]:  # noqa: F811
    """Checkpoints of a run interrupted at step 3 (the last checkpoint is step 2): (folder, checkpoint)."""
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Interrupt):
        _train(tiny_bert_folder, checkpoints, on_step=_interrupt_at(3))
    return checkpoints, checkpoints / "step-0000002"


def _refused(tiny_bert_folder, checkpoints: Path, fingerprint: str = "fingerprint") -> str:  # noqa: F811
    with pytest.raises(BabelpruneError) as error:
        _train(tiny_bert_folder, checkpoints, fingerprint)
    message = str(error.value)
    assert_one_sentence(message)
    return message


# ----------------------------------------------------------------------------- the format


def test_a_checkpoint_is_json_and_safetensors_only(cut_run):
    _, checkpoint = cut_run
    assert sorted(p.name for p in checkpoint.iterdir()) == [STATE_FILE, TENSORS_FILE]
    state = json.loads((checkpoint / STATE_FILE).read_text())
    assert state["step"] == 2 and state["fingerprint"] == "fingerprint"
    assert state["rng"] == {"__tensor__": "/rng"}
    assert state["optimizer"]["param_groups"][0]["betas"] == {"__tuple__": [0.9, 0.999]}


def test_split_and_join_restore_nested_state_exactly():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.tensor([[1.0, -2.0]])}},
        "groups": [{"betas": (0.9, 0.999), "params": [0, 1], "name": None, "flag": True}],
        "__odd__": "kept",
    }
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(split_tensors(state, "", tensors)))  # through JSON, as on disk
    assert sorted(tensors) == ["/state/0/exp_avg", "/state/0/step"]
    back = join_tensors(skeleton, tensors)
    assert list(back["state"]) == [0] and back["groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["state"][0]["exp_avg"], torch.tensor([[1.0, -2.0]]))
    assert back["groups"][0]["params"] == [0, 1] and back["groups"][0]["name"] is None and back["__odd__"] == "kept"


def test_no_torch_load_in_the_package_can_unpickle():
    """Every torch.load call under src/ passes weights_only=True."""
    offenders = []
    for file in Path(babelprune.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                    continue
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    offenders.append(f"{file.name}:{node.lineno}")
    assert offenders == []


# ----------------------------------------------------------------------------- a planted pickle never runs


class WritesAFile:
    """Unpickling this object opens (so creates) a file: proof that the pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("planted_as", ["state.pt", TENSORS_FILE, STATE_FILE])
def test_a_planted_pickle_is_refused_and_never_runs(tiny_bert_folder, cut_run, tmp_path, planted_as):  # noqa: F811
    checkpoints, checkpoint = cut_run
    proof = tmp_path / "proof-the-pickle-ran"
    if planted_as == "state.pt":  # the old pickle format, alone in the checkpoint folder
        for file in checkpoint.iterdir():
            file.unlink()
        torch.save({"step": 2, "payload": WritesAFile(proof)}, checkpoint / "state.pt")
    else:  # one file of an intact checkpoint replaced by a pickle
        (checkpoint / planted_as).write_bytes(pickle.dumps(WritesAFile(proof)))
    message = _refused(tiny_bert_folder, checkpoints)
    assert not proof.exists()
    assert str(checkpoint) in message and "delete that folder" in message


# ----------------------------------------------------------------------------- damaged or foreign checkpoints


def test_a_truncated_tensor_file_is_one_sentence(tiny_bert_folder, cut_run):  # noqa: F811
    checkpoints, checkpoint = cut_run
    data = (checkpoint / TENSORS_FILE).read_bytes()
    (checkpoint / TENSORS_FILE).write_bytes(data[: len(data) // 2])
    message = _refused(tiny_bert_folder, checkpoints)
    assert message == (
        f"The checkpoint {checkpoint} has a truncated or damaged {TENSORS_FILE}; "
        "delete that folder to train the run from the start, or use a new --out."
    )


def test_a_checkpoint_of_another_run_is_one_sentence(tiny_bert_folder, cut_run):  # noqa: F811
    checkpoints, checkpoint = cut_run
    message = _refused(tiny_bert_folder, checkpoints, fingerprint="another run")
    assert message.startswith(f"The checkpoint {checkpoint} belongs to another run")
    assert "delete that folder" in message and "new --out" in message


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda c: (c / STATE_FILE).unlink(), f"has no {STATE_FILE}"),
        (lambda c: (c / STATE_FILE).write_text('{"step": 2, "finger'), f"has a damaged {STATE_FILE}"),
        (lambda c: (c / STATE_FILE).write_text("[1, 2]"), "is not a babelprune checkpoint state"),
        (lambda c: (c / STATE_FILE).write_text('{"format_version": 7}'), "has format 7"),
    ],
    ids=["missing", "cut", "not-an-object", "newer-format"],
)
def test_a_missing_or_garbled_state_is_one_sentence(tiny_bert_folder, cut_run, damage, words):  # noqa: F811
    checkpoints, checkpoint = cut_run
    damage(checkpoint)
    message = _refused(tiny_bert_folder, checkpoints)
    assert str(checkpoint) in message and words in message and "delete that folder" in message


def _edit_state(checkpoint: Path, edit) -> None:
    state = json.loads((checkpoint / STATE_FILE).read_text())
    edit(state)
    (checkpoint / STATE_FILE).write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s["params"].pop(next(iter(s["params"]))), "its weights are not those this run trains"),
        (lambda s: s["params"].update({"x": {"__tensor__": "/nowhere"}}), "does not match its tensors"),
        (lambda s: s["pruner"]["masks"].pop("0.q"), "the saved masks lack weights this model prunes (0.q)"),
        (lambda s: s.update({"rng": s["optimizer"]["state"]["__items__"][0][1]["exp_avg"]}), "random state"),
    ],
    ids=["weight-missing", "tensor-missing", "mask-missing", "rng-wrong"],
)
def test_a_checkpoint_that_does_not_fit_is_one_sentence(tiny_bert_folder, cut_run, edit, words):  # noqa: F811
    checkpoints, checkpoint = cut_run
    _edit_state(checkpoint, edit)
    message = _refused(tiny_bert_folder, checkpoints)
    assert str(checkpoint) in message and words in message


def test_an_intact_checkpoint_still_resumes(tiny_bert_folder, cut_run):  # noqa: F811
    checkpoints, _ = cut_run
    pruner, steps = _train(tiny_bert_folder, checkpoints)
    assert steps == 6 and pruner.sparsity_report().overall == 0.5
