"""The public verbs of babelprune. The CLI only parses arguments and calls these."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path


from babelprune.choices import LanguageBudget
from babelprune.data.corpus import Corpus, Split
from babelprune.data.registry import get_corpus
from babelprune.errors import BabelpruneError
from babelprune.progress import progress_bar
from babelprune.evaluate.lm import score_windows
from babelprune.evaluate.windows import make_windows
from babelprune.models.base import LoadedModel
from babelprune.models.inspect import block_sparsity, count_parameters
from babelprune.formats.loading import check_model_spec, load_model
from babelprune.prune.calibration import Calibration, build_calibration
from babelprune.prune.config import PruneConfig, StructuredConfig, TrimConfig
from babelprune.prune.engine import POOLED_MASK, PruneResult
from babelprune.prune.engine import prune as _prune
from babelprune.formats.gguf import export_gguf
from babelprune.formats.pruned import apply_language_mask, save_pruned
from babelprune.formats.trimmed import save_trimmed
from babelprune.prune.offload import open_offloaded, prune_offloaded
from babelprune.records.eval import EvalResult, LMScore, ModelInfo, PruningInfo

__all__ = [
    "calibrate", "evaluate", "export_gguf", "get_corpus", "load_model", "open_offloaded", "prune", "prune_offloaded",
    "prune_structured", "save_pruned", "save_trimmed", "trim_vocabulary",
    "PruneConfig", "StructuredConfig", "TrimConfig",
]

# Calibration languages when none are given: eight Bible languages over six
# scripts and all three resource levels; the other fourteen stay unseen.
DEFAULT_CALIBRATION_LANGUAGES = ("en", "es", "fr", "zh", "ru", "ar", "hi", "sw")


def check_sources(model: str | None = None, corpus: str | None = None, languages: Sequence[str] | None = None) -> None:
    """Refuse a model name, corpus or language the verbs would refuse later, before any model is loaded.

    Nothing is loaded or converted: a model name is checked by its form and
    its folder's files, a corpus by opening it and listing its languages.
    """
    if model is not None:
        check_model_spec(model)
    if corpus is not None:
        text = get_corpus(corpus)
        if languages:
            text.check_languages(list(languages))


def calibrate(
    loaded: LoadedModel,
    corpus: Corpus | str = "bible",
    languages: Sequence[str] | None = None,
    samples_per_language: int = 8,
    seq_len: int = 256,
    seed: int = 0,
) -> Calibration:
    """Balanced per-language calibration windows from a corpus's calibration split."""
    corpus = get_corpus(corpus) if isinstance(corpus, str) else corpus
    if languages is None:
        languages = [lang for lang in DEFAULT_CALIBRATION_LANGUAGES if lang in corpus.languages()] or corpus.languages()
    return build_calibration(loaded.tokenizer, corpus, list(languages), samples_per_language, seq_len, seed)


def prune(
    loaded: LoadedModel,
    config: PruneConfig,
    calibration: Calibration | None = None,
    progress: bool = True,
    language_budget: LanguageBudget = "none",
    holdout: Calibration | None = None,
    budget_rounds: int = 3,
) -> PruneResult:
    """Prune a model in place (shared) or into a per-language mask bank; see `babelprune.prune.engine`.

    language_budget="minimax" prunes `budget_rounds` times, raising the
    weight of the languages that lost most on the `holdout` windows, and
    keeps the best round (see `babelprune.prune.budget`).
    """
    if language_budget == "minimax":
        from babelprune.prune.budget import prune_with_language_budget

        result = prune_with_language_budget(loaded, config, calibration, holdout, budget_rounds, progress=progress)
    else:
        result = _prune(loaded, config, calibration, progress)
    vocabulary = (loaded.pruning or {}).get("vocabulary")  # a trimmed model stays trimmed: keep its record
    loaded.pruning = result.metadata() | {"parent": loaded.spec} | ({"vocabulary": vocabulary} if vocabulary else {})
    loaded.mask_bank = result.mask_bank
    return result


