"""The public verbs of babelprune. The CLI only parses arguments and calls these."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import torch


from babelprune.choices import (
    DeviceName, EvalOnload, GgufDtype, LanguageBudget, ModelDtype, Offload, Onload, Runtime, ShrinkGoal, SparseKernels, StorageFormat,
    ValuesDtype,
)
from babelprune.data.corpus import Corpus, Split
from babelprune.devices import dtype_name, format_size, out_of_memory, parse_size, require_float64, resolve
from babelprune.data.registry import get_corpus
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code
from babelprune.progress import progress_bar
from babelprune.evaluate.lm import score_windows
from babelprune.evaluate.semi_structured import check_sparse_kernels, converted_models
from babelprune.evaluate.windows import make_windows
from babelprune.models.base import LoadedModel
from babelprune.models.inspect import block_sparsity, count_parameters
from babelprune.formats.loading import check_model_spec, load_model
from babelprune.prune.calibration import Calibration, CalibrationSpec, build_calibration
from babelprune.prune.config import PruneConfig, StructuredConfig, TrimConfig
from babelprune.prune.engine import POOLED_MASK, PruneResult
from babelprune.prune.engine import prune as _prune
from babelprune.formats.gguf import export_gguf
from babelprune.formats.pruned import apply_language_mask, save_pruned
from babelprune.formats.trimmed import save_trimmed
from babelprune.finetune.config import FinetuneConfig
from babelprune.finetune.dynamic import DynamicConfig
from babelprune.prune.offload import open_offloaded, prune_offloaded
from babelprune.records.eval import EvalResult, LMScore, ModelInfo, PruningInfo

__all__ = [
    "calibrate", "evaluate", "export_gguf", "get_corpus", "load_model", "open_offloaded", "prune", "prune_offloaded",
    "prune_structured", "save_pruned", "save_trimmed", "trim_vocabulary",
    "evaluate_gguf", "evaluate_model", "export_model", "is_gguf_model", "measure_gguf_speeds", "fetch_corpus", "finetune_to_folder", "measure_model_speeds", "model_aliases",
    "prune_to_folder", "shrink_to_folder", "slice_to_folder", "task_catalog", "train_dynamic_to_folder", "trim_to_folder", "write_speed_reports",
    "CalibrationSpec", "DynamicConfig", "FinetuneConfig", "PruneConfig", "StructuredConfig", "TrimConfig",
]

# Calibration languages when none are given: eight Bible languages over six
# scripts and all three resource levels; the other fourteen stay unseen.
DEFAULT_CALIBRATION_LANGUAGES = ("en", "es", "fr", "zh", "ru", "ar", "hi", "sw")


def check_sources(model: str | None = None, corpus: str | None = None, languages: Sequence[str] | None = None,
                  device: DeviceName | None = None, dtype: ModelDtype = "auto") -> None:
    """Refuse a device, model name, corpus or language the verbs would refuse later, before any model is loaded.

    Nothing is loaded or converted: a device (with `dtype`) is checked against this machine, a
    model name by its form and its folder's files, a corpus by opening it and listing its languages.
    """
    if device is not None:
        resolve(device, dtype)
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
    *,
    onload: torch.device | str | None = None,
    activation_memory: int | str | None = None,
) -> PruneResult:
    """Prune a model in place (shared) or into a per-language mask bank; see `babelprune.prune.engine`.

    language_budget="minimax" prunes `budget_rounds` times, raising the
    weight of the languages that lost most on the `holdout` windows, and
    keeps the best round (see `babelprune.prune.budget`).
    `onload`: a device each block is moved to while it is pruned, the weights
    staying where they are (the CPU); `activation_memory` (bytes, or a size
    such as "2GB"): calibration hidden states allowed on it, the rest kept in
    CPU memory (see `babelprune.prune.onload`). Neither changes the masks.
    """
    budget = parse_size(activation_memory) if activation_memory is not None else None
    if language_budget == "minimax":
        from babelprune.prune.budget import prune_with_language_budget

        result = prune_with_language_budget(loaded, config, calibration, holdout, budget_rounds, progress=progress,
                                            onload=onload, activation_memory=budget)
    else:
        result = _prune(loaded, config, calibration, progress, onload=onload, activation_memory=budget)
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
        if config.refit:
            raise BabelpruneError("--refit fits the kept weights on calibration text; give --calib.")
        raise BabelpruneError(f"Importance '{config.importance}' needs calibration text; give --calib.")
    result = structured_prune(
        loaded, set(config.units), config.importance, config.sparsity,
        calibration if config.needs_calibration else None,
        setting=config.setting, gqa=config.gqa, ranking=config.ranking, progress=progress, refit=config.refit,
    )
    if result.per_language is None:
        loaded.pruning = result.metadata() | {"parent": loaded.spec, "config": config.to_dict()}
    return result


def language_scripts(languages: Sequence[str]) -> list[str]:
    """The Unicode scripts `languages` are written in, in first-seen order; a language of unknown script is refused."""
    from babelprune.data.languages import unicode_scripts

    scripts: list[str] = []
    for lang in languages:
        found = unicode_scripts(lang)
        if found is None:
            raise BabelpruneError(
                f"--keep-script-rank needs each kept language's script, and babelprune does not know the script of "
                f"{lang!r}; leave the option out or keep languages whose script it knows (en, ru, zh, ar, hi...)."
            )
        scripts += [name for name in found if name not in scripts]
    return scripts


def trim_vocabulary(
    loaded: LoadedModel,
    corpus: Corpus | str | TrimConfig = "bible",
    languages: Sequence[str] | None = None,
    extra_texts: Sequence[str] = (),
    min_count: int = 1,
    keep_reserved: bool = True,
    split: Split = "calib",
    sources: dict | None = None,
    keep_script_rank: int | None = None,
    keep_common: int | None = None,
):
    """Keep only the vocabulary the languages' text uses, in place; see `babelprune.prune.vocab`.

    The text is `split` of `corpus` in `languages` (the 8 default calibration
    languages when None) plus `extra_texts`. Works before or after `prune`;
    `save_trimmed` writes the folder. Returns the `VocabularyTrim` record.
    A `TrimConfig` in place of `corpus` gives corpus, languages, split,
    min_count, keep_reserved, keep_script_rank and keep_common at once (the form the CLI and sweeps use).
    `keep_script_rank` N also keeps the pieces of the languages' scripts among the
    tokenizer's N best-ranked pieces (`babelprune.prune.vocab.script_rank_ids`);
    `keep_common` N the N pieces the languages' common words use most
    (`babelprune.prune.vocab.common_word_ids`; languages without a word list are recorded).
    """
    from babelprune.data.languages import unicode_scripts
    from babelprune.models.adapters import adapter_for
    from babelprune.prune.vocab import VocabularyTrim, choose_kept_ids, compose_ids, count_token_ids
    from babelprune.prune.vocab import common_word_ids, common_word_lists, script_rank_ids, slice_vocabulary_rows
    from babelprune.prune.vocab import tokenizer_json, trim_tokenizer

    if isinstance(corpus, TrimConfig):
        config = corpus
        corpus, languages, split = config.corpus, config.languages, config.split
        min_count, keep_reserved, keep_script_rank = config.min_count, config.keep_reserved, config.keep_script_rank
        keep_common = config.keep_common
    corpus = get_corpus(corpus) if isinstance(corpus, str) else corpus
    if languages is None:
        languages = [lang for lang in DEFAULT_CALIBRATION_LANGUAGES if lang in corpus.languages()] or corpus.languages()
    languages = corpus.check_languages(list(languages))
    if (loaded.pruning or {}).get("structure"):
        raise BabelpruneError(f"{loaded.spec} was pruned structurally; trim the vocabulary of the dense model first, then prune.")
    scripts = language_scripts(languages) if keep_script_rank is not None else []
    texts = [text for lang in languages for text in corpus.texts(lang, split)] + list(extra_texts)
    rows = adapter_for(loaded.model).get_embeddings(loaded.model).weight.shape[0]
    counts = count_token_ids(loaded.tokenizer, texts)
    rule = script_rank_ids(tokenizer_json(loaded.tokenizer), scripts, keep_script_rank) if keep_script_rank is not None else set()
    no_word_list: list[str] = []
    if keep_common is not None:
        word_lists = common_word_lists(languages)
        no_word_list = [lang for lang in languages if lang not in word_lists]
        if not word_lists:
            raise BabelpruneError(f"--keep-common has no word frequency list for any of {', '.join(languages)}; leave it out for these languages.")
        already = {i for i, n in counts.items() if n >= min_count} | rule
        rule |= common_word_ids(loaded.tokenizer, word_lists, {lang: unicode_scripts(lang) or () for lang in word_lists},
                                keep_common, already)
    kept, seen, required = choose_kept_ids(loaded.tokenizer, loaded.model.config, counts, rows, min_count, keep_reserved, rule)
    tokenizer = trim_tokenizer(loaded.tokenizer, kept)  # before the model changes: it can still fail cleanly
    slice_vocabulary_rows(loaded.model, kept)
    loaded.tokenizer = tokenizer
    parent = (loaded.pruning or {}).get("vocabulary")
    record = VocabularyTrim(
        kept_ids=compose_ids(parent["kept_ids"] if parent else None, kept),
        original_size=parent["original_vocab_size"] if parent else rows,
        languages=list(languages), seen_ids=seen, required_ids=required, min_count=min_count,
        keep_script_rank=keep_script_rank, scripts=scripts, rule_ids=len(kept) - seen - required,
        keep_common=keep_common, no_word_list=no_word_list,
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
        device=str(loaded.device),
        dtype=dtype_name(loaded.dtype),
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
    sparse_kernels: SparseKernels = "none",
    onload: torch.device | str | None = None,
) -> EvalResult:
    """Evaluate a model on each language of a corpus.

    Causal LMs get perplexity and bits per byte over fixed windows of at most
    `seq_len` tokens, up to about `max_tokens` predicted tokens per language.
    Encoders get English-to-X retrieval accuracy on aligned segments.

    `window_cache`: a dict kept by a caller that evaluates several models with
    the same tokenizer on the same corpus objects (a sweep); each language's
    windows are tokenized once and reused (keyed by the corpus object, so the
    caller keeps those alive, and by language, split, seq_len and max_tokens).

    `sparse_kernels="2:4"` scores the model with its 2:4 block linears as semi-structured weights
    (a CUDA device in float16 or bfloat16; babelprune.evaluate.semi_structured), dense again
    afterwards; the result's `model.sparse_kernels` says which were converted and why others were not.

    `onload`: a device each block of a causal LM (whose weights stay where they are, on the CPU) is moved
    to while it scores every window of a language (babelprune.evaluate.onloaded): a model larger than
    the device's memory. The result's `model.device` is that device and its settings say `onload`.
    """
    corpus = get_corpus(corpus) if isinstance(corpus, str) else corpus
    languages = corpus.check_languages(list(languages) if languages else corpus.languages())
    for lang in languages:  # before any work: a bank that cannot serve a language is refused up front
        serving_mask(loaded, lang)
    if batch_size < 1 or max_tokens < 1:
        raise BabelpruneError("--batch-size and --max-tokens must be positive integers.")
    settings = {"seq_len": seq_len, "max_tokens": max_tokens, "batch_size": batch_size}
    if loaded.kind != "encoder":
        _check_positions(loaded, seq_len)
    info = model_info(loaded)  # read from the dense weights, before any is compressed
    if onload is not None:
        _check_onload(loaded, sparse_kernels)
        onload = torch.device(onload)
        settings["onload"] = "sequential"
        info = info.model_copy(update={"device": str(onload)})
    started = time.perf_counter()
    with converted_models([loaded], sparse_kernels) as (kernels,):
        if loaded.kind == "encoder":
            from babelprune.evaluate.retrieval import retrieval_scores

            scores = retrieval_scores(
                loaded, corpus, languages, split, max_queries=max_tokens, batch_size=batch_size, progress=progress,
                view=lambda lang: language_view(loaded, lang),
            )
            settings = {"max_queries": max_tokens, "batch_size": batch_size}
        else:
            scores = _lm_scores(loaded, corpus, languages, split, seq_len, max_tokens, batch_size, progress, window_cache,
                                onload)
    if kernels is not None:
        info = info.model_copy(update={"sparse_kernels": kernels})
    if loaded.mask_bank:  # every score says which mask of the bank served it
        scores = [score.model_copy(update={"mask": serving_mask(loaded, score.language)}) for score in scores]
    return EvalResult(
        model=info,
        pruning=pruning or pruning_info(loaded),
        corpus=corpus.name,
        split=split,
        settings=settings,
        seconds=round(time.perf_counter() - started, 3),
        scores=scores,
    )


def _check_onload(loaded: LoadedModel, sparse_kernels: SparseKernels) -> None:
    """Sequential onloading scores a causal LM's blocks as they are: one sentence for what it cannot serve."""
    from babelprune.evaluate.onloaded import check_onloadable

    if loaded.kind == "encoder":
        raise BabelpruneError("--onload sequential scores causal LMs, and an encoder is scored by retrieval with the whole "
                              "model on --device; drop --onload.")
    if sparse_kernels != "none":
        raise BabelpruneError("--sparse-kernels converts the linears of a model that sits whole on the device, which "
                              "--onload sequential does not do; drop one of them.")
    check_onloadable(loaded.model)


