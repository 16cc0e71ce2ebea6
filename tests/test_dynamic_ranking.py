"""What ranks the units of a dynamic model: calibration windows, or an encoder's own training text."""

from __future__ import annotations

import json
import sys
from functools import reduce

import pytest
import torch

from babelprune import cli
from babelprune.data.tasks import Example
from babelprune.formats.dynamic import DYNAMIC_FILE
from babelprune.models.adapters import adapter_for
from babelprune.models.layouts import layer_layouts
from babelprune.formats.loading import load_model
from babelprune.finetune.dynamic import training_windows, train_dynamic
from babelprune.prune.structured.importance import gradient_importance
from tests.test_dynamic import ToyTask, _calibration, _encoder, _task_config
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Token ids of the char tokenizer: <s> = 1, a = 4, b = 5, c = 6, newline = 31.
BOS, A, B, C, NEWLINE = 1, 4, 5, 6, 31


def test_training_windows_by_hand():
    examples = [Example("0", "en", text="ab", label=0), Example("1", "en", text="ab", label=1),
                Example("2", "fr", text="c", label=0)]
    # en: a b \n a b \n (6 tokens); fr: c \n (2 tokens), so every window is cut to BOS + 2 tokens.
    windows = training_windows(char_tokenizer(), examples, "toy", seq_len=4, windows_per_language=2)
    assert windows.ids.tolist() == [[BOS, A, B], [BOS, NEWLINE, A], [BOS, C, NEWLINE]]
    assert windows.languages == ("en", "en", "fr") and windows.corpus == "toy:train"
    # The prefix goes before every text; a pair's two texts join with a space (id 30).
    pair = [Example("0", "en", text="a", text_pair="b", label=0)]
    prefixed = training_windows(char_tokenizer(), pair, "toy", seq_len=8, windows_per_language=4, prefix="c")
    assert prefixed.ids.tolist() == [[BOS, C, A, 30, B, NEWLINE]]


def _neuron_order_from(importance, block: int) -> list[int]:
    return torch.argsort(-importance.neurons[block].double(), stable=True).tolist()


@pytest.mark.parametrize("importance", ["gradient", "activation"])
def test_an_encoder_without_calibration_ranks_on_its_training_text(importance):
    result = train_dynamic(_encoder(), _task_config(importance=importance, steps=1), ToyTask(), progress=False)
    ranking = result.model.metadata["ranking"]
    # ToyTask's 16 English training texts are 10 + (i % 3) characters and a newline each: 191 tokens,
    # so 6 windows of 31 tokens after the start token (max_length 32).
    assert ranking["data"] == "task-train" and ranking["corpus"] == "toy-genre:train"
    assert ranking["samples_per_language"] == {"en": 6} and ranking["seq_len"] == 32
    assert ranking.get("loss") == ("masked-token proxy" if importance == "gradient" else None)
    if importance == "gradient":
        # The order is the one the gradient importance gives on those windows, on the same starting model.
        fresh = _encoder()
        windows = training_windows(fresh.tokenizer, ToyTask().examples("en", "train"), "toy-genre", 32, 32)
        scores = reduce(lambda a, b: a + b, gradient_importance(fresh.model, windows, {"heads", "ffn"}, "query").values())
        assert [order["neurons"] for order in result.model.metadata["order"]] == [_neuron_order_from(scores, i) for i in range(2)]


def test_ranking_data_is_recorded_for_calibration_and_for_magnitude():
    given = train_dynamic(_encoder(), _task_config(importance="activation", steps=1), ToyTask(), calibration=_calibration(), progress=False)
    assert given.model.metadata["ranking"]["data"] == "calibration"
    assert given.model.metadata["ranking"]["corpus"] == "toy" and given.model.metadata["ranking"]["samples_per_language"] == {"en": 4, "fr": 4}
    weights = train_dynamic(_encoder(), _task_config(steps=1), ToyTask(), progress=False)
    assert weights.model.metadata["ranking"] == {"importance": "magnitude", "data": "weights"}


def test_cli_train_dynamic_with_gradient_importance_on_an_encoder_then_slice(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "tiny-bert"
    tiny_model("bert").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    dynamic, half = tmp_path / "dyn", tmp_path / "half"
    # The documented command (bible-genre is the default task), with a tiny model and one step.
    monkeypatch.setattr(sys, "argv", ["babelprune", "train-dynamic", "--model", str(folder), "--task", "bible-genre",
                                      "--levels", "0.5", "--steps", "1", "--importance", "gradient", "--out", str(dynamic)])
    cli.main()
    metadata = json.loads((dynamic / DYNAMIC_FILE).read_text())
    assert metadata["importance"] == "gradient" and metadata["ranking"]["data"] == "task-train"
    assert metadata["ranking"]["corpus"] == "bible-genre:train" and metadata["ranking"]["languages"] == ["en"]
    monkeypatch.setattr(sys, "argv", ["babelprune", "slice", "--sparsity", "0.5", str(dynamic), "--out", str(half)])
    cli.main()
    sliced = load_model(str(half))
    # Half of a tiny BERT block: 2 of 4 heads and 32 of 64 neurons (as in tests/test_dynamic.py).
    assert {(lay.n_heads, lay.ffn) for lay in layer_layouts(sliced.model, adapter_for(sliced.model))} == {(2, 32)}
    assert "saved to" in capsys.readouterr().out
