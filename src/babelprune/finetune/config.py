"""The fine-tuning configuration, and the pure helpers that read it (steps, samples, perturbations)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_serializer, model_validator

from babelprune.data.languages import RESOURCE_LEVELS
from babelprune.data.tasks import TRAINING_MODES, Example, Task, TrainingMode, TrainingRun, stable_rank
from babelprune.errors import BabelpruneError
from babelprune.finetune.heads import Pooling
from babelprune.prune.gradual import GMPConfig, RelativeGMPConfig
from babelprune.records.finetune import FinetuneResult

HeadInit = Literal["probe", "random"]


# Field -> (accepted values, what the field is called in an error).
_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "mode": (tuple(TRAINING_MODES), "training mode"),
    "head_init": (("probe", "random"), "head initialisation"),
    "pooling": (("mean", "cls"), "pooling"),
}


class FinetuneConfig(BaseModel):
    """Everything that decides a fine-tuning run.

    The defaults train one epoch over at most 256 examples (16 steps of 16)
    and score at most 20 test items per language: one to two minutes per run
    for `e5-small` + `bible-genre` (22 languages) on 2 CPU cores. Raise the limits, or set them
    to None, for real experiments.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # an infinite rate or epoch count is a slip
    lr: float = 1e-4
    head_lr: float | None = None  # learning rate of the classifier layer; None: `lr`
    head_init: HeadInit = "probe"  # "probe": a linear probe on the frozen encoder first (LP-FT); or "random"
    batch_size: int = 16
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    warmup: float = 0.1  # share of the steps with a rising learning rate
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    seed: int = 0
    mode: TrainingMode = "zero-shot"
    source_lang: str = "en"
    languages: list[str] | None = None  # evaluation languages; None: all of the task's
    # Pruning schedule: shares of each run's steps (RelativeGMPConfig) or fixed steps (GMPConfig); None: dense.
    gmp: RelativeGMPConfig | GMPConfig | None = None
    perturbations: list[str] | None = None  # None: words and chars (+ entities for token tasks)
    perturbation_rate: float = 0.15
    perturbation_seed: int = 0  # the same perturbed sets for every training seed
    checkpoint_every: int | None = None
    max_length: int = 128
    eval_batch_size: int = 32
    # Sizes for 1-2 minutes per run on 2 CPU cores (e5-small, bible-genre, 22 languages):
    # None uses every example the task gives.
    max_train_examples: int | None = 256  # per run, a stable sample
    max_eval_examples: int | None = 20  # per language, a stable sample of the test set (same keys everywhere)
    # Training examples per language, keyed by resource level ("high", "medium", "low") or by
    # language code (which wins over its level), as in Ogueji et al.'s multilingual training
    # where high-resource languages bring more data. None: `max_train_examples` per run.
    train_per_language: dict[str, int] | None = None
    freeze_embeddings: bool = True  # keep the word-embedding matrix fixed unless GMP prunes it
    pooling: Pooling = "mean"
    dropout: float = 0.1
    text_prefix: str = "query: "  # e5 models expect it
    # Save each training run's model (<out>/runs/<run>/model); False keeps the scores only (large sweeps).
    # It does not change the scores, so it is no part of the settings that key a result (`scores_config`).
    save_model: bool = True

    @field_validator("mode", "head_init", "pooling", mode="before")
    @classmethod
    def _one_of_the_choices(cls, value: object, info) -> object:
        choices, what = _CHOICES[info.field_name]
        if value not in choices:
            raise BabelpruneError(f"Unknown {what} {value!r}; use one of {', '.join(choices)}.")
        return value

    @field_validator("perturbations")
    @classmethod
    def _known_perturbations(cls, value: list[str] | None) -> list[str] | None:
        from babelprune.evaluate.perturb import PERTURBATION_KINDS

        for kind in value or []:
            if kind not in PERTURBATION_KINDS:
                raise BabelpruneError(f"Unknown perturbation {kind!r}; use one of {', '.join(PERTURBATION_KINDS)}.")
        return value

    @model_validator(mode="after")
    def _valid(self) -> FinetuneConfig:
        positive = {
            "lr": self.lr, "head_lr": self.head_lr, "batch_size": self.batch_size, "epochs": self.epochs,
            "max_steps": self.max_steps, "checkpoint_every": self.checkpoint_every, "eval_batch_size": self.eval_batch_size,
            "max_length": self.max_length, "max_train_examples": self.max_train_examples,
            "max_eval_examples": self.max_eval_examples,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise BabelpruneError(f"Fine-tuning option {name} is {value}; give a positive value.")
        for name, value in {"warmup": self.warmup, "dropout": self.dropout}.items():
            if not 0.0 <= value < 1.0:
                raise BabelpruneError(f"Fine-tuning option {name} is {value}; give a value in [0, 1).")
        if not 0.0 <= self.perturbation_rate <= 1.0:
            raise BabelpruneError(f"The perturbation rate is {self.perturbation_rate}; give a share between 0 and 1.")
        if self.weight_decay < 0:
            raise BabelpruneError(f"Weight decay is {self.weight_decay}; give 0 or more.")
        if self.train_per_language is not None:
            check_train_per_language(self.train_per_language, self.max_train_examples)
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise BabelpruneError(f"The gradient-clipping norm is {self.max_grad_norm}; give a positive norm or None.")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_sizes(self, handler):
        # Left out when None, so that the settings and sweep keys of runs made before the
        # option existed stay what they were.
        data = handler(self)
        if data.get("train_per_language", ...) is None:
            del data["train_per_language"]
        if data.get("save_model") is True:  # the default, likewise: sweep keys of older runs stay
            del data["save_model"]
        return data

    def trains_embeddings(self) -> bool:
        return not self.freeze_embeddings or (self.gmp is not None and self.gmp.include_embeddings)


def scores_config(config: FinetuneConfig) -> dict:
    """The configuration as JSON without what does not change the scores (save_model), for settings and results.

    A run made with `save_model` False has the same scores as one made with
    it True, so both are the same result; whether its model was saved is
    read off the run folder instead (`babelprune.finetune.trainer`).
    """
    data = config.model_dump(mode="json")
    data.pop("save_model", None)
    return data


def position_limit(model_config) -> int | None:
    """The longest input, in tokens, a model's position embeddings cover; None when its config does not say."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int):
        return None
    if getattr(model_config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
        # RoBERTa-style positions start after the padding index (XLM-R: 514 embeddings for 512 tokens).
        limit -= (getattr(model_config, "pad_token_id", None) or 0) + 1
    return limit


def check_length_fits(model_config, max_length: int, model_spec: str, option: str = "--max-length") -> None:
    """Refuse a length the model has no positions for: its inputs would crash mid-training."""
    limit = position_limit(model_config)
    if limit is not None and max_length > limit:
        raise BabelpruneError(
            f"Model '{model_spec}' has positions for {limit} tokens (max_position_embeddings) but the fine-tuning "
            f"length max_length is {max_length}; set max_length ({option}) to {limit} or less."
        )


def check_train_per_language(sizes: dict[str, int], max_train_examples: int | None) -> None:
    """Raise unless every size is a positive whole number and no run-wide limit competes with them."""
    if not sizes:
        raise BabelpruneError("train_per_language is empty; give sizes such as {high: 112, medium: 56, low: 28}, or leave it out.")
    for key, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise BabelpruneError(f"train_per_language gives {key!r} {size!r} examples; give a positive whole number.")
    if max_train_examples is not None:
        raise BabelpruneError(
            f"train_per_language sets each language's training size, so max_train_examples ({max_train_examples}) "
            "would cut it again; set max_train_examples to None (null) or leave train_per_language out."
        )


def asked_train_size(sizes: dict[str, int], lang: str, level: str) -> int:
    """Training examples asked for `lang`: its own entry, else its resource level's; raise if neither."""
    if lang in sizes:
        return sizes[lang]
    if level in sizes:
        return sizes[level]
    raise BabelpruneError(
        f"train_per_language gives no size for language '{lang}' ({level} resource); "
        f"add '{lang}' or '{level}' to it."
    )


def asked_train_sizes(task: Task, config: FinetuneConfig, langs: list[str]) -> dict[str, int]:
    """{language: training examples asked} for the training languages `langs` (train_per_language must be set)."""
    sizes = config.train_per_language or {}
    stray = [key for key in sizes if key not in RESOURCE_LEVELS and key not in langs]
    if stray:
        raise BabelpruneError(
            f"train_per_language names {stray[0]!r}, which is neither a resource level ({', '.join(RESOURCE_LEVELS)}) "
            f"nor a training language of this run ({', '.join(langs)}); remove it."
        )
    return {lang: asked_train_size(sizes, lang, task.language(lang).resource) for lang in langs}


def limit_training(task: Task, run: TrainingRun, config: FinetuneConfig) -> TrainingRun:
    """The run with its training sample: per language (train_per_language) or per run (max_train_examples).

    A language with fewer examples than asked keeps all it has; the result's
    `train_examples` records the counts really used.
    """
    salt = f"train-{config.seed}"
    if config.train_per_language is None:
        return TrainingRun(run.name, limit_examples(run.train, config.max_train_examples, salt), run.eval_languages)
    langs = list(dict.fromkeys(example.lang for example in run.train))
    asked = asked_train_sizes(task, config, langs)
    train = [
        example for lang in langs
        for example in limit_examples([e for e in run.train if e.lang == lang], asked[lang], salt)
    ]
    return TrainingRun(run.name, train, run.eval_languages)


def record_train_sizes(task: Task, config: FinetuneConfig, result: FinetuneResult, notice: Callable[[str], None]) -> FinetuneResult:
    """`result` with the sizes train_per_language asked for; each language that had fewer is told to `notice`."""
    if config.train_per_language is None or not result.train_examples:
        return result
    asked = asked_train_sizes(task, config, list(result.train_examples))
    for lang, used in result.train_examples.items():
        if used < asked[lang]:
            notice(f"language '{lang}' has {used} training examples, fewer than the {asked[lang]} asked; it trains on all {used}")
    return result.model_copy(update={"train_asked": asked})


def default_perturbations(task: Task) -> list[str]:
    return ["words", "entities", "chars"] if task.kind == "token-classification" else ["words", "chars"]


def planned_steps(n_examples: int, config: FinetuneConfig) -> int:
    """Optimizer steps of a run over `n_examples`: max_steps, else ceil(epochs * batches per epoch)."""
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * math.ceil(n_examples / config.batch_size)))


def run_schedule(config: FinetuneConfig, total_steps: int) -> GMPConfig | None:
    """The step schedule a run of `total_steps` follows (None: no pruning); shares are fitted to that run."""
    if isinstance(config.gmp, RelativeGMPConfig):
        return config.gmp.for_steps(total_steps)
    return config.gmp


def limit_examples(examples: list[Example], limit: int | None, salt: str, by_key: bool = False) -> list[Example]:
    """A stable sample of `limit` examples, kept in their order.

    Ranked by a hash of language and key, or of the key alone (`by_key`), so
    that aligned tasks keep the same items in every language.
    """
    if limit is None or limit >= len(examples):
        return list(examples)

    def rank(i: int) -> int:
        example = examples[i]
        return stable_rank(example.key if by_key else f"{example.lang}:{example.key}", salt)

    chosen = set(sorted(range(len(examples)), key=rank)[:limit])
    return [example for i, example in enumerate(examples) if i in chosen]