def _lm_scores(loaded, corpus, languages, split, seq_len, max_tokens, batch_size, progress, cache=None,
               onload: torch.device | None = None) -> list[LMScore]:
    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def score(lang, windows, advance):
        with language_view(loaded, lang):
            if onload is not None:
                from babelprune.evaluate.onloaded import score_windows_onloaded

                return score_windows_onloaded(loaded.model, windows, pad_id, onload, batch_size, on_batch=advance)
            return score_windows(loaded.model, windows, pad_id, batch_size, on_batch=advance)

    return language_scores(tokenizer, corpus, languages, split, seq_len, max_tokens, progress, score, cache)


def language_scores(tokenizer, corpus, languages, split, seq_len, max_tokens, progress, score, cache=None) -> list[LMScore]:
    """One LMScore per language over the windows `tokenizer` cuts from `corpus`; `score(lang, windows, advance)`
    returns their NLLTotals (torch, or llama.cpp), calling `advance(n)` as it finishes n windows."""
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
            scores.append(_lm_score(corpus, lang, score(lang, windows[lang], lambda n: bar.advance(task, n))))
    return scores


def _lm_score(corpus, lang: str, totals) -> LMScore:
    """The LMScore of `lang` from the NLLTotals of its windows, with the corpus's facts about the language."""
    meta = corpus.language(lang)
    return LMScore(language=lang, name=meta.name, script=meta.script, resource=meta.resource,
                   n_windows=totals.n_windows, n_tokens=totals.n_tokens, n_bytes=totals.n_bytes,
                   nll_nats=totals.nll_nats, window_nll=list(totals.window_nll), window_bytes=list(totals.window_bytes),
                   segment_nll=list(totals.segment_nll), segment_bytes=list(totals.segment_bytes))


# ----- whole jobs: from a model's name to a written folder ---------------------------------------
# Each command of the CLI is one of these: it checks every input before loading anything, does the
# work with the verbs above, and writes its output. The CLI only parses its options and prints.


def model_aliases() -> dict[str, str]:
    """The built-in model aliases, each with its description."""
    from babelprune.formats.loading import ALIASES

    return {alias: description for alias, (description, _) in ALIASES.items()}


def task_catalog() -> dict[str, list[str]]:
    """The built-in tasks, each with the options it takes."""
    from babelprune.data.tasks import task_names, task_options

    return {name: task_options(name) for name in task_names()}


