"""Scoring a fine-tuned head on every language's test set, clean and perturbed.

Each language's clean test set is limited (``max_eval_examples``) by a hash
of the example key alone, so aligned tasks keep the same items in every
language; its perturbed copies hold the same keys. The gap of a perturbed
set is the clean score minus its score.
"""

from __future__ import annotations

from babelprune.data.tasks import Example, Task
from babelprune.errors import BabelpruneError
from babelprune.evaluate.perturb import perturbed_examples
from babelprune.evaluate.retrieval import mean_pooled_embeddings, top1_correct
from babelprune.evaluate.task_metrics import task_score
from babelprune.finetune.config import FinetuneConfig, default_perturbations, limit_examples
from babelprune.finetune.heads import TaskHead, predict
from babelprune.records.finetune import TaskScore


def _score(
    lang: str, task: Task, value: float, n: int, perturbation: str | None, clean: float | None,
    correct: list[int] | None = None,
) -> TaskScore:
    meta = task.language(lang)
    return TaskScore(
        language=lang, name=meta.name, script=meta.script, resource=meta.resource, metric=task.metric,
        value=value, n_examples=n, perturbation=perturbation, gap=None if clean is None else clean - value,
        correct=correct,
    )


def evaluation_sets(task: Task, lang: str, config: FinetuneConfig) -> dict[str | None, list[Example]]:
    """{None: clean test examples, kind: perturbed ones} of a language, limited to the same keys."""
    clean = limit_examples(task.examples(lang, "test"), config.max_eval_examples, "eval", by_key=True)
    keys = {example.key for example in clean}
    sets: dict[str | None, list[Example]] = {None: clean}
    kinds = config.perturbations if config.perturbations is not None else default_perturbations(task)
    for kind in kinds:
        perturbed = perturbed_examples(task, lang, "test", kind, config.perturbation_rate, config.perturbation_seed)  # type: ignore[arg-type]
        sets[kind] = [example for example in perturbed if example.key in keys]
    return sets


def evaluate_head(head: TaskHead, tokenizer, task: Task, langs, config: FinetuneConfig) -> list[TaskScore]:
    scores = []
    for lang in langs:
        clean_value = None
        for kind, examples in evaluation_sets(task, lang, config).items():
            predicted = predict(head, tokenizer, examples, config.eval_batch_size, config.max_length, config.text_prefix)
            if task.kind == "token-classification":
                references: list = [list(example.tags or ()) for example in examples]
            else:
                references = [example.label for example in examples]
            value = task_score(task.metric, predicted, references, task.labels)  # type: ignore[arg-type]
            correct = [int(p == r) for p, r in zip(predicted, references)] if task.metric == "accuracy" else None
            scores.append(_score(lang, task, value, len(examples), kind, clean_value, correct))
            clean_value = value if kind is None else clean_value
    return scores


def evaluate_retrieval(model, tokenizer, task: Task, langs, config: FinetuneConfig) -> list[TaskScore]:
    """English-to-X top-1 on each language's test items, candidates clean or perturbed (queries always clean)."""
    source = limit_examples(task.examples(config.source_lang, "test"), config.max_eval_examples, "eval", by_key=True)
    source_text = {example.key: example.text or "" for example in source}

    def embed(texts: list[str]):
        return mean_pooled_embeddings(model, tokenizer, texts, config.text_prefix, config.eval_batch_size, config.max_length)

    query_cache: dict[tuple[str, ...], object] = {}  # aligned tasks: the same keys, hence queries, in every language
    scores = []
    for lang in [lang for lang in langs if lang != config.source_lang]:
        clean_value = None
        for kind, examples in evaluation_sets(task, lang, config).items():
            keys = tuple(example.key for example in examples if example.key in source_text)
            if not keys:
                raise BabelpruneError(
                    f"Task '{task.name}' has no '{lang}' test item aligned with '{config.source_lang}'; "
                    "retrieval needs aligned items."
                )
            if keys not in query_cache:
                query_cache[keys] = embed([source_text[key] for key in keys])
            target_text = {example.key: example.text or "" for example in examples}
            candidates = embed([target_text[key] for key in keys])
            value = top1_correct(query_cache[keys], candidates) / len(keys)  # type: ignore[arg-type]
            scores.append(_score(lang, task, value, len(keys), kind, clean_value))
            clean_value = value if kind is None else clean_value
    return scores
