"""Task heads on a pretrained encoder: encoder -> dropout -> one linear layer.

- Sequence classification (``classification``) and pair classification
  (``pair-classification``) pool the last hidden states into one vector per
  example. The default pooling is the **mean over real tokens**, because the
  e5 encoders were trained to produce mean-pooled sentence embeddings (their
  first token was never trained as a summary); ``cls`` pooling, the first
  token, is available for BERT-style models trained with it. Pairs are
  encoded with the tokenizer's own pair format (``<s> a </s></s> b </s>`` for
  XLM-R vocabularies, ``[CLS] a [SEP] b [SEP]`` for BERT).
- Token classification (``token-classification``) gives logits per sub-token;
  the first sub-token of each word carries the word's tag and every other
  position (special tokens, later sub-tokens, padding) gets the label -100,
  which the loss ignores. Predictions are read back at the same positions.

A `prefix` is prepended to the (first) text of sequence tasks: e5 models
expect ``"query: "`` before every input.

`init_head_by_probe` starts the classifier as a linear probe fitted on the
frozen encoder's features (the first stage of LP-FT, Kumar et al. 2022):
a random classifier needs far more steps than a CPU budget allows before
its gradients say anything useful to the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from babelprune.data.tasks import Example, TaskKind
from babelprune.errors import BabelpruneError
from babelprune.evaluate.retrieval import mean_pool

Pooling = Literal["mean", "cls"]
IGNORE_INDEX = -100
HEAD_KINDS: tuple[str, ...] = ("classification", "pair-classification", "token-classification")
_ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Batch:
    """Encoded examples: encoder inputs (B, T), labels ((B,) or (B, T)) and, for tokens, word positions."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    word_positions: list[list[int]] | None = None  # token tasks: sub-token index of each word's start

    def __len__(self) -> int:
        return int(self.inputs["input_ids"].shape[0])


def check_head_kind(kind: str) -> str:
    if kind not in HEAD_KINDS:
        raise BabelpruneError(
            f"Task kind '{kind}' has no fine-tuning head; fine-tune one of: {', '.join(HEAD_KINDS)}."
        )
    return kind


def encode(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    kind: TaskKind,
    max_length: int = 128,
    prefix: str = "",
    with_labels: bool = True,
    device: torch.device | None = None,
) -> Batch:
    """Tokenize a batch of examples for a head of `kind`, padded to the longest one, its tensors on `device`.

    The tokenizer returns lists and the tensors are made here, on `device` directly: a tensor made
    without one would land on torch's default device, which need not be the model's.
    """
    check_head_kind(kind)
    if kind == "token-classification":
        return _encode_tokens(tokenizer, examples, max_length, with_labels, device)
    texts = [prefix + (example.text or "") for example in examples]
    pairs = [example.text_pair or "" for example in examples] if kind == "pair-classification" else None
    encoded = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length)
    labels = torch.tensor([example.label for example in examples], device=device) if with_labels else None
    return Batch(inputs=_input_tensors(encoded, device), labels=labels)


def _input_tensors(encoded, device: torch.device | None) -> dict[str, torch.Tensor]:
    """The encoder's inputs of a padded tokenizer output, as int64 tensors (B, T) on `device`."""
    return {name: torch.tensor(encoded[name], dtype=torch.long, device=device) for name in _ENCODER_INPUTS if name in encoded}


def _encode_tokens(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int, with_labels: bool,
    device: torch.device | None = None,
) -> Batch:
    if not getattr(tokenizer, "is_fast", False):
        raise BabelpruneError(
            "Token classification needs a fast tokenizer (one that maps sub-tokens to words); "
            "load the model with its tokenizer.json."
        )
    words = [list(example.tokens or ()) for example in examples]
    encoded = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, max_length=max_length)
    # Labels are filled in as lists and made a tensor once: one copy to the device, not one per word.
    labels = [[IGNORE_INDEX] * len(ids) for ids in encoded["input_ids"]]  # (B, T)
    positions: list[list[int]] = []
    for row, example in enumerate(examples):
        starts: dict[int, int] = {}  # word index -> its first sub-token
        for position, word in enumerate(encoded.word_ids(row)):
            if word is not None and word not in starts:
                starts[word] = position
        # Words cut off by truncation (or made of no sub-token) have no position: -1.
        positions.append([starts.get(word, -1) for word in range(len(words[row]))])
        if with_labels:
            for word, tag in enumerate(example.tags or ()):
                if word in starts:
                    labels[row][starts[word]] = tag
    label_tensor = torch.tensor(labels, dtype=torch.long, device=device) if with_labels else None
    return Batch(inputs=_input_tensors(encoded, device), labels=label_tensor, word_positions=positions)