def fetch_corpus(name: str) -> Path:
    """Download a corpus that is fetched rather than installed (the UDHR) into the cache; returns its folder."""
    from babelprune.data.udhr import fetch_udhr

    if name != "udhr":
        raise BabelpruneError(f"There is nothing to fetch for '{name}'; only 'udhr' is fetched (the Bible installs with pip).")
    return fetch_udhr()


def evaluate_model(model: str, corpus: str = "bible", languages: Sequence[str] | None = None, split: Split = "eval",
                   seq_len: int = 256, max_tokens: int = 2048, batch_size: int = 8, *,
                   device: DeviceName = "cpu", dtype: ModelDtype = "auto", sparse_kernels: SparseKernels = "none",
                   runtime: Runtime = "torch", tokenizer: str | None = None, onload: EvalOnload = "none") -> EvalResult:
    """Load `model` in `dtype` on `device` and score it per language on `corpus` (everything checked before loading).

    `onload="sequential"`: the weights are loaded into CPU memory and each block moves to `device` while it runs
    (`evaluate`'s `onload`), for a model larger than the device's memory; `"none"` puts the whole model there.

    `sparse_kernels="2:4"` runs its 2:4 block linears with PyTorch's semi-structured kernels (see `evaluate`).
    `runtime="llama.cpp"`: `model` is a GGUF file and llama.cpp computes the logits, on the windows and token
    ids the torch evaluation of its source model makes (see `evaluate_gguf`; `tokenizer` names that model).
    """
    if runtime not in get_args(Runtime):
        raise BabelpruneError(f"Unknown runtime '{runtime}'; choose one of {', '.join(get_args(Runtime))}.")
    if runtime == "llama.cpp":
        unused = [name for name, value, default in (("--device", device, "cpu"), ("--dtype", dtype, "auto"),
                                                    ("--sparse-kernels", sparse_kernels, "none"), ("--onload", onload, "none"))
                  if value != default]
        if unused:
            raise BabelpruneError(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect with --runtime llama.cpp, "
                                  "which runs the GGUF file's own weights on the CPU; drop "
                                  f"{'it' if len(unused) == 1 else 'them'}.")
        return evaluate_gguf(model, corpus, languages, split, seq_len, max_tokens, tokenizer=tokenizer)
    if tokenizer is not None:
        raise BabelpruneError("--tokenizer names the model a GGUF file was exported from, for --runtime llama.cpp, and the "
                              "torch runtime uses the model's own tokenizer; drop it or add --runtime llama.cpp.")
    _refuse_gguf_for_torch(model)
    if onload not in get_args(EvalOnload):
        raise BabelpruneError(f"--onload {onload!r} is not one of: {', '.join(get_args(EvalOnload))}.")
    place, dtype = resolve(device, dtype)
    check_sparse_kernels(sparse_kernels, place, dtype)
    check_sources(model=model)
    text = get_corpus(corpus)
    languages = text.check_languages(list(languages)) if languages is not None else None
    sequential = onload == "sequential"
    lower = "lower --batch-size or --seq-len" + ("" if sequential else ", or add --onload sequential")
    with out_of_memory(f"evaluating {model}", lambda where: lower):
        loaded = load_model(model, dtype, torch.device("cpu") if sequential else place)
        return evaluate(loaded, text, languages, split, seq_len, max_tokens, batch_size, sparse_kernels=sparse_kernels,
                        onload=place if sequential else None)


def _refuse_gguf_for_torch(model: str) -> None:
    """A GGUF file given to the torch runtime is one sentence naming the runtime that reads it."""
    if is_gguf_model(model):
        raise BabelpruneError(f"{model} is a GGUF file, which the torch runtime does not load; "
                              "add --runtime llama.cpp to score it in llama.cpp.")


def _gguf_facts(model: str, purpose: str):
    """The facts of the GGUF file `model`; a missing file, or one that is not GGUF, is one sentence."""
    from babelprune.formats.gguf import read_gguf

    path = Path(model).expanduser()
    if not path.is_file():
        raise BabelpruneError(f"No GGUF file at {model}; {purpose} takes a .gguf file (`babelprune export --format gguf` writes one).")
    return read_gguf(path)


def gguf_tokenizer(facts, tokenizer: str | None):
    """(the tokenizer of the model the GGUF file was exported from, the name it was loaded by).

    `tokenizer` names that model (alias, folder or hub id); left out, the file's babelprune.source (written by
    `babelprune export`) does, when it is an alias or a folder that still exists. Its pieces must be the
    file's vocabulary, id for id.
    """
    from babelprune.formats.gguf import check_tokenizer_matches
    from babelprune.formats.loading import ALIASES, load_model_tokenizer

    spec = tokenizer
    if spec is None:
        source = facts.source
        if source is None:
            raise BabelpruneError(f"{facts.path.name} does not say which model it was exported from; give --tokenizer "
                                  "with that model's folder, alias or hub id, whose tokenizer makes the token ids.")
        if source not in ALIASES and not Path(source).is_dir():
            raise BabelpruneError(f"{facts.path.name} was exported from {source}, which is not here any more; give --tokenizer "
                                  "with a copy of that model's folder (or its alias or hub id).")
        spec = source
    loaded = load_model_tokenizer(spec)
    check_tokenizer_matches(loaded, facts, spec)
    return loaded, spec


def evaluate_gguf(model: str, corpus: str = "bible", languages: Sequence[str] | None = None, split: Split = "eval",
                  seq_len: int = 256, max_tokens: int = 2048, *, tokenizer: str | None = None,
                  progress: bool = True) -> EvalResult:
    """Score the GGUF file `model` per language with llama.cpp computing the logits (babelprune.evaluate.llama_cpp).

    The windows and token ids are those `evaluate` makes with the source model's tokenizer (see
    `gguf_tokenizer`), so the result compares with the torch evaluation of that model window for window.
    Every input (llama-cpp-python installed, the file, the corpus, the languages, the tokenizer) is checked
    before llama.cpp loads the file.
    """
    from babelprune.evaluate.llama_cpp import LlamaCppRuntime, bindings, score_windows_with, versions
    from babelprune.formats.gguf import block_zero_share
    from babelprune.records.eval import GgufRunInfo

    facts = _gguf_facts(model, "--runtime llama.cpp")
    bindings("Scoring a GGUF file with --runtime llama.cpp runs llama.cpp")
    text = get_corpus(corpus) if isinstance(corpus, str) else corpus
    languages = text.check_languages(list(languages) if languages else text.languages())
    if max_tokens < 1:
        raise BabelpruneError("--max-tokens must be a positive integer.")
    if seq_len < 2:
        raise BabelpruneError(f"A window of {seq_len} tokens is too short; use --seq-len 2 or more (256 is usual).")
    if facts.context_length is not None and seq_len > facts.context_length:
        raise BabelpruneError(f"--seq-len {seq_len} is longer than the {facts.context_length} positions {facts.path.name} "
                              f"was built for ({facts.architecture}.context_length); give --seq-len {facts.context_length} or less.")
    words, spec = gguf_tokenizer(facts, tokenizer)
    python_version, build = versions()
    info = ModelInfo(spec=model, architecture=facts.architecture, n_parameters=facts.n_parameters,
                     block_sparsity=round(block_zero_share(facts.path), 6), device="cpu", dtype=None, runtime="llama.cpp",
                     gguf=GgufRunInfo(file=model, file_type=facts.file_type, llama_cpp_python=python_version, llama_cpp=build,
                                      tokenizer=spec))
    started = time.perf_counter()
    runtime = LlamaCppRuntime(facts.path, seq_len)
    try:
        scores = language_scores(words, text, languages, split, seq_len, max_tokens, progress,
                                 lambda lang, windows, advance: score_windows_with(runtime, windows, advance))
    finally:
        runtime.close()
    return EvalResult(model=info, corpus=text.name, split=split, settings={"seq_len": seq_len, "max_tokens": max_tokens},
                      seconds=round(time.perf_counter() - started, 3), scores=scores)


