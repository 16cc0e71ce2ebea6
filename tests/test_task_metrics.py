"""Accuracy and seqeval-style entity F1, against hand-computed values."""

from __future__ import annotations

import pytest

from babelprune.errors import BabelpruneError
from babelprune.evaluate.task_metrics import (
    accuracy,
    entities,
    entity_f1,
    tag_names,
    task_score,
)


def test_accuracy() -> None:
    assert accuracy([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75
    with pytest.raises(BabelpruneError, match="at least one"):
        accuracy([], [])
    with pytest.raises(BabelpruneError, match="3 predictions but 2 references"):
        accuracy([0, 1, 2], [0, 1])


def test_entities_are_maximal_b_i_spans() -> None:
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 3)]
    assert entities(["O", "O"]) == []
    assert entities(["B-ORG", "I-ORG", "I-ORG"]) == [("ORG", 0, 3)]


def test_stray_inside_tags_follow_seqeval_default_or_strict_mode() -> None:
    tags = ["O", "I-PER", "I-PER", "B-PER"]
    assert entities(tags) == [("PER", 1, 3), ("PER", 3, 4)]
    assert entities(tags, strict=True) == [("PER", 3, 4)]
    # A type change inside an entity closes it.
    assert entities(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]
    assert entities(["B-PER", "I-LOC"], strict=True) == [("PER", 0, 1)]
    assert entities(["I-ORG"]) == [("ORG", 0, 1)]


def test_invalid_tag_is_a_clear_error() -> None:
    with pytest.raises(BabelpruneError, match="'PER' is not an IOB2 tag"):
        entities(["PER"])
    with pytest.raises(BabelpruneError, match="'E-PER'"):
        entities(["E-PER"])


def test_entity_f1_micro_over_sentences() -> None:
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predictions = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # reference: PER(0,2) LOC(3,4) | ORG(0,1); predicted: PER(0,2) | ORG(0,1) LOC(1,2); 2 correct.
    scores = entity_f1(references, predictions)
    assert (scores.reference_entities, scores.predicted_entities, scores.correct) == (3, 3, 2)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 / 3)


def test_entity_f1_asymmetric_and_boundaries() -> None:
    references = [["B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "B-PER"]]
    predictions = [["B-PER", "O", "B-LOC", "B-ORG", "O", "O"]]
    # 4 reference entities; predicted PER(0,1) LOC(2,3) right, ORG(3,4) has the wrong end.
    scores = entity_f1(references, predictions)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(2 / 4)
    assert scores.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_entity_f1_without_entities_is_zero() -> None:
    scores = entity_f1([["O", "O"]], [["O", "O"]])
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)
    perfect = entity_f1([["B-LOC"]], [["B-LOC"]])
    assert perfect.f1 == 1.0


def test_entity_f1_checks_lengths() -> None:
    with pytest.raises(BabelpruneError, match="sentence 0"):
        entity_f1([["O", "O"]], [["O"]])


def test_task_score_names_tag_ids() -> None:
    labels = ("O", "B-PER", "I-PER")
    assert tag_names([0, 1, 2], labels) == ["O", "B-PER", "I-PER"]
    # reference PER(0,2); prediction PER(0,1): no match, F1 0; identical: 1.
    assert task_score("entity_f1", [[1, 0]], [[1, 2]], labels) == 0.0
    assert task_score("entity_f1", [[1, 2]], [[1, 2]], labels) == 1.0
    assert task_score("top1", [0, 2, 2], [0, 1, 2]) == pytest.approx(2 / 3)
    with pytest.raises(BabelpruneError, match="out of range"):
        tag_names([3], labels)
    with pytest.raises(BabelpruneError, match="Unknown task metric"):
        task_score("bleu", [0], [0])