def prune_structured(
    loaded: LoadedModel,
    config: StructuredConfig,
    calibration: Calibration | None = None,
    progress: bool = True,
):
    """Remove whole heads / FFN neurons / blocks; see `babelprune.prune.structured`.

    Shared setting: `loaded.model` shrinks in place and `loaded.pruning` holds
    the record. Per-language: the model stays dense and the result holds each
    calibration language's selection (`prune.structured.prune_copy` builds one).
    Returns the `StructuredResult`.
    """
    from babelprune.prune.structured import structured_prune

    if config.needs_calibration and calibration is None:
        raise BabelpruneError(f"Importance '{config.importance}' needs calibration text; give --calib.")
    result = structured_prune(
        loaded, set(config.units), config.importance, config.sparsity,
        calibration if config.needs_calibration else None,
        setting=config.setting, gqa=config.gqa, ranking=config.ranking, progress=progress,
    )
    if result.per_language is None:
        loaded.pruning = result.metadata() | {"parent": loaded.spec, "config": config.to_dict()}
    return result


def trim_vocabulary(
    loaded: LoadedModel,
    corpus: Corpus | str | TrimConfig = "bible",
    languages: Sequence[str] | None = None,
    extra_texts: Sequence[str] = (),
    min_count: int = 1,
    keep_reserved: bool = True,
    split: Split = "calib",
    sources: dict | None = None,
):
    """Keep only the vocabulary the languages' text uses, in place; see `babelprune.prune.vocab`.

    The text is `split` of `corpus` in `languages` (the 8 default calibration
    languages when None) plus `extra_texts`. Works before or after `prune`;
    `save_trimmed` writes the folder. Returns the `VocabularyTrim` record.
    A `TrimConfig` in place of `corpus` gives corpus, languages, split,
    min_count and keep_reserved at once (the form the CLI and sweeps use).
    """
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.vocab import VocabularyTrim, choose_kept_ids, compose_ids, count_token_ids
    from babelprune.prune.vocab import slice_vocabulary_rows, trim_tokenizer

    if isinstance(corpus, TrimConfig):
        config = corpus
        corpus, languages, split = config.corpus, config.languages, config.split
        min_count, keep_reserved = config.min_count, config.keep_reserved
    corpus = get_corpus(corpus) if isinstance(corpus, str) else corpus
    if languages is None:
        languages = [lang for lang in DEFAULT_CALIBRATION_LANGUAGES if lang in corpus.languages()] or corpus.languages()
    languages = corpus.check_languages(list(languages))
    if (loaded.pruning or {}).get("structure"):
        raise BabelpruneError(f"{loaded.spec} was pruned structurally; trim the vocabulary of the dense model first, then prune.")
    texts = [text for lang in languages for text in corpus.texts(lang, split)] + list(extra_texts)
    rows = adapter_for(loaded.model).get_embeddings(loaded.model).weight.shape[0]
    counts = count_token_ids(loaded.tokenizer, texts)
    kept, seen, required = choose_kept_ids(loaded.tokenizer, loaded.model.config, counts, rows, min_count, keep_reserved)
    tokenizer = trim_tokenizer(loaded.tokenizer, kept)  # before the model changes: it can still fail cleanly
    slice_vocabulary_rows(loaded.model, kept)
    loaded.tokenizer = tokenizer
    parent = (loaded.pruning or {}).get("vocabulary")
    record = VocabularyTrim(
        kept_ids=compose_ids(parent["kept_ids"] if parent else None, kept),
        original_size=parent["original_vocab_size"] if parent else rows,
        languages=list(languages), seen_ids=seen, required_ids=required, min_count=min_count,
        sources={"parent": loaded.spec, "corpus": corpus.name, "split": split, "keep_reserved": keep_reserved,
                 "extra_texts": len(extra_texts), **(sources or {})},
    )
    loaded.pruning = {**(loaded.pruning or {}), "vocabulary": record.record()}
    return record


def pruning_info(loaded: LoadedModel) -> PruningInfo:
    """The header of a result: how this model was pruned (dense if it was not)."""
    if not loaded.pruning:
        return PruningInfo()
    meta = loaded.pruning
    return PruningInfo(
        method=meta.get("method", "dense"), sparsity=meta.get("sparsity", 0.0), setting=meta.get("setting"),
        config=meta.get("config", {}),
    )


def serving_mask(loaded: LoadedModel, lang: str) -> str | None:
    """Which mask of the per-language bank scores `lang`: its own, else the pooled one (None without a bank)."""
    if not loaded.mask_bank:
        return None
    if lang in loaded.mask_bank:
        return lang
    if POOLED_MASK in loaded.mask_bank:
        return POOLED_MASK
    own = ", ".join(key for key in loaded.mask_bank if key != POOLED_MASK)
    raise BabelpruneError(
        f"{loaded.spec} has no mask for '{lang}' and no pooled mask (it was saved by an older babelprune); "
        f"evaluate only its languages ({own}) or prune it again."
    )