def _calibrate_spec(loaded: LoadedModel, spec: CalibrationSpec, extra_samples: int = 0) -> Calibration:
    return calibrate(loaded, spec.corpus, spec.languages, spec.samples + extra_samples, spec.seq_len, spec.seed)


def _check_calibration_sources(spec: CalibrationSpec) -> None:
    check_sources(corpus=spec.corpus, languages=spec.languages)


def prune_to_folder(
    model: str,
    config: PruneConfig | StructuredConfig,
    out: Path | str,
    calibration: CalibrationSpec | None = None,
    *,
    language_budget: LanguageBudget = "none",
    budget_rounds: int = 3,
    holdout_samples: int = 2,
    offload: Offload = "none",
    save_format: StorageFormat | None = None,
    values: ValuesDtype = "fp32",
    device: DeviceName = "cpu",
    dtype: ModelDtype = "auto",
    onload: Onload = "auto",
    activation_memory: str | int | None = None,
):
    """Load `model`, prune it as `config` says and write it to `out`; returns the pruning result.

    The calibration text is built only when the config reads it (`config.needs_calibration`); a
    PruneConfig's own `seed` chooses its windows. With a language budget, `holdout_samples` more
    windows per language are drawn and held out to measure each round. `offload="disk"` reads and
    writes one block at a time. A structured per-language result writes one model per language,
    in `out/<language>`. The model is pruned in `dtype` on `device` (its statistics stay float32 or
    float64). Every name, language and setting is checked before the model is loaded.

    One-shot pruning on an accelerator keeps the weights on the CPU (or on disk) and moves each
    block to `device` while it is pruned (`onload="auto"` or `"sequential"`; `"none"` loads the
    whole model on the device). `activation_memory` ("2GB", "512MiB", or bytes) bounds the
    calibration hidden states kept on the device; beyond it they stay in CPU memory and stream in
    by micro-batch. Running out of memory is one sentence naming what to lower, and leaves no `out`.
    """
    calibration = calibration or CalibrationSpec()
    place, dtype = resolve(device, dtype)
    require_float64(place, "Pruning")
    memory = parse_size(activation_memory) if activation_memory is not None else None
    if isinstance(config, StructuredConfig):
        if offload == "disk":
            raise BabelpruneError("--offload disk prunes one-shot (unstructured or N:M), not --structured units; drop one of them.")
        if onload == "sequential" or memory is not None:
            raise BabelpruneError(
                "--onload sequential and --activation-memory serve one-shot pruning, but structured pruning (--structured) "
                "loads the whole model on the device; drop them."
            )
        with out_of_memory(f"pruning {model}", lambda where: "lower --samples or --seq-len"):
            return _prune_structured_to_folder(model, config, out, calibration, place, dtype)
    calibration = calibration.model_copy(update={"seed": config.seed})
    target = onload_device(place, onload)
    budget_run = language_budget == "minimax"
    if budget_run and calibration.languages is not None and len(calibration.languages) < 2:
        raise BabelpruneError("--language-budget weighs calibration languages against each other; give at least two in --calib-langs.")
    needs_data = config.needs_calibration or budget_run
    check_sources(model=model)
    if needs_data:
        _check_calibration_sources(calibration)
    advice = _pruning_memory_advice(target is not None, memory, offload)
    if offload == "disk":
        if budget_run:
            raise BabelpruneError("--language-budget prunes the whole model several times over, which --offload disk cannot do block by block; drop one of them.")
        from babelprune.prune.offload import check_offload_request

        if place.type != "cpu" and target is None:
            raise BabelpruneError(f"--offload disk keeps the weights on disk, so --onload none cannot put the whole model on {place}; drop --onload none.")
        check_offload_request(config)
        offloaded = open_offloaded(model, dtype)
        windows = _calibrate_spec(offloaded.loaded, calibration) if needs_data else None
        with out_of_memory(f"pruning {model}", advice):  # the folder is written inside a temporary one: nothing is left
            return prune_offloaded(offloaded, config, windows, Path(out), save_format, values, onload=target, activation_memory=memory)
    with out_of_memory(f"pruning {model}", advice):  # the folder is written only once pruning is done, atomically
        # Onloaded, the weights stay on the CPU; the device sees one block at a time.
        loaded = load_model(model, dtype, torch.device("cpu") if target is not None else place)
        held = holdout_samples if budget_run else 0
        windows = _calibrate_spec(loaded, calibration, held) if needs_data else None
        holdout = None
        if budget_run:
            windows, holdout = windows.split_holdout(held)
        result = prune(loaded, config, windows, language_budget=language_budget, holdout=holdout, budget_rounds=budget_rounds,
                       onload=target, activation_memory=memory)
        save_pruned(loaded, result, out, save_format, values)
    return result


def onload_device(place: torch.device, onload: Onload) -> torch.device | None:
    """The device blocks are moved to one at a time while pruning (None: the whole model is loaded on `place`).

    "auto" onloads to an accelerator and not on the CPU, where the weights already are.
    """
    if onload not in ("auto", "sequential", "none"):
        raise BabelpruneError(f"--onload {onload!r} is not one of: auto, sequential, none.")
    if onload == "none" or (onload == "auto" and place.type == "cpu"):
        return None
    return place


def _pruning_memory_advice(onloaded: bool, budget: int | None, offload: Offload):
    """What to lower when pruning runs out of memory, on the CPU ("cpu") or on the accelerator."""
    lower_budget = f"lower --activation-memory (now {format_size(budget)})" if budget is not None else (
        "give --activation-memory (such as 2GB) to keep the calibration activations beyond it in CPU memory")

    def advice(where: str) -> str:
        if where == "cpu":
            weights = "" if offload == "disk" else ", or add --offload disk to keep the weights on disk"
            return f"lower --calib-batch or --samples, {lower_budget}{weights}"
        if not onloaded:
            return "let the weights stay on the CPU with --onload sequential (one block on the device at a time), or lower --calib-batch"
        return f"lower --calib-batch, or {lower_budget}"

    return advice


def _prune_structured_to_folder(model: str, config: StructuredConfig, out: Path | str, calibration: CalibrationSpec,
                                device: torch.device, dtype: torch.dtype):
    """Remove heads / FFN neurons / blocks and save; per-language writes one model per calibration language."""
    from babelprune.cache import atomic_dir
    from babelprune.formats.structured import save_structured
    from babelprune.names import child_path
    from babelprune.prune.structured import prune_copy

    check_sources(model=model)
    if config.needs_calibration:
        _check_calibration_sources(calibration)
    loaded = load_model(model, dtype, device)
    windows = _calibrate_spec(loaded, calibration) if config.needs_calibration else None
    result = prune_structured(loaded, config, windows)
    if result.per_language:
        with atomic_dir(Path(out)) as folder:
            for lang, selection in result.per_language.items():
                pruned = prune_copy(loaded, selection)
                # A language code is data: child_path refuses any code that would name a place outside the folder.
                save_structured(pruned.model, loaded.tokenizer, child_path(folder, lang, "language code"), result.metadata() | {"language": lang})
    else:
        save_structured(loaded.model, loaded.tokenizer, Path(out), result.metadata())
    return result


def trim_to_folder(model: str, config: TrimConfig, out: Path | str, extra_files: Sequence[Path] = ()):
    """Trim `model`'s vocabulary to what `config`'s text (and the extra files) uses and save it to `out`.

    Returns the `VocabularyTrim` record and the parameter counts before and after. The extra files
    are read before the model is loaded, so a bad file costs nothing.
    """
    from babelprune.data.files import text_file_segments

    check_sources(model=model)
    text = get_corpus(config.corpus)
    if config.languages:
        text.check_languages(config.languages)
    extra_texts = text_file_segments(extra_files)  # each paragraph (or line) is tokenized like a segment
    loaded = load_model(model)
    before = count_parameters(loaded.model)
    trim = trim_vocabulary(loaded, config, extra_texts=extra_texts, sources={"extra_files": [str(path) for path in extra_files]})
    save_trimmed(loaded, out)
    return trim, before, count_parameters(loaded.model)


