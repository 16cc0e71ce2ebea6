"""Task metrics: accuracy and entity-level F1 for IOB2 tags.

Entity F1 follows the convention of ``seqeval`` (and of the CoNLL
``conlleval`` script) in its default mode, for IOB2 tags:

- an entity is a maximal span ``B-X I-X*`` of one type X;
- an ``I-X`` that does not continue an entity of type X (after ``O``, after
  another type, or at the start) begins a new entity of type X. With
  ``strict=True`` such a stray ``I-X`` belongs to no entity instead (seqeval's
  strict IOB2 mode);
- a predicted entity is correct when its type, start and end all match a
  reference entity of the same sentence;
- precision, recall and F1 are micro-averaged over all entities of all
  sentences, and are 0 when their denominator is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from babelprune.errors import BabelpruneError

Entity = tuple[str, int, int]  # (type, first token, one past the last token)


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Share of predictions equal to their reference."""
    _check_lengths(predictions, references, "predictions", "references")
    if not references:
        raise BabelpruneError("Accuracy needs at least one example; evaluate on a non-empty split.")
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def _split_tag(tag: str) -> tuple[str, str]:
    """('B'|'I'|'O', type) of an IOB2 tag; raises on anything else."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if prefix not in ("B", "I") or not dash or not kind:
        raise BabelpruneError(f"Tag '{tag}' is not an IOB2 tag; use 'O', 'B-<type>' or 'I-<type>'.")
    return prefix, kind


def entities(tags: Sequence[str], strict: bool = False) -> list[Entity]:
    """Entities (type, start, end) of one sentence's IOB2 tags, in order (see module docstring)."""
    found: list[Entity] = []
    current: tuple[str, int] | None = None  # (type, start) of the open entity
    for position, tag in enumerate(tags):
        prefix, kind = _split_tag(tag)
        continues = prefix == "I" and current is not None and current[0] == kind
        if continues:
            continue
        if current is not None:
            found.append((current[0], current[1], position))
            current = None
        if prefix == "B" or (prefix == "I" and not strict):
            current = (kind, position)
    if current is not None:
        found.append((current[0], current[1], len(tags)))
    return found


@dataclass(frozen=True)
class EntityScores:
    precision: float
    recall: float
    f1: float
    reference_entities: int
    predicted_entities: int
    correct: int


def entity_f1(
    references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]], strict: bool = False
) -> EntityScores:
    """Micro precision/recall/F1 over the entities of tag sequences (one sequence per sentence)."""
    _check_lengths(predictions, references, "predicted sentences", "reference sentences")
    n_reference = n_predicted = n_correct = 0
    for number, (reference, prediction) in enumerate(zip(references, predictions, strict=True)):
        _check_lengths(prediction, reference, f"predicted tags of sentence {number}", "its reference tags")
        gold = set(entities(reference, strict))
        guessed = set(entities(prediction, strict))
        n_reference += len(gold)
        n_predicted += len(guessed)
        n_correct += len(gold & guessed)
    precision = n_correct / n_predicted if n_predicted else 0.0
    recall = n_correct / n_reference if n_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return EntityScores(precision, recall, f1, n_reference, n_predicted, n_correct)


def tag_names(ids: Sequence[int], labels: Sequence[str]) -> list[str]:
    """Tag ids mapped to their names in `labels`."""
    bad = [i for i in ids if not 0 <= i < len(labels)]
    if bad:
        raise BabelpruneError(f"Tag id {bad[0]} is out of range for the labels {', '.join(labels)}.")
    return [labels[i] for i in ids]


def task_score(
    metric: str,
    predictions: Sequence[int] | Sequence[Sequence[int]],
    references: Sequence[int] | Sequence[Sequence[int]],
    labels: Sequence[str] = (),
) -> float:
    """One number for a task's metric ('accuracy', 'top1' or 'entity_f1').

    For 'top1', predictions are the indices of the retrieved candidates and
    references the indices of the right ones. For 'entity_f1', predictions
    and references are tag id sequences, named through `labels`.
    """
    if metric in ("accuracy", "top1"):
        return accuracy(predictions, references)  # type: ignore[arg-type]
    if metric == "entity_f1":
        named_refs = [tag_names(seq, labels) for seq in references]  # type: ignore[union-attr]
        named_preds = [tag_names(seq, labels) for seq in predictions]  # type: ignore[union-attr]
        return entity_f1(named_refs, named_preds).f1
    raise BabelpruneError(f"Unknown task metric '{metric}'; use accuracy, top1 or entity_f1.")


def _check_lengths(first: Sequence[object], second: Sequence[object], first_name: str, second_name: str) -> None:
    if len(first) != len(second):
        raise BabelpruneError(
            f"There are {len(first)} {first_name} but {len(second)} {second_name}; give one per item."
        )