def language_view(loaded: LoadedModel, lang: str):
    """Context in which the model is the one to use for `lang` (see `serving_mask`)."""
    mask = serving_mask(loaded, lang)
    if mask is None:
        return contextlib.nullcontext(loaded.model)
    return apply_language_mask(loaded.model, loaded.mask_bank, mask)


def model_info(loaded: LoadedModel) -> ModelInfo:
    architectures = loaded.model.config.architectures or [type(loaded.model).__name__]
    sparsity = block_sparsity(loaded.model)
    if loaded.mask_bank:  # dense weights; the sparsity is that of the language masks
        sparsity = (loaded.pruning or {}).get("achieved_sparsity", sparsity)
    return ModelInfo(
        spec=loaded.spec,
        architecture=architectures[0],
        n_parameters=count_parameters(loaded.model),
        block_sparsity=round(sparsity, 6),
    )


def _check_positions(loaded: LoadedModel, seq_len: int) -> None:
    """A window longer than the model's positions would be scored past what it was built for: refused."""
    limit = getattr(loaded.model.config.get_text_config(), "max_position_embeddings", None)
    if limit is not None and seq_len > limit:
        raise BabelpruneError(
            f"--seq-len {seq_len} is longer than the {limit} positions model '{loaded.spec}' has (max_position_embeddings); "
            f"give --seq-len {limit} or less."
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
    window_cache: dict | None = None,
) -> EvalResult:
    """Evaluate a model on each language of a corpus.

    Causal LMs get perplexity and bits per byte over fixed windows of at most
    `seq_len` tokens, up to about `max_tokens` predicted tokens per language.
    Encoders get English-to-X retrieval accuracy on aligned segments.

    `window_cache`: a dict kept by a caller that evaluates several models with
    the same tokenizer on the same corpus objects (a sweep); each language's
    windows are tokenized once and reused (keyed by the corpus object, so the
    caller keeps those alive, and by language, split, seq_len and max_tokens).
    """
    corpus = get_corpus(corpus) if isinstance(corpus, str) else corpus
    languages = corpus.check_languages(list(languages) if languages else corpus.languages())
    for lang in languages:  # before any work: a bank that cannot serve a language is refused up front
        serving_mask(loaded, lang)
    if batch_size < 1 or max_tokens < 1:
        raise BabelpruneError("--batch-size and --max-tokens must be positive integers.")
    settings = {"seq_len": seq_len, "max_tokens": max_tokens, "batch_size": batch_size}
    started = time.perf_counter()
    if loaded.kind == "encoder":
        from babelprune.evaluate.retrieval import retrieval_scores

        scores = retrieval_scores(
            loaded, corpus, languages, split, max_queries=max_tokens, batch_size=batch_size, progress=progress,
            view=lambda lang: language_view(loaded, lang),
        )
        settings = {"max_queries": max_tokens, "batch_size": batch_size}
    else:
        _check_positions(loaded, seq_len)
        scores = _lm_scores(loaded, corpus, languages, split, seq_len, max_tokens, batch_size, progress, window_cache)
    if loaded.mask_bank:  # every score says which mask of the bank served it
        scores = [score.model_copy(update={"mask": serving_mask(loaded, score.language)}) for score in scores]
    return EvalResult(
        model=model_info(loaded),
        pruning=pruning or pruning_info(loaded),
        corpus=corpus.name,
        split=split,
        settings=settings,
        seconds=round(time.perf_counter() - started, 3),
        scores=scores,
    )


def _lm_scores(loaded, corpus, languages, split, seq_len, max_tokens, batch_size, progress, cache=None) -> list[LMScore]:
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cache = {} if cache is None else cache

    def windows_of(lang: str):
        key = (id(corpus), lang, split, seq_len, max_tokens)
        if key not in cache:
            cache[key] = make_windows(tokenizer, corpus.texts(lang, split), seq_len, max_tokens)
        return cache[key]

    # Tokenize everything first: the bar then counts windows, the real unit of work.
    windows = {lang: windows_of(lang) for lang in languages}
    scores = []
    with progress_bar(progress) as bar:
        task = bar.add_task("evaluating", total=sum(len(w) for w in windows.values()))
        for lang in languages:
            bar.update(task, description=f"evaluating {lang}")
            with language_view(loaded, lang):
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
                    window_nll=list(totals.window_nll),
                    window_bytes=list(totals.window_bytes),
                )
            )
    return scores
