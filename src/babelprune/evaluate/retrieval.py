"""Encoder evaluation: retrieve the aligned segment of another language (like Tatoeba/BUCC in XTREME).

For each target language, the queries are English segments and the
candidates are the target language's segments with the same alignment keys;
a query is correct when its nearest candidate (cosine similarity of
mean-pooled embeddings) is its own translation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from babelprune.data.corpus import Corpus
from babelprune.errors import BabelpruneError
from babelprune.models.base import LoadedModel
from babelprune.records.eval import RetrievalScore

SOURCE_LANGUAGE = "en"
# e5 models expect a task prefix; "query: " is their convention for symmetric tasks.
QUERY_PREFIX = "query: "


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden states (B, T, H) over real tokens (attention_mask (B, T) == 1): (B, H)."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def mean_pooled_embeddings(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    prefix: str = QUERY_PREFIX,
    batch_size: int = 32,
    max_length: int | None = None,
) -> torch.Tensor:
    """L2-normalised mean of the last hidden states over real tokens: (N, H), float32.

    Texts longer than the model's window (512 tokens for e5-small) are
    truncated. The model runs in eval mode; its previous mode is restored.
    """
    limit = max_length or min(tokenizer.model_max_length, model.config.max_position_embeddings)
    device = next(model.parameters()).device  # each batch is moved where the weights are
    rows: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    [prefix + text for text in texts[start : start + batch_size]],
                    padding=True, truncation=True, max_length=limit, return_tensors="pt",
                )
                ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                rows.append(mean_pool(hidden.float(), mask))  # (B, H)
    finally:
        model.train(was_training)
    if not rows:
        return torch.empty(0, model.config.hidden_size, device=device)
    return F.normalize(torch.cat(rows), dim=-1)


def top1_hits(queries: torch.Tensor, candidates: torch.Tensor) -> list[bool]:
    """For each query (N, H): whether its own row of candidates (N, H) is its nearest neighbour."""
    nearest = (queries @ candidates.T).argmax(dim=1)  # (N,)
    return (nearest == torch.arange(len(queries), device=nearest.device)).tolist()


def top1_correct(queries: torch.Tensor, candidates: torch.Tensor) -> int:
    """How many queries (N, H) have their own row of candidates (N, H) as nearest neighbour."""
    return sum(top1_hits(queries, candidates))


def retrieval_scores(
    loaded: LoadedModel,
    corpus: Corpus,
    languages: list[str],
    split: str,
    max_queries: int = 200,
    batch_size: int = 32,
    progress: bool = True,
    view: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> list[RetrievalScore]:
    """English-to-X top-1 retrieval accuracy per target language.

    `view(lang)` is a context in which the model is the one for `lang` (its own
    mask in the per-language setting); queries are embedded in English's view.
    """
    view = view or (lambda lang: contextlib.nullcontext())
    if SOURCE_LANGUAGE not in corpus.languages():
        raise BabelpruneError(f"Retrieval needs English queries, but corpus '{corpus.name}' has no 'en'; use an aligned corpus such as bible.")
    source = {s.key: s.text for s in corpus.segments(SOURCE_LANGUAGE, split)}  # type: ignore[arg-type]
    targets = [lang for lang in languages if lang != SOURCE_LANGUAGE]
    if not targets:
        raise BabelpruneError("Retrieval evaluates English-to-X: give at least one language other than 'en'.")
    scores = []
    for lang in targets:
        target = {s.key: s.text for s in corpus.segments(lang, split)}  # type: ignore[arg-type]
        keys = sorted(source.keys() & target.keys())[:max_queries]
        if not keys:
            raise BabelpruneError(f"Corpus '{corpus.name}' has no segment of '{lang}' aligned with English in the '{split}' split.")
        with view(SOURCE_LANGUAGE):
            queries = mean_pooled_embeddings(loaded.model, loaded.tokenizer, [source[k] for k in keys], batch_size=batch_size)
        with view(lang):
            candidates = mean_pooled_embeddings(loaded.model, loaded.tokenizer, [target[k] for k in keys], batch_size=batch_size)
        meta = corpus.language(lang)
        hits = top1_hits(queries, candidates)
        scores.append(
            RetrievalScore(
                language=lang, name=meta.name, script=meta.script, resource=meta.resource,
                source_language=SOURCE_LANGUAGE, n_queries=len(keys), n_correct=sum(hits), query_hits=hits,
            )
        )
    return scores