def export_model(model: str, out: Path | str, dtype: GgufDtype = "f32", quant: str | None = None,
                 imatrix: str | None = None, calibration: CalibrationSpec | None = None):
    """Load `model` and write it with its tokenizer as one GGUF file; returns the `GgufExport` record.

    With `quant` (a mix of `choices.GgufQuant`), the `dtype` file is quantized by llama.cpp's own quantizer
    (llama-cpp-python). `imatrix` weighs its rounding: "balanced" (each calibration language's mean squared
    linear inputs, averaged with the languages weighted equally), one language's code (that language alone)
    or "none"; left out, "balanced" for the mixes that read a matrix (all but Q8_0). The matrix comes from
    `calibration` (the default CalibrationSpec when None), run on the CPU in float32. Every refusal (unknown
    mix, no llama-cpp-python, a matrix without a mix) comes before any model is loaded.
    """
    if quant is None:
        if imatrix not in (None, "none") or calibration is not None:
            raise BabelpruneError("An importance matrix and its calibration text weigh quantization; add --quant, "
                                  "or leave out --imatrix and the calibration options.")
        check_sources(model=model)
        return export_gguf(load_model(model), out, dtype)
    from babelprune.formats.gguf_quant import READS_NO_IMATRIX, check_quant, export_quantized, llama_cpp_bindings

    check_quant(quant)
    llama_cpp_bindings()  # before any work: without llama-cpp-python, one sentence naming the extra
    kind = imatrix or ("none" if quant in READS_NO_IMATRIX else "balanced")
    if kind == "none" and calibration is not None:
        raise BabelpruneError("Calibration text builds the importance matrix; with --imatrix none leave out "
                              "the calibration options.")
    if kind != "none" and quant in READS_NO_IMATRIX:
        raise BabelpruneError(f"{quant} reads no importance matrix; leave out --imatrix or give --imatrix none.")
    calibration = calibration or CalibrationSpec()
    if kind not in ("none", "balanced"):
        kind = check_language_code(kind, "in --imatrix", "give balanced, none or a calibration language's code")
        if calibration.languages is not None and kind not in calibration.languages:
            raise BabelpruneError(f"--imatrix {kind} names no calibration language ({', '.join(calibration.languages)}); "
                                  "add it to --calib-langs or use balanced.")
    if kind == "none":
        check_sources(model=model)
        return export_quantized(load_model(model), out, quant, dtype)
    check_sources(model=model, corpus=calibration.corpus, languages=calibration.languages)
    loaded = load_model(model)
    return export_quantized(loaded, out, quant, dtype, language_importance(loaded, kind, calibration))


def language_importance(loaded: LoadedModel, kind: str, spec: CalibrationSpec | None = None):
    """The importance matrix of `loaded`'s GGUF weights: "balanced" over the calibration languages, or one language's."""
    from babelprune.formats.gguf import linear_gguf_names
    from babelprune.formats.imatrix import ImportanceMatrix
    from babelprune.prune.imatrix import importance_values, linear_input_stats

    spec = spec or CalibrationSpec()
    windows = calibrate(loaded, spec.corpus, spec.languages, spec.samples, spec.seq_len, spec.seed)
    if kind != "balanced" and kind not in windows.language_set:
        raise BabelpruneError(f"--imatrix {kind} names no calibration language ({', '.join(windows.language_set)}); "
                              "add it to --calib-langs or use balanced.")
    names = linear_gguf_names(loaded)
    skip = [name for name, _ in loaded.model.named_modules() if name not in names]
    values = importance_values(linear_input_stats(loaded.model, windows, skip=skip), kind)
    languages = tuple(windows.language_set) if kind == "balanced" else (kind,)
    return ImportanceMatrix({names[module]: array for module, array in values.items()}, kind, languages,
                            tokens=int(windows.ids.numel()), chunk_size=int(windows.ids.shape[1]),
                            chunks=int(windows.ids.shape[0]), datasets=(windows.corpus,))


def measure_model_speeds(models: Sequence[str], *, device: DeviceName = "cpu", dtype: ModelDtype = "auto",
                         sparse_kernels: SparseKernels = "none", **settings):
    """Load each model in `dtype` on `device` and time it side by side (`babelprune.evaluate.speed.measure_speeds`).

    The first model is the reference. Peak memory (`memory=True`) is the resident memory of a CPU process,
    so it is measured only for models on the CPU. `sparse_kernels="2:4"` times every model with its 2:4
    block linears as PyTorch semi-structured weights (CUDA, float16 or bfloat16); each report says which.
    """
    from babelprune.evaluate.speed import measure_speeds

    ggufs = [spec for spec in models if is_gguf_model(spec)]
    if ggufs:
        if len(ggufs) < len(models):
            raise BabelpruneError(f"{ggufs[0]} is a GGUF file, which llama.cpp times, and the other models run in torch; "
                                  "time the GGUF files and the torch models in separate bench-speed commands.")
        unused = [name for name, value, default in (("--device", device, "cpu"), ("--dtype", dtype, "auto"),
                                                    ("--sparse-kernels", sparse_kernels, "none")) if value != default]
        unused += [flag_name for flag_name, key in (("--batch", "batch_size"), ("--memory", "memory")) if settings.get(key)]
        if unused:
            raise BabelpruneError(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect on GGUF files, which "
                                  "llama.cpp times at batch 1 on the CPU with their own weights; drop "
                                  f"{'it' if len(unused) == 1 else 'them'}{' (--no-memory)' if '--memory' in unused else ''}.")
        return measure_gguf_speeds(models, **{key: value for key, value in settings.items() if key not in ("batch_size", "memory")})
    place, dtype = resolve(device, dtype)
    check_sparse_kernels(sparse_kernels, place, dtype)
    if settings.get("memory") and place.type != "cpu":
        raise BabelpruneError(f"Peak memory is measured as the resident memory of a CPU process, not on {place}; add --no-memory.")
    for spec in models:
        check_sources(model=spec)
    with out_of_memory("timing " + ", ".join(models), lambda where: "lower --batch or --seq-len, or time fewer models at once"):
        return measure_speeds([load_model(spec, dtype, place) for spec in models], sparse_kernels=sparse_kernels, **settings)


def is_gguf_model(spec: str) -> bool:
    """Whether `spec` names a GGUF file (by its .gguf name, or a file's first bytes), which llama.cpp runs."""
    from babelprune.formats.gguf import is_gguf_file

    if spec.lower().endswith(".gguf"):
        return True
    try:
        return Path(spec).expanduser().is_file() and is_gguf_file(Path(spec).expanduser())
    except OSError:  # a name the file system cannot hold (too long) names no file
        return False


def measure_gguf_speeds(files: Sequence[str], *, seq_len: int = 128, runs: int = 5, warmup: int = 2,
                        threads: int | None = None, new_tokens: int = 64, prompt_tokens: int = 16):
    """Time GGUF files in llama.cpp at batch 1 (babelprune.evaluate.llama_cpp): prompt processing of `seq_len`
    tokens and greedy generation of `new_tokens` after `prompt_tokens`, in tokens per second; one
    `LlamaCppSpeedReport` each. Every file and llama-cpp-python are checked before any is loaded."""
    from babelprune.evaluate.llama_cpp import bindings, measure_llama_cpp_speeds, versions
    from babelprune.records.speed import LlamaCppSpeedReport

    facts = [_gguf_facts(spec, "bench-speed of a GGUF file") for spec in files]
    bindings("Timing a GGUF file runs llama.cpp")
    figures = measure_llama_cpp_speeds(facts, seq_len=seq_len, runs=runs, warmup=warmup, threads=threads,
                                       new_tokens=new_tokens, prompt_tokens=prompt_tokens)
    python_version, build = versions()
    return [LlamaCppSpeedReport(spec=spec, architecture=fact.architecture, file_type=fact.file_type,
                                n_parameters=fact.n_parameters, bytes_on_disk=fact.path.stat().st_size,
                                llama_cpp_python=python_version, llama_cpp=build, threads=threads, seq_len=seq_len,
                                prompt_tokens=prompt_tokens, new_tokens=new_tokens, runs=runs, warmup=warmup, **figure)
            for spec, fact, figure in zip(files, facts, figures)]


