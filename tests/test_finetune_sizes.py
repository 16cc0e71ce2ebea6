"""Training sizes per language (train_per_language) and `babelprune finetune --config`."""

from __future__ import annotations

import json
import re

import pytest

from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.trainer import finetune, plan_runs
from babelprune.sweep.experiment import FinetuneRun
from babelprune.sweep.runs import run_config, run_key
from tests.cli_runner import run_cli
from tests.test_finetune_cli import TASK, tiny_folder as tiny_folder_128  # noqa: F401 (fixture)
from tests.test_finetune_trainer import SIZES, TinyGenreTask, tiny_config

# TinyGenreTask: en and fr are high-resource (Joshi class 5), sw low (class 2); 16 training examples each.
SIZED = dict(mode="multilingual", max_train_examples=None)


def _counts(config: FinetuneConfig) -> dict[str, int]:
    (run,) = plan_runs(TinyGenreTask(), config)
    counts: dict[str, int] = {}
    for example in run.train:
        counts[example.lang] = counts.get(example.lang, 0) + 1
    return counts


def test_sizes_follow_the_resource_level_and_a_language_entry_wins():
    config = tiny_config(**SIZED, train_per_language={"high": 6, "low": 3})
    assert _counts(config) == {"en": 6, "fr": 6, "sw": 3}
    config = tiny_config(**SIZED, train_per_language={"high": 6, "low": 3, "fr": 4})
    assert _counts(config) == {"en": 6, "fr": 4, "sw": 3}
    # Each language's sample is its own examples, a stable choice for the seed.
    (run,) = plan_runs(TinyGenreTask(), config)
    assert run.train == plan_runs(TinyGenreTask(), config)[0].train
    keys = {example.key for example in TinyGenreTask().examples("sw", "train")}
    assert {example.key for example in run.train if example.lang == "sw"} <= keys


def test_without_sizes_the_run_limit_applies_as_before():
    assert sum(_counts(tiny_config(mode="multilingual", max_train_examples=10)).values()) == 10


@pytest.mark.parametrize(("options", "message"), [
    (dict(train_per_language={"high": 4}, max_train_examples=256),
     "train_per_language sets each language's training size, so max_train_examples (256) would cut it again"),
    (dict(train_per_language={"high": 0}, max_train_examples=None), "gives 'high' 0 examples; give a positive whole number"),
    (dict(train_per_language={}, max_train_examples=None), "train_per_language is empty"),
])
def test_bad_sizes_are_one_sentence(options, message):
    with pytest.raises(BabelpruneError, match=re.escape(message)):
        FinetuneConfig(**options)


def test_a_language_without_a_size_or_a_stray_key_is_refused_before_training():
    with pytest.raises(BabelpruneError, match=r"gives no size for language 'sw' \(low resource\); add 'sw' or 'low' to it"):
        plan_runs(TinyGenreTask(), tiny_config(**SIZED, train_per_language={"high": 4}))
    with pytest.raises(BabelpruneError, match=r"names 'de', which is neither a resource level .* nor a training language"):
        plan_runs(TinyGenreTask(), tiny_config(**SIZED, train_per_language={"high": 4, "low": 2, "de": 3}))


def test_the_sizes_are_in_the_run_key_and_leave_older_keys_alone():
    plain = FinetuneConfig()
    assert "train_per_language" not in plain.model_dump()  # the dump, hence every earlier key, is unchanged
    sized = FinetuneConfig(train_per_language={"high": 8, "low": 2}, max_train_examples=None)
    assert sized.model_dump()["train_per_language"] == {"high": 8, "low": 2}
    assert FinetuneConfig(**sized.model_dump()) == sized  # round trip, as sweeps and config_for do

    def key(config):
        return run_key(run_config("e5-small", "finetune", FinetuneRun(config=config), None, ()))

    other = FinetuneConfig(train_per_language={"high": 8, "low": 4}, max_train_examples=None)
    assert len({key(plain), key(sized), key(other)}) == 3


def test_a_language_with_fewer_examples_uses_them_all_and_the_result_says_so(tiny_bert_folder, tmp_path):  # noqa: F811
    notices: list[str] = []
    config = tiny_config(**SIZED, languages=["en", "sw"], perturbations=[], max_steps=2,
                         train_per_language={"high": 20, "low": 5})
    result = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False, on_notice=notices.append)
    assert result.train_examples == {"en": SIZES["train"], "sw": 5}  # en has 16 of the 20 asked
    assert result.train_asked == {"en": 20, "sw": 5}
    assert notices == ["language 'en' has 16 training examples, fewer than the 20 asked; it trains on all 16"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["train_asked"] == {"en": 20, "sw": 5} and saved["config"]["train_per_language"] == {"high": 20, "low": 5}


def test_scores_of_accuracy_tasks_keep_one_result_per_item(tiny_bert_folder, tmp_path):  # noqa: F811
    config = tiny_config(languages=["en"], perturbations=["chars"], max_steps=1)
    result = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False)
    for score in result.scores:
        assert len(score.correct) == score.n_examples == SIZES["test"] and set(score.correct) <= {0, 1}
        assert sum(score.correct) / len(score.correct) == pytest.approx(score.value)


# --------------------------------------------------------------------------- finetune --config


FILE = """\
mode: multilingual
train_per_language: {high: 3, low: 2}
max_train_examples: null
max_eval_examples: 4
perturbations: [chars]
batch_size: 4
max_steps: 2
gmp: {final_sparsity: 0.5, start: 0.0, end: 0.5}
"""


def test_finetune_config_file_runs_that_config(monkeypatch, capsys, tmp_path, tiny_folder_128):  # noqa: F811
    config = tmp_path / "ogueji.yaml"
    config.write_text(FILE)
    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "finetune", "--model", tiny_folder_128, *TASK[:8], "--config", str(config),
                                "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["train_examples"] == {"en": 3, "sw": 2} and result["mode"] == "multilingual"
    assert result["sparsity"] == 0.5 and result["steps"] == 2 and result["config"]["max_eval_examples"] == 4
    assert "sw " in stdout


@pytest.mark.parametrize(("text", "typed", "message"), [
    ("mode: multilingual\nmax_steps: 0\n", [], r"ogueji.yaml line \d+: .*max_steps is 0; give a positive value"),
    ("mode: multilingal\n", [], r"ogueji.yaml line 1: mode: unknown training mode 'multilingal'"),
    ("mode: multilingual\n", ["--gmp-final", "0.5"], r"--config .*ogueji.yaml sets the whole configuration, so --gmp-final"),
])
def test_a_bad_config_file_is_one_sentence_and_writes_nothing(monkeypatch, capsys, tmp_path, text, typed, message):
    config = tmp_path / "ogueji.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--model", "no-such-model", "--config", str(config), *typed,
                           "--out", str(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), err
    assert not out.exists()
