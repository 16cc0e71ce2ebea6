"""The fine-tuning loop on a tiny BERT: schedule, batches, input checks, scores, and exact resumption."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from rich.progress import Progress

from babelprune.data.tasks import Example, Task
from babelprune.errors import BabelpruneError
from babelprune.finetune.config import FinetuneConfig, limit_examples, planned_steps
from babelprune.finetune.trainer import batch_indices, build_head, finetune, linear_schedule, plan_runs, train_run
from babelprune.prune.gradual import GMPConfig, RelativeGMPConfig
from babelprune.report.finetune_records import FinetuneResult

SIZES = {"train": 16, "dev": 4, "test": 8}


class TinyGenreTask(Task):
    """Two labels told apart by their words, in English, French and Swahili (all in the char alphabet)."""

    name = "tiny-genre"
    kind = "classification"
    labels = ("abc", "xyz")
    metric = "accuracy"

    def __init__(self, bad_label: bool = False) -> None:
        self.bad_label = bad_label

    def languages(self) -> list[str]:
        return ["en", "fr", "sw"]

    def _examples(self, lang: str, split: str) -> list[Example]:
        filler = {"en": "the", "fr": "le", "sw": "na"}[lang]
        examples = []
        for i in range(SIZES[split]):
            label = i % 2
            word = ("abc", "xyz")[label]
            text = f"{word} {filler} {word}{'e' * (i % 3)} end"
            examples.append(Example(f"{split}:{i}", lang, text=text, label=5 if self.bad_label and i == 3 else label))
        return examples


def tiny_config(**options) -> FinetuneConfig:
    defaults = dict(max_steps=6, batch_size=4, max_length=48, text_prefix="", lr=1e-3, eval_batch_size=4)
    return FinetuneConfig(**{**defaults, **options})


# ----------------------------------------------------------------------------- pure parts


def test_linear_schedule_hand_values():
    # Warm-up 2 steps, 10 in all: 1/2, 2/2, then (10 - t) / 8.
    assert [linear_schedule(t, 2, 10) for t in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


def test_planned_steps_by_hand():
    assert planned_steps(700, FinetuneConfig()) == 44  # ceil(700 / 16)
    assert planned_steps(700, FinetuneConfig(epochs=0.5)) == 22
    assert planned_steps(700, FinetuneConfig(max_steps=7)) == 7


def test_batches_cover_each_example_once_per_epoch_and_repeat_exactly():
    epoch = [i for step in (1, 2, 3) for i in batch_indices(step, 10, 4, seed=3)]
    assert sorted(epoch) == list(range(10))
    assert [len(batch_indices(step, 10, 4, seed=3)) for step in (1, 2, 3)] == [4, 4, 2]
    assert batch_indices(5, 10, 4, seed=3) == batch_indices(5, 10, 4, seed=3)
    assert batch_indices(1, 10, 4, seed=3) != batch_indices(1, 10, 4, seed=4)


def test_limit_examples_by_key_keeps_aligned_items():
    en = [Example(f"k{i}", "en", text="a", label=0) for i in range(20)]
    fr = [Example(f"k{i}", "fr", text="b", label=0) for i in range(20)]
    kept_en = limit_examples(en, 5, "eval", by_key=True)
    kept_fr = limit_examples(fr, 5, "eval", by_key=True)
    assert len(kept_en) == 5
    assert [e.key for e in kept_en] == [e.key for e in kept_fr]
    assert [e.key for e in kept_en] == sorted((e.key for e in kept_en), key=lambda k: int(k[1:]))  # input order


# ----------------------------------------------------------------------------- input checks before training


def _never(step, loss):
    raise AssertionError("training started despite bad input")


@pytest.mark.parametrize(
    ("task", "options", "words"),
    [
        ("no-such-task", {}, "Unknown task 'no-such-task'; choose one of: bible-genre"),
        (TinyGenreTask(), {"languages": ["en", "qq"]}, "no data for language 'qq'"),
        (TinyGenreTask(), {"source_lang": "de"}, "no data for language 'de'"),
        (TinyGenreTask(bad_label=True), {}, "Label index 5 in test example 'test:3' .en. is out of range"),
        (TinyGenreTask(), {"gmp": GMPConfig(final_sparsity=0.5, end_step=50)}, "ends at step 50 but run 'en' has only 6"),
        (TinyGenreTask(), {"perturbations": ["entities"]}, "needs a token-classification task"),
    ],
)
def test_bad_input_fails_before_training(tiny_bert_folder, tmp_path, task, options, words):
    with pytest.raises(BabelpruneError, match=words):
        finetune(tiny_bert_folder, task, tiny_config(**options), tmp_path / "out", progress=False, on_step=_never)
    assert not (tmp_path / "out").exists()


def test_bad_schedule_and_sparsity_are_refused_in_the_config():
    with pytest.raises(BabelpruneError, match="before it starts"):
        tiny_config(gmp=GMPConfig(final_sparsity=0.5, start_step=4, end_step=2))
    with pytest.raises(BabelpruneError, match=r"outside \[0, 1\)"):
        tiny_config(gmp={"final_sparsity": 1.2, "end_step": 2})
    with pytest.raises(BabelpruneError, match="Unknown training mode 'bilingual'"):
        tiny_config(mode="bilingual")
    with pytest.raises(BabelpruneError, match="batch_size is 0"):
        tiny_config(batch_size=0)


# ----------------------------------------------------------------------------- whole runs


def test_dense_run_scores_every_language_clean_and_perturbed(tiny_bert_folder, tmp_path):
    result = finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(languages=["en", "sw"]), tmp_path / "dense", progress=False)
    assert result.method == "dense" and result.sparsity == 0.0 and result.steps == 6
    assert result.train_languages == ["en"] and result.train_examples == {"en": 16}
    assert [(s.language, s.perturbation) for s in result.scores] == [
        ("en", None), ("en", "words"), ("en", "chars"), ("sw", None), ("sw", "words"), ("sw", "chars"),
    ]
    for score in result.scores:
        assert score.n_examples == 8
        assert score.value * 8 == pytest.approx(round(score.value * 8))  # a share of 8 examples
        if score.perturbation is not None:
            assert score.gap == pytest.approx(result.score(score.language).value - score.value)
    assert FinetuneResult.load(tmp_path / "dense" / "result.json") == result
    assert not (tmp_path / "dense" / "runs" / "en" / "checkpoints").exists()


def test_gmp_run_reaches_its_sparsity_with_exact_zeros(tiny_bert_folder, tmp_path):
    gmp = GMPConfig(final_sparsity=0.5, start_step=1, end_step=4, interval=1)
    result = finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(gmp=gmp, perturbations=[]), tmp_path / "gmp", progress=False)
    # achieved = share of exact zeros in the 12 block matrices, all of even size.
    assert result.method == "gmp" and result.achieved_sparsity == 0.5
    assert result.records()[0].method == "gmp" and result.records()[0].sparsity == 0.5


def test_monolingual_mode_trains_one_model_per_language(tiny_bert_folder, tmp_path):
    config = tiny_config(mode="monolingual", languages=["en", "fr"], max_steps=2, perturbations=[])
    result = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "mono", progress=False)
    assert result.steps == 4 and result.train_examples == {"en": 16, "fr": 16}
    assert sorted(p.name for p in (tmp_path / "mono" / "runs").iterdir()) == ["en", "fr"]
    assert [s.language for s in result.scores] == ["en", "fr"]


def test_max_train_examples_limits_each_run(tiny_bert_folder):
    runs = plan_runs(TinyGenreTask(), tiny_config(mode="multilingual", languages=["en", "fr"], max_train_examples=10))
    assert len(runs) == 1 and len(runs[0].train) == 10


# ----------------------------------------------------------------------------- checkpoints


class Interrupt(Exception):
    pass


def _interrupt_at(step_to_fail: int):
    def callback(step, loss):
        if step == step_to_fail:
            raise Interrupt

    return callback


def _train(tiny_bert_folder: str, config: FinetuneConfig, folder: Path, on_step=None):
    task = TinyGenreTask()
    run = plan_runs(task, config)[0]
    head, tokenizer = build_head(tiny_bert_folder, task, config)
    train_run(head, tokenizer, run, config, folder, "fingerprint", Progress(disable=True), on_step)
    return head


def test_interrupted_training_resumes_to_the_same_weights_bit_for_bit(tiny_bert_folder, tmp_path):
    # Dropout stays on (0.1): resuming must also restore the random state.
    config = tiny_config(checkpoint_every=2, gmp=GMPConfig(final_sparsity=0.5, start_step=1, end_step=5, interval=2))
    straight = _train(tiny_bert_folder, config, tmp_path / "straight")
    with pytest.raises(Interrupt):
        _train(tiny_bert_folder, config, tmp_path / "cut", _interrupt_at(5))  # steps 1-5 done, checkpoint at 4
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["step-0000004"]
    steps_after_resume = []
    resumed = _train(tiny_bert_folder, config, tmp_path / "cut", lambda step, loss: steps_after_resume.append(step))
    assert steps_after_resume == [5, 6]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_interrupted_finetune_resumes_to_the_same_result(tiny_bert_folder, tmp_path):
    config = tiny_config(checkpoint_every=2, languages=["en"], perturbations=["chars"])
    straight = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "straight", progress=False)
    with pytest.raises(Interrupt):
        finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "cut", progress=False, on_step=_interrupt_at(3))
    with pytest.raises(BabelpruneError, match=r"holds a fine-tuning run with other settings \(lr\); delete that folder"):
        other = tiny_config(checkpoint_every=2, languages=["en"], perturbations=["chars"], lr=5e-4)
        finetune(tiny_bert_folder, TinyGenreTask(), other, tmp_path / "cut", progress=False)
    resumed = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "cut", progress=False)
    assert resumed.scores == straight.scores


def test_a_finished_run_is_not_trained_again(tiny_bert_folder, tmp_path):
    config = tiny_config(languages=["en"], perturbations=[], max_steps=2)
    first = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False)
    again = finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False, on_step=_never)
    assert again.scores == first.scores
    assert math.isclose(again.achieved_sparsity, first.achieved_sparsity)


def test_a_run_of_another_model_is_refused_not_reused(tiny_bert_folder, other_tiny_folder, tmp_path):
    config = tiny_config(languages=["en"], perturbations=[], max_steps=2)
    finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False)
    with pytest.raises(BabelpruneError) as error:
        finetune(other_tiny_folder, TinyGenreTask(), config, tmp_path / "run", progress=False, on_step=_never)
    message = str(error.value)
    assert message == (
        f"{tmp_path / 'run'} holds a fine-tuning run with other settings (model); delete that folder or use a new --out."
    )


def test_a_folder_without_a_settings_record_is_refused(tiny_bert_folder, tmp_path):
    config = tiny_config(languages=["en"], perturbations=[], max_steps=2)
    finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False)
    (tmp_path / "run" / "settings.json").unlink()  # as left by an older babelprune
    with pytest.raises(BabelpruneError, match=r"other settings \(no record of its settings\)"):
        finetune(tiny_bert_folder, TinyGenreTask(), config, tmp_path / "run", progress=False, on_step=_never)


def test_relative_schedule_fits_any_run_length(tiny_bert_folder, tmp_path):
    # The same shares over 6 steps (max_steps) and over 8 steps (2 epochs of 16 examples in batches of 4).
    gmp = RelativeGMPConfig(final_sparsity=0.5)
    six = finetune(tiny_bert_folder, TinyGenreTask(), tiny_config(gmp=gmp, perturbations=[], languages=["en"]), tmp_path / "six", progress=False)
    eight_config = tiny_config(gmp=gmp, perturbations=[], languages=["en"], max_steps=None, epochs=2.0)
    eight = finetune(tiny_bert_folder, TinyGenreTask(), eight_config, tmp_path / "eight", progress=False)
    # 6 steps: start round(0.6) = 1, end round(4.2) = 4; 8 steps: start round(0.8) = 1, end round(5.6) = 6.
    assert (six.steps, six.gmp.start_step, six.gmp.end_step, six.gmp.interval) == (6, 1, 4, 1)
    assert (eight.steps, eight.gmp.start_step, eight.gmp.end_step, eight.gmp.interval) == (8, 1, 6, 1)
    assert six.achieved_sparsity == 0.5 and eight.achieved_sparsity == 0.5
    assert six.config["gmp"]["start"] == 0.1  # the configuration keeps the shares


def test_monolingual_runs_of_different_lengths_each_get_their_own_schedule(tiny_bert_folder, tmp_path):
    class Uneven(TinyGenreTask):
        def _examples(self, lang, split):  # French has half the training examples of English
            examples = super()._examples(lang, split)
            return examples[:8] if (lang, split) == ("fr", "train") else examples

    config = tiny_config(mode="monolingual", languages=["en", "fr"], max_steps=None, perturbations=[],
                         gmp=RelativeGMPConfig(final_sparsity=0.5, start=0.0, end=0.5))
    finetune(tiny_bert_folder, Uneven(), config, tmp_path / "mono", progress=False)
    runs = {lang: FinetuneResult.load(tmp_path / "mono" / "runs" / lang / "result.json") for lang in ("en", "fr")}
    # en: 16 examples in batches of 4 = 4 steps, end round(2.0) = 2; fr: 2 steps, end round(1.0) = 1.
    assert (runs["en"].steps, runs["en"].gmp.end_step) == (4, 2)
    assert (runs["fr"].steps, runs["fr"].gmp.end_step) == (2, 1)


# ----------------------------------------------------------------------------- retrieval: no training


class TinyRetrievalTask(Task):
    """English and French items with identical texts, so the right candidate is always an exact match."""

    name = "tiny-retrieval"
    kind = "retrieval"
    labels = ()
    metric = "top1"

    def languages(self) -> list[str]:
        return ["en", "fr"]

    def _examples(self, lang: str, split: str) -> list[Example]:
        words = ["abc", "def", "ghi", "jkl", "mno", "pqr"]
        return [Example(f"{split}:{i}", lang, text=f"{w} {w[::-1]} x{w}") for i, w in enumerate(words)]


def test_retrieval_task_is_scored_without_training(tiny_bert_folder, tmp_path):
    config = tiny_config(perturbations=["chars"], gmp=GMPConfig(final_sparsity=0.5, end_step=0))
    result = finetune(tiny_bert_folder, TinyRetrievalTask(), config, tmp_path / "retrieval", progress=False, on_step=_never)
    assert result.mode == "none" and result.steps == 0 and result.achieved_sparsity == 0.5
    clean, perturbed = result.scores
    assert (clean.language, clean.metric, clean.value, clean.n_examples) == ("fr", "top1", 1.0, 6)
    assert perturbed.perturbation == "chars" and perturbed.gap == pytest.approx(1.0 - perturbed.value)
