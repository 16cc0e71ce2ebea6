"""Task heads: encoding of texts, pairs and tagged words, pooling, loss and predictions."""

from __future__ import annotations

import math

import pytest
import torch

from babelprune.data.tasks import Example
from babelprune.errors import BabelpruneError
from babelprune.finetune.heads import (
    Batch,
    TaskHead,
    encode,
    fit_softmax_regression,
    head_features,
    init_head_by_probe,
    mean_pool,
    predict,
)
from tests.tiny_models import tiny_model
from tests.tiny_tokenizer import char_tokenizer

# char_tokenizer ids: <pad>=0, a=4, b=5, c=6, d=7, ..., space=30.


def test_encode_sequences_pads_and_keeps_labels():
    examples = [Example("k1", "en", text="ab", label=0), Example("k2", "en", text="abc", label=1)]
    batch = encode(char_tokenizer(), examples, "classification")
    assert batch.inputs["input_ids"].tolist() == [[4, 5, 0], [4, 5, 6]]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.labels.tolist() == [0, 1]


def test_encode_prefix_goes_before_the_text():
    batch = encode(char_tokenizer(), [Example("k", "en", text="b", label=0)], "classification", prefix="a")
    assert batch.inputs["input_ids"].tolist() == [[4, 5]]


def test_encode_pairs_uses_both_texts():
    examples = [Example("k", "en", text="ab", text_pair="cd", label=2)]
    batch = encode(char_tokenizer(), examples, "pair-classification")
    assert batch.inputs["input_ids"].tolist() == [[4, 5, 6, 7]]
    assert batch.labels.tolist() == [2]


def test_encode_tokens_labels_first_subtoken_of_each_word():
    examples = [
        Example("k1", "en", tokens=("ab", "c"), tags=(1, 2)),
        Example("k2", "en", tokens=("d",), tags=(3,)),
    ]
    batch = encode(char_tokenizer(), examples, "token-classification")
    # "ab" -> a, b (b is a later sub-token: -100); "c" -> c.
    assert batch.inputs["input_ids"].tolist() == [[4, 5, 6], [7, 0, 0]]
    assert batch.labels.tolist() == [[1, -100, 2], [3, -100, -100]]
    assert batch.word_positions == [[0, 2], [0]]


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_loss_ignores_unlabelled_positions():
    # Row 1: logits (0, 0), label 0 -> ln 2. Row 2 would cost ~10 but is labelled -100.
    logits = torch.tensor([[[0.0, 0.0], [0.0, 10.0]]])  # (1, 2, 2)
    labels = torch.tensor([[0, -100]])
    assert TaskHead.loss(logits, labels).item() == pytest.approx(math.log(2))


def test_token_predictions_are_read_at_word_starts():
    head = TaskHead(tiny_model("bert"), "token-classification", 3)
    logits = torch.tensor([[[0.0, 0.0, 9.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]]])  # argmax 2, 0, 1
    batch = Batch(inputs={"input_ids": torch.zeros(1, 3, dtype=torch.long)}, labels=None, word_positions=[[0, 2, -1]])
    # Word 0 starts at 0 (label 2), word 1 at 2 (label 1), word 2 was cut off (label 0).
    assert head.predictions(logits, batch) == [[2, 1, 0]]


@pytest.mark.parametrize("kind", ["classification", "pair-classification"])
def test_sequence_head_shapes_and_pooling(kind):
    torch.manual_seed(0)
    examples = [Example("k1", "en", text="abc", text_pair="d", label=0), Example("k2", "en", text="b", text_pair="e", label=1)]
    batch = encode(char_tokenizer(), examples, kind)
    mean_head = TaskHead(tiny_model("bert"), kind, 4, pooling="mean", dropout=0.0).eval()
    cls_head = TaskHead(tiny_model("bert"), kind, 4, pooling="cls", dropout=0.0).eval()
    cls_head.classifier.load_state_dict(mean_head.classifier.state_dict())
    with torch.no_grad():
        mean_logits, cls_logits = mean_head(batch), cls_head(batch)
    assert mean_logits.shape == (2, 4)
    assert not torch.allclose(mean_logits, cls_logits)


def test_token_head_gives_logits_per_subtoken():
    batch = encode(char_tokenizer(), [Example("k", "en", tokens=("ab", "c"), tags=(0, 1))], "token-classification")
    head = TaskHead(tiny_model("bert"), "token-classification", 7).eval()
    assert head(batch).shape == (1, 3, 7)


def test_predict_keeps_the_input_order():
    torch.manual_seed(0)
    head = TaskHead(tiny_model("bert"), "classification", 5, dropout=0.0).eval()
    tokenizer = char_tokenizer()
    examples = [Example(f"k{i}", "en", text=text, label=0) for i, text in enumerate(["a", "bcdefg", "hij", "klmnopqrs", "t"])]
    one_by_one = []
    with torch.no_grad():
        for example in examples:
            batch = encode(tokenizer, [example], "classification")
            one_by_one.append(int(head(batch).argmax()))
    assert predict(head, tokenizer, examples, batch_size=2) == one_by_one


def test_head_errors():
    with pytest.raises(BabelpruneError, match="no fine-tuning head"):
        TaskHead(tiny_model("bert"), "retrieval", 3)  # type: ignore[arg-type]
    with pytest.raises(BabelpruneError, match="at least 2 labels"):
        TaskHead(tiny_model("bert"), "classification", 1)
    with pytest.raises(BabelpruneError, match="pooling"):
        TaskHead(tiny_model("bert"), "classification", 3, pooling="max")  # type: ignore[arg-type]


def test_softmax_regression_separates_a_hand_case():
    # Class 0 lies along +x, class 1 along -x, class 2 along +y.
    features = torch.tensor([[1.0, 0.0], [2.0, 0.1], [-1.0, 0.0], [-2.0, -0.1], [0.0, 1.0], [0.1, 2.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    weight, bias = fit_softmax_regression(features, labels, 3)
    assert weight.shape == (3, 2) and bias.shape == (3,)
    assert (features @ weight.T + bias).argmax(dim=1).tolist() == [0, 0, 1, 1, 2, 2]


def test_head_features_rows_are_examples_or_labelled_words():
    tokenizer = char_tokenizer()
    sequences = [Example("k1", "en", text="abc", label=1), Example("k2", "en", text="d", label=0)]
    features, labels = head_features(TaskHead(tiny_model("bert"), "classification", 2), tokenizer, sequences)
    assert features.shape == (2, 32) and labels.tolist() == [1, 0]
    words = [Example("k", "en", tokens=("ab", "c", "de"), tags=(3, 0, 4))]
    features, labels = head_features(TaskHead(tiny_model("bert"), "token-classification", 5), tokenizer, words)
    assert features.shape == (3, 32) and labels.tolist() == [3, 0, 4]  # one row per word, not per sub-token


def test_probe_initialisation_fits_the_training_examples():
    torch.manual_seed(0)
    head = TaskHead(tiny_model("bert"), "classification", 2, dropout=0.0)
    tokenizer = char_tokenizer()
    examples = [Example(f"k{i}", "en", text=("aaaa" if i % 2 else "zzzz"), label=i % 2) for i in range(6)]
    init_head_by_probe(head, tokenizer, examples)
    assert predict(head, tokenizer, examples) == [0, 1, 0, 1, 0, 1]