class TaskHead(nn.Module):
    """An encoder with dropout and a linear classifier for one task kind."""

    def __init__(
        self, encoder: nn.Module, kind: TaskKind, num_labels: int, pooling: Pooling = "mean", dropout: float = 0.1
    ) -> None:
        super().__init__()
        check_head_kind(kind)
        if num_labels < 2:
            raise BabelpruneError(f"A classifier needs at least 2 labels, not {num_labels}; check the task's labels.")
        if pooling not in ("mean", "cls"):
            raise BabelpruneError(f"Unknown pooling '{pooling}'; use 'mean' or 'cls'.")
        self.encoder = encoder
        self.kind = kind
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        # Where the encoder's weights are and in their type: the pooled features meet the classifier there.
        place = next(encoder.parameters())
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels, device=place.device, dtype=place.dtype)

    @property
    def device(self) -> torch.device:
        """Where the head's weights are: its batches are made there."""
        return self.classifier.weight.device

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits: (B, num_labels) for sequence tasks, (B, T, num_labels) for token tasks."""
        hidden = self.encoder(**batch.inputs).last_hidden_state  # (B, T, H)
        if self.kind == "token-classification":
            return self.classifier(self.dropout(hidden))
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = mean_pool(hidden, batch.inputs["attention_mask"])
        return self.classifier(self.dropout(pooled))  # (B, num_labels)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over labelled positions (label -100 is ignored)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)

    def predictions(self, logits: torch.Tensor, batch: Batch) -> list[int] | list[list[int]]:
        """Label ids: one per example, or one per word (read at each word's first sub-token).

        A word without a sub-token position (cut off by truncation) gets label 0.
        """
        best = logits.argmax(dim=-1)  # (B,) or (B, T)
        if self.kind != "token-classification":
            return best.tolist()
        assert batch.word_positions is not None
        return [
            [int(best[row, position]) if position >= 0 else 0 for position in positions]
            for row, positions in enumerate(batch.word_positions)
        ]


@torch.inference_mode()
def predict(
    head: TaskHead,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    batch_size: int = 64,
    max_length: int = 128,
    prefix: str = "",
) -> list:
    """Predicted label ids for `examples`, in their order (see `TaskHead.predictions`).

    Examples are batched by length (longest first) so that little padding is
    computed; the predictions are put back in the input order.
    """
    head.eval()
    order = sorted(range(len(examples)), key=lambda i: -_rough_length(examples[i]))
    predicted: list = [None] * len(examples)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        batch = encode(tokenizer, [examples[i] for i in chosen], head.kind, max_length, prefix, with_labels=False, device=head.device)
        for index, value in zip(chosen, head.predictions(head(batch), batch), strict=True):
            predicted[index] = value
    return predicted


def _rough_length(example: Example) -> int:
    if example.tokens is not None:
        return sum(len(token) + 1 for token in example.tokens)
    return len(example.text or "") + len(example.text_pair or "")


# --------------------------------------------------------------------------- linear-probe initialisation


@torch.no_grad()  # not inference_mode: the features are then fitted with autograd
def head_features(
    head: TaskHead, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
    batch_size: int = 32, max_length: int = 128, prefix: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the classifier sees, without dropout: features (N, H) and labels (N,).

    One row per example for sequence tasks (the pooled vector), one per
    labelled word for token tasks (its first sub-token's hidden state).
    """
    head.eval()
    features, labels = [], []
    for start in range(0, len(examples), batch_size):
        batch = encode(tokenizer, examples[start : start + batch_size], head.kind, max_length, prefix, device=head.device)
        hidden = head.encoder(**batch.inputs).last_hidden_state  # (B, T, H)
        assert batch.labels is not None
        if head.kind == "token-classification":
            keep = batch.labels != IGNORE_INDEX  # (B, T)
            features.append(hidden[keep])
            labels.append(batch.labels[keep])
        else:
            pooled = hidden[:, 0] if head.pooling == "cls" else mean_pool(hidden, batch.inputs["attention_mask"])
            features.append(pooled)
            labels.append(batch.labels)
    return torch.cat(features), torch.cat(labels)


def fit_softmax_regression(
    features: torch.Tensor, labels: torch.Tensor, num_labels: int,
    steps: int = 100, lr: float = 1e-2, weight_decay: float = 1e-2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (L, H) and bias (L,) of a softmax classifier fitted by full-batch AdamW from zeros.

    Deterministic (no sampling, zero start). Few steps and weight decay keep
    the classifier from becoming over-confident, which would leave little
    gradient for the fine-tuning that follows.
    """
    features = features.detach().float()
    weight = torch.zeros(num_labels, features.shape[1], device=features.device, requires_grad=True)
    bias = torch.zeros(num_labels, device=features.device, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(features @ weight.T + bias, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return weight.detach(), bias.detach()


def init_head_by_probe(
    head: TaskHead, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
    batch_size: int = 32, max_length: int = 128, prefix: str = "",
) -> None:
    """Set the classifier to a linear probe fitted on the frozen encoder's features (LP-FT's first stage)."""
    features, labels = head_features(head, tokenizer, examples, batch_size, max_length, prefix)
    weight, bias = fit_softmax_regression(features, labels, head.classifier.out_features)
    with torch.no_grad():
        head.classifier.weight.copy_(weight)
        head.classifier.bias.copy_(bias)
