"""Structured importances come from one registry, and its entries' properties decide the checks.

The toy importance below is registered only inside a fixture and
unregistered afterwards. That `structured_prune` runs it, and refuses it
per language or without calibration according to its declared properties,
shows that the library dispatches through `IMPORTANCES` rather than on
names.
"""

from __future__ import annotations

import typing

import pytest
import torch

from babelprune import choices
from babelprune.errors import BabelpruneError
from babelprune.finetune.prune_config import TaskImportance, TaskPruneConfig
from babelprune.models.base import LoadedModel
from babelprune.prune.calibration import Calibration
from babelprune.prune.config import StructuredConfig
from babelprune.prune.structured import compute_importance, structured_prune
from babelprune.prune.structured.importance import magnitude_importance
from babelprune.prune.structured.methods import IMPORTANCES, check_importance_setting, register
from tests.tiny_models import tiny_model

TOY = "toy"


def _loaded() -> LoadedModel:
    return LoadedModel(model=tiny_model("llama"), tokenizer=None, spec="llama", path=None, kind="causal-lm")


def _calibration() -> Calibration:
    ids = torch.randint(4, 128, (4, 12), generator=torch.Generator().manual_seed(1))
    return Calibration(ids, ("en", "en", "sw", "sw"), "toy")


@pytest.fixture
def toy_importance():
    """Register TOY for one test: a data-free importance that ranks like magnitude, recording its calls."""
    assert TOY not in IMPORTANCES
    before = dict(IMPORTANCES)
    calls: list[set[str]] = []

    @register(TOY, uses_data=False)
    def like_magnitude(task):
        calls.append(set(task.units))
        return {"all": magnitude_importance(task.loaded.model, task.units, task.gqa)}, {}

    yield calls
    IMPORTANCES.clear()
    IMPORTANCES.update(before)


def test_the_cli_choices_are_the_registered_importances_in_order():
    assert typing.get_args(choices.StructuredImportance) == ("magnitude", "gradient", "activation", "l0", "balanced")
    assert tuple(IMPORTANCES) == typing.get_args(choices.StructuredImportance)


def test_the_narrower_choices_are_registered_importances():
    # Dynamic Sparsification ranks once before training, so it takes the importances that train no gates.
    assert set(typing.get_args(choices.DynamicImportance)) == {name for name, m in IMPORTANCES.items() if not m.trains}
    assert set(typing.get_args(TaskImportance)) <= set(IMPORTANCES)


def test_each_entry_states_its_properties():
    table = {name: (m.uses_data, m.per_language, m.trains) for name, m in IMPORTANCES.items()}
    assert table == {
        "magnitude": (False, False, False),
        "gradient": (True, True, False),
        "activation": (True, True, False),
        "l0": (True, True, True),
        "balanced": (True, False, False),  # reads data, but one ranking weighing the languages equally
    }


@pytest.mark.parametrize(("build", "wording"), [
    (lambda: StructuredConfig(units=["ffn"], importance="magnitude", setting="per-language"), "use --setting shared"),
    (lambda: TaskPruneConfig(importance="magnitude", setting="per-language"), "use setting shared"),
    (lambda: structured_prune(_loaded(), {"ffn"}, "magnitude", 0.3, setting="per-language", progress=False),
     "use --setting shared"),
], ids=["StructuredConfig", "TaskPruneConfig", "structured_prune"])
def test_every_caller_refuses_a_data_free_importance_per_language_in_its_own_wording(build, wording):
    with pytest.raises(BabelpruneError) as raised:
        build()
    assert str(raised.value) == (f"Magnitude importance uses no data, so it cannot differ per language; "
                                 f"{wording} or another importance.")


def test_an_importance_that_reads_data_may_be_per_language():
    check_importance_setting("gradient", "per-language", "--setting")
    assert StructuredConfig(units=["ffn"], importance="gradient", setting="per-language").needs_calibration
    assert not StructuredConfig(units=["ffn"], importance="magnitude").needs_calibration


def test_structured_prune_runs_a_registered_importance(toy_importance):
    toy = structured_prune(_loaded(), {"ffn"}, TOY, 0.5, progress=False)
    assert toy_importance == [{"ffn"}]
    reference = structured_prune(_loaded(), {"ffn"}, "magnitude", 0.5, progress=False)
    assert toy.importance == TOY and toy.metadata()["method"] == f"structured-{TOY}"
    assert [keep.neurons for keep in toy.selection.layers] == [keep.neurons for keep in reference.selection.layers]
    per_language, traces = compute_importance(_loaded(), {"ffn"}, TOY)
    assert set(per_language) == {"all"} and traces == {}


def test_the_toy_is_refused_by_its_properties(toy_importance):
    with pytest.raises(BabelpruneError, match=r"^Toy importance uses no data, so it cannot differ per language"):
        structured_prune(_loaded(), {"ffn"}, TOY, 0.5, _calibration(), setting="per-language", progress=False)
    IMPORTANCES[TOY] = IMPORTANCES[TOY].__class__(TOY, IMPORTANCES[TOY].fn, uses_data=True)
    with pytest.raises(BabelpruneError, match=r"^Importance 'toy' needs calibration text"):
        structured_prune(_loaded(), {"ffn"}, TOY, 0.5, progress=False)
    assert toy_importance == []  # refused before any scoring


def test_an_unknown_importance_lists_the_registered_ones(toy_importance):
    with pytest.raises(BabelpruneError, match=r"Unknown importance 'toys'; choose one of: magnitude, gradient, activation, l0, balanced, toy\."):
        structured_prune(_loaded(), {"ffn"}, "toys", 0.5, progress=False)
