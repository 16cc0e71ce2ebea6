"""Per-language perplexity and bits per byte for causal LMs.

The model's body runs once per batch of windows; the LM head then runs only
on real (non-padding) target positions, a chunk of rows at a time. With a
262k-token vocabulary the head dominates the cost, and materialising the
full (B, T, V) logits would take gigabytes, so skipping padding and chunking
the head makes evaluation at least as fast as a plain forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from babelprune.devices import has_float64
from babelprune.evaluate.windows import Window, segment_sums

# Rows of hidden states sent through the LM head at once: (HEAD_CHUNK, V) logits.
HEAD_CHUNK = 512


@dataclass(frozen=True)
class NLLTotals:
    nll_nats: float
    n_tokens: int
    n_bytes: int
    n_windows: int
    # Per window, in the order the windows were given: what confidence intervals resample.
    window_nll: tuple[float, ...] = ()
    window_bytes: tuple[int, ...] = ()
    # Per segment of text (verse, paragraph), in order: what pairs models whose tokenizers cut different windows.
    segment_nll: tuple[float, ...] = ()
    segment_bytes: tuple[int, ...] = ()


def pad_batch(windows: list[Window], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad windows into ids (B, T) and attention mask (B, T), built on the CPU and sent to `device` at once."""
    longest = max(len(w.ids) for w in windows)
    ids = torch.full((len(windows), longest), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(windows), longest), dtype=torch.long, device="cpu")
    for row, window in enumerate(windows):
        ids[row, : len(window.ids)] = torch.tensor(window.ids, dtype=torch.long, device="cpu")
        mask[row, : len(window.ids)] = 1
    return ids.to(device), mask.to(device)


def head_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """LM head on hidden rows (N, H) -> logits (N, V), with the model's logit scale or soft-capping if it has one."""
    logits = model.get_output_embeddings()(hidden)
    # Cohere (Aya) multiplies its logits by a constant; the model object holds the value its forward uses.
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def batch_nll(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood (nats) of each row's non-first, non-padding tokens: shape (B,)."""
    return batch_token_nll(model, ids, mask).sum(dim=1)


def batch_token_nll(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats) of every target, 0 at padding: shape (B, T-1)."""
    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
    return hidden_token_nll(model, hidden, ids, mask)


def hidden_nll(model: PreTrainedModel, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`batch_nll` from the body's output hidden states (B, T, H); shape (B,)."""
    return hidden_token_nll(model, hidden, ids, mask).sum(dim=1)


def hidden_token_nll(model: PreTrainedModel, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`batch_token_nll` from the body's output hidden states (B, T, H): the LM head a chunk of rows at a time."""
    # Position t predicts token t+1; keep pairs where the target is a real token.
    valid = mask[:, 1:].bool()  # (B, T-1)
    source = hidden[:, :-1][valid]  # (N, H)
    targets = ids[:, 1:][valid]  # (N,)
    # Sums of many token losses: float64 where the device has it (MPS does not).
    per_target = torch.zeros(valid.shape, dtype=torch.float64 if has_float64(hidden.device) else torch.float32, device=hidden.device)
    losses = torch.empty(targets.shape[0], dtype=per_target.dtype, device=hidden.device)  # (N,)
    for start in range(0, source.shape[0], HEAD_CHUNK):
        logits = head_logits(model, source[start : start + HEAD_CHUNK]).float()
        losses[start : start + HEAD_CHUNK] = token_nll(logits, targets[start : start + HEAD_CHUNK])
    per_target[valid] = losses
    return per_target


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logsumexp(logits_i) - logits_i[target_i] for fresh logits (N, V), which it overwrites: shape (N,).

    Equal to F.cross_entropy(..., reduction="none"), but the exponentials are
    taken in place, so no second (N, V) tensor is written: about a third
    faster on a 262k-token vocabulary.
    """
    target_logits = logits.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
    peak = logits.amax(dim=1, keepdim=True)  # (N, 1), for a stable exp
    log_norm = logits.sub_(peak).exp_().sum(dim=1).log_() + peak.squeeze(1)  # (N,)
    return log_norm - target_logits


def score_windows(
    model: PreTrainedModel,
    windows: list[Window],
    pad_id: int,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> NLLTotals:
    """NLL of every window and in total, batched by similar length to limit padding."""
    per_target: list[list[float]] = [[] for _ in windows]
    device = model.get_input_embeddings().weight.device  # where the ids are read
    with torch.inference_mode():
        for rows in length_batches(windows, batch_size):
            ids, mask = pad_batch([windows[i] for i in rows], pad_id, device)
            for row, nll in zip(rows, batch_token_nll(model, ids, mask).tolist()):
                per_target[row] = nll[: windows[row].n_targets]
            if on_batch is not None:
                on_batch(len(rows))
    return window_totals(windows, per_target)


def length_batches(windows: list[Window], batch_size: int) -> list[list[int]]:
    """The windows' indices in batches of `batch_size`, shortest windows first, so a batch pads little."""
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def window_totals(windows: list[Window], per_target: list[list[float]]) -> NLLTotals:
    """The totals of `windows` whose targets' NLLs (nats) are `per_target[w]`, in the windows' order (whatever computed them)."""
    per_window = [float(sum(values)) for values in per_target]
    segment_nll, segment_bytes = segment_sums(windows, per_target)
    return NLLTotals(
        nll_nats=sum(per_window),
        n_tokens=sum(w.n_targets for w in windows),
        n_bytes=sum(w.n_bytes for w in windows),
        n_windows=len(windows),
        window_nll=tuple(per_window),
        window_bytes=tuple(w.n_bytes for w in windows),
        segment_nll=tuple(segment_nll),
        segment_bytes=tuple(segment_bytes),
    )