def write_speed_reports(reports, path: Path | str) -> None:
    """The speed reports as one JSON list (what `bench-speed --json` writes), atomically."""
    import json

    from babelprune.cache import atomic_write_text

    atomic_write_text(Path(path), json.dumps([report.model_dump(mode="json") for report in reports], indent=2) + "\n")


def finetune_to_folder(model: str, task: str, task_options: dict, config, out: Path | str, on_notice=None, *,
                       device: DeviceName = "cpu", dtype: ModelDtype = "auto"):
    """Fine-tune `model` on `task` as `config` says into the run folder `out` (resumed when it holds this run).

    Returns the `FinetuneResult` and the folders of the models it saved. The model trains in `dtype`
    on `device`. The device, the folder, the model's name and every task input (languages, examples)
    are checked before any model is loaded.
    """
    resolve(device, dtype)  # a device this machine lacks is refused before the folder is looked at
    from babelprune.data.tasks import get_task
    from babelprune.finetune.settings import check_run_folder
    from babelprune.finetune.trainer import finetune, plan_runs, saved_models

    check_run_folder(Path(out))  # a folder that is neither empty nor a fine-tuning run is refused; a run folder resumes
    check_sources(model=model)
    chosen = get_task(task, **task_options)
    plan_runs(chosen, config)
    with out_of_memory(f"fine-tuning {model}", lambda where: "lower --batch-size or --max-length"):
        result = finetune(model, chosen, config, Path(out), on_notice=on_notice, device=device, dtype=dtype)
    return result, (saved_models(Path(out)) if config.save_model else [])


def train_dynamic_to_folder(model: str, config, out: Path | str, task: str | None = None,
                            calibration: CalibrationSpec | None = None, *,
                            device: DeviceName = "cpu", dtype: ModelDtype = "auto"):
    """Dynamic Sparsification: rank units, train across widths and save a sliceable model to `out`.

    An encoder trains on `task` (bible-genre when None); a causal LM distils on the calibration
    text, whose windows `config.seed` chooses. The model trains in `dtype` on `device`; the saved
    weights keep that dtype. Returns the `DynamicResult`.
    """
    place, dtype = resolve(device, dtype)
    from babelprune.data.tasks import get_task
    from babelprune.finetune.dynamic import train_dynamic

    calibration = (calibration or CalibrationSpec()).model_copy(update={"seed": config.seed})
    check_sources(model=model)
    _check_calibration_sources(calibration)
    if task is not None:
        get_task(task)
    advice = "lower batch_size or max_length in a --config file (a language model: --seq-len)"
    with out_of_memory(f"training {model} across widths", lambda where: advice):
        loaded = load_model(model, dtype, place)
        if loaded.kind == "encoder":
            result = train_dynamic(loaded, config, task=get_task(task or "bible-genre"))
        else:
            result = train_dynamic(loaded, config, calibration=_calibrate_spec(loaded, calibration))
    result.model.save(Path(out))  # only once training is done
    return result


def slice_to_folder(folder: Path | str, sparsity: float, out: Path | str, *,
                    device: DeviceName = "cpu", dtype: ModelDtype = "auto") -> Path:
    """Cut a model `train-dynamic` wrote to `sparsity` of its block parameters removed, into `out`; returns `out`.

    The model is loaded in `dtype` on `device` and cut there: slicing runs no forward pass, so the
    device only says where the weights are cut, and the dtype is the type the sliced model is saved in.
    """
    from babelprune.choices import check_sparsity
    from babelprune.devices import Placement
    from babelprune.finetune.dynamic import slice_width
    from babelprune.formats.dynamic import read_dynamic_metadata

    place = Placement(*resolve(device, dtype))  # a device this machine lacks is refused before the folder is read
    check_sparsity(sparsity)
    read_dynamic_metadata(Path(folder))  # a folder train-dynamic wrote: checked before any weights are read
    return slice_width(Path(folder), sparsity, Path(out), place)


# ----- shrink: the smallest model that keeps every language within a budget ---------------------


def parse_budget(text: str | float) -> float:
    """A budget of relative bits-per-byte increase: "2%" or 0.02 -> 0.02; refused outside (0, 100%)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise BabelpruneError(f"--budget {raw!r} is not a percentage such as 2% (or a fraction such as 0.02).") from None
    if not 0 < value < 1:
        raise BabelpruneError(f"--budget {raw} is outside (0, 100%); give the relative bits-per-byte increase each language may take, such as 2%.")
    return value


def _folder_identity(loaded: LoadedModel) -> str:
    """What the model is: its spec and, for a folder, a hash of every file's bytes."""
    import hashlib

    digest = hashlib.sha256(loaded.spec.encode("utf-8"))
    if loaded.path is not None and Path(loaded.path).is_dir():
        for file in sorted(path for path in Path(loaded.path).rglob("*") if path.is_file()):
            digest.update(str(file.relative_to(loaded.path)).encode("utf-8"))
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _corpus_identity(corpus: Corpus, languages: Sequence[str]) -> str:
    """The corpus's name and a hash of every segment of the languages (both splits): what trimming, calibration and scoring read."""
    import hashlib

    digest = hashlib.sha256(corpus.name.encode("utf-8"))
    for lang in languages:
        for segment in corpus.segments(lang, "all"):
            digest.update(f"\0{lang}\0{segment.group}\0{segment.text}".encode("utf-8"))
    return f"{corpus.name}:{digest.hexdigest()}"


def segment_scores(loaded: LoadedModel, corpus: Corpus, languages: Sequence[str], segments: int, seq_len: int,
                   batch_size: int = 8, progress: bool = False) -> list[LMScore]:
    """Bits per byte of the first `segments` segments of each language, one window per segment.

    Every model reads the same bytes item by item whatever its tokenizer, so intervals of a difference
    are paired (a segment longer than a window is split by the tokenizer's count and may pair no more).
    """
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    return [_lm_score(corpus, lang, score_windows(loaded.model, windows, pad_id, batch_size))
            for lang, windows in _segment_windows(loaded.tokenizer, corpus, languages, segments, seq_len)]


def _segment_windows(tokenizer, corpus: Corpus, languages: Sequence[str], segments: int, seq_len: int):
    """(language, its windows): the first `segments` segments of each language, one window per segment."""
    for lang in languages:
        texts = corpus.texts(lang, "all")[:segments]
        yield lang, [window for text in texts for window in make_windows(tokenizer, [text], seq_len)]


def gguf_segment_scores(gguf: Path | str, tokenizer_folder: Path | str, corpus: Corpus, languages: Sequence[str],
                        segments: int, seq_len: int) -> list[LMScore]:
    """`segment_scores` of a GGUF file in llama.cpp: the same windows and token ids (from the HF folder the file
    was written from), each read from an empty context, so a GGUF's scores pair with a torch model's item by item."""
    from transformers import AutoTokenizer

    from babelprune.evaluate.llama_cpp import LlamaCppRuntime, score_windows_with

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder), trust_remote_code=False)
    runtime = LlamaCppRuntime(gguf, n_ctx=seq_len)
    try:
        return [_lm_score(corpus, lang, score_windows_with(runtime, windows))
                for lang, windows in _segment_windows(tokenizer, corpus, languages, segments, seq_len)]
    finally:
        runtime.close()


