"""The public verbs of babelprune. The CLI only parses arguments and calls these."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from babelprune.data.corpus import Corpus, Split
from babelprune.data.registry import get_corpus
from babelprune.errors import BabelpruneError
from babelprune.evaluate.lm import score_windows
from babelprune.evaluate.windows import make_windows
from babelprune.models.base import LoadedModel
from babelprune.models.inspect import block_sparsity, count_parameters
from babelprune.models.loading import load_model
from babelprune.report.records import EvalResult, LMScore, ModelInfo, PruningInfo

__all__ = ["evaluate", "get_corpus", "load_model"]


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


def model_info(loaded: LoadedModel) -> ModelInfo:
    architectures = loaded.model.config.architectures or [type(loaded.model).__name__]
    return ModelInfo(
        spec=loaded.spec,
        architecture=architectures[0],
        n_parameters=count_parameters(loaded.model),
        block_sparsity=round(block_sparsity(loaded.model), 6),
    )


def evaluate(
    loaded: LoadedModel,
    corpus: Corpus | str,
    languages: Sequence[str] | None = None,
    split: Split = "eval",
    seq_len: int = 256,
    max_tokens: int = 2048,
    batch_size: int = 8,
    pruning: PruningInfo | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate a model on each language of a corpus.

    Causal LMs get perplexity and bits per byte over fixed windows of at most
    `seq_len` tokens, up to about `max_tokens` predicted tokens per language.
    Encoders get English-to-X retrieval accuracy on aligned segments.
    """
    corpus = get_corpus(corpus) if isinstance(corpus, str) else corpus
    languages = corpus.check_languages(list(languages) if languages else corpus.languages())
    if batch_size < 1 or max_tokens < 1:
        raise BabelpruneError("--batch-size and --max-tokens must be positive integers.")
    settings = {"seq_len": seq_len, "max_tokens": max_tokens, "batch_size": batch_size}
    started = time.perf_counter()
    if loaded.kind == "encoder":
        from babelprune.evaluate.retrieval import retrieval_scores

        scores = retrieval_scores(loaded, corpus, languages, split, max_queries=max_tokens, batch_size=batch_size, progress=progress)
        settings = {"max_queries": max_tokens, "batch_size": batch_size}
    else:
        scores = _lm_scores(loaded, corpus, languages, split, seq_len, max_tokens, batch_size, progress)
    return EvalResult(
        model=model_info(loaded),
        pruning=pruning or PruningInfo(),
        corpus=corpus.name,
        split=split,
        settings=settings,
        seconds=round(time.perf_counter() - started, 3),
        scores=scores,
    )


def _lm_scores(loaded, corpus, languages, split, seq_len, max_tokens, batch_size, progress) -> list[LMScore]:
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Tokenize everything first: the bar then counts windows, the real unit of work.
    windows = {lang: make_windows(tokenizer, corpus.texts(lang, split), seq_len, max_tokens) for lang in languages}
    scores = []
    with _progress(progress) as bar:
        task = bar.add_task("evaluating", total=sum(len(w) for w in windows.values()))
        for lang in languages:
            bar.update(task, description=f"evaluating {lang}")
            totals = score_windows(loaded.model, windows[lang], pad_id, batch_size, on_batch=lambda n: bar.advance(task, n))
            meta = corpus.language(lang)
            scores.append(
                LMScore(
                    language=lang,
                    name=meta.name,
                    script=meta.script,
                    resource=meta.resource,
                    n_windows=totals.n_windows,
                    n_tokens=totals.n_tokens,
                    n_bytes=totals.n_bytes,
                    nll_nats=totals.nll_nats,
                )
            )
    return scores