def _gguf_scorer():
    """How a quantized candidate's GGUF is scored: `gguf_segment_scores`, on the windows torch scores."""
    return gguf_segment_scores


def llama_cpp_ready() -> bool:
    """Whether llama-cpp-python is installed and can quantize and run a GGUF file here."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return False
    try:
        from babelprune.formats.gguf_quant import llama_cpp_bindings

        llama_cpp_bindings()
    except BabelpruneError:
        return False
    return True


def _default_quants(without: Sequence[str]) -> tuple[str, ...]:
    """The quantizations searched when none are named: Q8_0 and Q4_K_M too where llama.cpp can both write and score a GGUF."""
    return (*without, "Q8_0", "Q4_K_M") if llama_cpp_ready() else tuple(without)


def shrink_to_folder(model: str, languages: Sequence[str], budget: float | str, out: Path | str, *,
                     corpus: str = "bible", goal: ShrinkGoal = "size", trims: Sequence[str] | None = None,
                     widths: Sequence[str] | None = None, quants: Sequence[str] | None = None,
                     trials: int | None = None, seed: int = 0,
                     segments: int = 40, seq_len: int = 256, batch_size: int = 8, importance: str = "gradient",
                     calibration: CalibrationSpec | None = None, store: Path | str | None = None,
                     structured_options: dict | None = None, write_page=None, progress: bool = True):
    """Search trims, structured widths and GGUF quantizations for the smallest model within `budget`; save it to `out`.

    `trims` ("none", "N" for min_count N, "N:R" adding keep_script_rank R, "N:cK" adding keep_common K), `widths` ("none", "ffn=0.1",
    "heads+ffn=0.2") and `quants` ("none", "Q8_0"...) are the lists combined (`shrink.SearchSpace`'s
    defaults when None; the quantizations default to none, plus Q8_0 and Q4_K_M where llama.cpp can write
    and score a GGUF); `trials` below the number of combinations samples them with TPE.
    Every language must keep the upper end of the 95% paired interval of its relative bits-per-byte increase
    over the dense model at or below `budget` ("2%" or 0.02) on the dev half of the corpus's evaluation
    split (`babelprune.shrink`). The chosen candidate is confirmed on the test half. `out` receives the
    chosen model's folder (`out/model`; its GGUF as `out/model.gguf` when quantized), `shrink.json` (every
    candidate) and, with `write_page(record, folder)`, the page it writes; all inside a temporary folder
    renamed at the end. Scores go to `store` (default `<out>.shrink.sqlite`), so a search started again with
    the same settings scores nothing twice. Every refusal comes before any model is loaded; when no candidate
    passes, nothing is written to `out` and the sentence names the closest candidate and what it missed by.
    `structured_options`: more `StructuredConfig` fields every structured candidate is pruned with (such as
    gqa or ranking); they are part of the store's key.
    Returns the `shrink.ShrinkRecord` written as shrink.json.
    """
    import shutil
    import tempfile
    from typing import get_args

    from babelprune.cache import atomic_dir
    from babelprune.choices import StructuredUnit
    from babelprune.data.corpus import HeldOutHalf
    from babelprune.outputs import STORE_SUFFIXES, check_output_file, check_output_folder
    from babelprune.prune.structured.methods import IMPORTANCES
    from babelprune.records.eval import now
    from babelprune.records.intervals import MIN_ITEMS
    from babelprune.shrink import (
        Candidate, ScoreStore, SearchSpace, ShrinkRecord, ShrinkSettings, check_languages, choose, front_numbers,
        no_candidate_passed, search,
    )

    # ----- every check before any model is loaded
    budget = parse_budget(budget)
    if goal not in ("size", "speed"):
        raise BabelpruneError(f"--goal {goal!r} is not one of: size, speed.")
    out = check_output_folder(out, "--out")
    store = Path(store) if store is not None else out.parent / f"{out.name}.shrink.sqlite"
    check_output_file(store, "--store", STORE_SUFFIXES, reuse=True)
    if segments < MIN_ITEMS:
        raise BabelpruneError(f"--segments {segments} gives no interval; score at least {MIN_ITEMS} segments per language.")
    if trials is not None and trials < 1:
        raise BabelpruneError("--trials must be at least 1.")
    if importance not in IMPORTANCES:
        raise BabelpruneError(f"--importance {importance!r} is not one of: {', '.join(IMPORTANCES)}.")
    defaults = SearchSpace()
    space = SearchSpace(trims=tuple(trims if trims is not None else defaults.trims),
                        widths=tuple(widths if widths is not None else defaults.widths),
                        quants=tuple(quants if quants is not None else _default_quants(defaults.quants)))
    candidates = space.candidates(get_args(StructuredUnit))
    gguf_scorer = None
    if any(candidate.quant for candidate in candidates):
        from babelprune.formats.gguf_quant import check_quant, llama_cpp_bindings

        for candidate in candidates:
            if candidate.quant:
                check_quant(candidate.quant)
        llama_cpp_bindings()  # one sentence naming the llama extra when llama-cpp-python is missing
        if goal == "speed":
            raise BabelpruneError("--goal speed times the model in PyTorch, not a GGUF in llama.cpp; leave out --quants or use --goal size.")
        gguf_scorer = _gguf_scorer()
    check_sources(model=model)
    text = get_corpus(corpus)
    languages = text.check_languages(list(languages))
    if len(set(languages)) != len(languages):
        raise BabelpruneError("--langs names a language twice; give each once.")
    halves = {half: HeldOutHalf(text, half) for half in ("dev", "test")}
    for half, held in halves.items():
        for lang in languages:
            found = len(held.segments(lang, "all"))
            if found < MIN_ITEMS:
                raise BabelpruneError(f"Corpus '{text.name}' has {found} segments of {lang!r} in the {half} half of its "
                                      f"evaluation split; an interval needs {MIN_ITEMS}: choose another corpus or language.")
    calibration = (calibration or CalibrationSpec()).model_copy(update={"corpus": corpus, "languages": list(languages)})
    structured_options = dict(structured_options or {})
    if any(candidate.structured for candidate in candidates):
        # The importance's and the options' own checks, before any work (units and sparsity come from each candidate).
        from pydantic import ValidationError

        from babelprune.errors import describe_validation_error

        try:
            StructuredConfig(**{**structured_options, "units": ["ffn"], "importance": importance, "sparsity": 0.5})
        except ValidationError as error:
            raise BabelpruneError(describe_validation_error(error)) from None

    # ----- the search
    bench = _ShrinkBench(model, load_model(model), text, halves, languages, segments, seq_len, batch_size, goal, importance,
                         calibration, gguf_scorer, structured_options)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.shrink-work-", dir=out.absolute().parent))
    try:
        with ScoreStore(store) as results:
            def scored(candidate: Candidate, half: str):
                return bench.scored(candidate, half, results, work)

            dense_dev = scored(Candidate(), "dev")
            judged, sampler = search(candidates, scored, dense_dev.scores, budget, goal, trials, seed, progress)
            chosen = choose(judged, goal)
            if chosen is None:
                raise no_candidate_passed(judged, budget, store)
            # The test half is read once, for the chosen candidate only (and stored like the dev scores).
            test = check_languages(scored(Candidate(), "test").scores, scored(chosen.candidate, "test").scores, budget)
        settings = ShrinkSettings(model=model, model_identity=bench.identity, corpus=corpus, languages=list(languages),
                                  budget=budget, goal=goal, segments=bench.counts["dev"], seq_len=seq_len, trials=trials,
                                  seed=seed, importance=importance, calibration=calibration.model_dump(mode="json"))
        record = ShrinkRecord(settings=settings, space=space, sampler=sampler, dense_bytes=dense_dev.bytes,
                              dense_latency_ms=dense_dev.latency_ms, dense_dev=dense_dev.scores, candidates=judged,
                              front=front_numbers(judged), chosen=chosen.number, test=test,
                              test_passed=all(check.passed for check in test), finished=now())
        with atomic_dir(out) as folder:
            path = bench.place(chosen.candidate, work, folder / "model")  # the same settings build the same model
            if path.is_file():  # the GGUF is served beside the HF folder it was made from
                path.rename(folder / "model.gguf")
            (folder / "shrink.json").write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
            if write_page is not None:
                write_page(record, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record


class _ShrinkBench:
    """How `shrink_to_folder` builds, measures and scores one candidate, and what keys its scores in the store."""

    def __init__(self, model: str, dense: LoadedModel, corpus: Corpus, halves: dict, languages: list[str], segments: int,
                 seq_len: int, batch_size: int, goal: str, importance: str, calibration: CalibrationSpec, gguf_scorer,
                 structured_options: dict) -> None:
        self.model, self.dense, self.corpus, self.halves, self.languages = model, dense, corpus, halves, languages
        self.seq_len, self.batch_size, self.goal, self.importance = seq_len, batch_size, goal, importance
        self.calibration, self.gguf_scorer, self.structured_options = calibration, gguf_scorer, structured_options
        self.identity = _folder_identity(dense)
        self.corpus_identity = _corpus_identity(corpus, languages)
        self.counts = {half: min(segments, *(len(held.segments(lang, "all")) for lang in languages)) for half, held in halves.items()}
        self.kept = None  # (candidate, its built path, its folder): the last candidate built (`built`)

    def fields(self, candidate, half: str) -> dict:
        """Everything that decides a candidate's scores on a half: the store's key."""
        from babelprune.version import __version__

        decided = {"model": self.identity, "candidate": candidate.model_dump(mode="json"), "languages": list(self.languages),
                   "corpus": self.corpus_identity, "half": half, "segments": self.counts[half], "seq_len": self.seq_len,
                   "goal": self.goal, "babelprune": __version__}
        if candidate.structured:
            decided |= {"importance": self.importance, "calibration": self.calibration.model_dump(mode="json"),
                        "structured": self.structured_config(candidate).to_dict()}
        if candidate.quant:  # scores stored before GGUF files were read on the torch windows are not these
            decided["gguf_scoring"] = "llama.cpp, one window per segment, the source folder's token ids"
        return decided

    def scored(self, candidate, half: str, store, work: Path):
        """The candidate's scores on `half`: from the store, else built, measured and scored now (then stored)."""
        from babelprune.evaluate.sizes import model_bytes
        from babelprune.shrink import CandidateScores

        decided = self.fields(candidate, half)
        found = store.get(decided)
        if found is not None:
            return found
        if candidate.is_dense:
            scores = CandidateScores(bytes=model_bytes(self.dense)[0], latency_ms=self.latency(self.dense),
                                     scores=self.score_loaded(self.dense, half))
        else:
            try:
                with out_of_memory(f"shrinking {self.model}", lambda where: "lower --seq-len or --samples"):
                    scores = self.score_built(self.built(candidate, work), half)
            except BabelpruneError as error:  # a setting this model cannot take: recorded with the candidate, not fatal
                self.discard()
                scores = CandidateScores(bytes=0, scores=[], error=str(error))
        store.put(decided, scores)
        return scores

    def built(self, candidate, work: Path) -> Path:
        """The candidate's model built in `work` (its folder, or its GGUF file inside it).

        The last candidate built stays until another is built, so the chosen one, scored on the dev half,
        then on the test half, then written out, is usually built once (the same settings build the same model).
        """
        import shutil
        import tempfile

        if self.kept is not None and self.kept[0] == candidate:
            return self.kept[1]
        self.discard()
        folder = Path(tempfile.mkdtemp(dir=work)) / "model"
        try:
            path = self.build(candidate, folder)
        except BaseException:
            shutil.rmtree(folder.parent, ignore_errors=True)
            raise
        self.kept = (candidate, path, folder)
        return path

    def discard(self) -> None:
        """Delete the kept build."""
        import shutil

        if self.kept is not None:
            shutil.rmtree(self.kept[2].parent, ignore_errors=True)
            self.kept = None

    def place(self, candidate, work: Path, folder: Path) -> Path:
        """Move the candidate's model (built now unless it is the kept one) to the new `folder`; returns its path there."""
        import shutil

        path = self.built(candidate, work)
        source = self.kept[2]
        shutil.move(str(source), str(folder))  # beside `out`, like `work`: a rename
        self.discard()
        return folder / path.relative_to(source) if path != source else folder

    def build(self, candidate, folder: Path) -> Path:
        """Write the candidate's HF folder into the new `folder`; returns its GGUF file when quantized, else the folder."""
        from babelprune.formats.structured import save_structured

        loaded = load_model(self.model)
        if candidate.trimmed:  # before structured pruning, which trimming refuses to follow
            trim_vocabulary(loaded, self.corpus, self.languages, min_count=candidate.min_count,
                            keep_script_rank=candidate.keep_script_rank, keep_common=candidate.keep_common)
        if candidate.structured:
            config = self.structured_config(candidate)
            vocabulary = (loaded.pruning or {}).get("vocabulary")
            windows = _calibrate_spec(loaded, self.calibration) if config.needs_calibration else None
            result = prune_structured(loaded, config, windows, progress=False)
            metadata = result.metadata() | {"parent": self.model, "config": config.to_dict()}
            save_structured(loaded.model, loaded.tokenizer, folder, metadata | ({"vocabulary": vocabulary} if vocabulary else {}))
        elif candidate.trimmed:
            save_trimmed(loaded, folder)
        else:
            folder.mkdir(parents=True)
            loaded.model.save_pretrained(folder)
            loaded.tokenizer.save_pretrained(folder)
        if candidate.quant:
            from babelprune.formats.gguf_quant import export_quantized

            gguf = folder / "model.gguf"
            export_quantized(load_model(str(folder)), gguf, candidate.quant)
            return gguf
        return folder

    def structured_config(self, candidate) -> StructuredConfig:
        # A GGUF file holds one width per tensor kind, so a quantized candidate ranks units within each layer
        # (every block keeps the same width) unless the options say otherwise; the global ranking's uneven
        # widths would be refused by the export.
        per_gguf = {"ranking": "per-layer"} if candidate.quant else {}
        return StructuredConfig(**{**per_gguf, **self.structured_options, "units": list(candidate.units),
                                   "importance": self.importance, "sparsity": candidate.sparsity})

    def score_loaded(self, loaded: LoadedModel, half: str) -> list[LMScore]:
        return segment_scores(loaded, self.halves[half], self.languages, self.counts[half], self.seq_len, self.batch_size)

    def latency(self, loaded: LoadedModel) -> float | None:
        """Milliseconds for one sequence (goal speed); None for goal size, which never times anything."""
        if self.goal != "speed":
            return None
        from babelprune.evaluate.speed import measure_speeds

        return measure_speeds([loaded], seq_len=min(self.seq_len, 128), batch_size=1, runs=5, warmup=1)[0].latency_batch1_ms

    def score_built(self, path: Path, half: str):
        """Bytes as served and scores of a built candidate: its HF folder in PyTorch, or its GGUF in llama.cpp."""
        from babelprune.evaluate.sizes import weight_files
        from babelprune.shrink import CandidateScores

        if path.is_file():
            return CandidateScores(bytes=path.stat().st_size, scores=self.score_gguf(path, half))
        loaded = load_model(str(path))
        return CandidateScores(bytes=sum(file.stat().st_size for file in weight_files(path)),
                               scores=self.score_loaded(loaded, half), latency_ms=self.latency(loaded))

    def score_gguf(self, path: Path, half: str) -> list[LMScore]:
        """The half's segments scored in llama.cpp on the windows the torch models read (so intervals stay paired);
        the tokenizer is the HF folder the GGUF was written from."""
        return self.gguf_scorer(path, path.parent, self.halves[half], self.languages, self.counts[half], self.seq_len)
