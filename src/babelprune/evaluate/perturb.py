"""Deterministic perturbations of task examples, for robustness tests of pruned models.

Three kinds, after the robustness tests of Ogueji et al. (2022):

- ``words`` (`replace_words`): a share ``rate`` of the words is replaced by
  other words of the *same language*, drawn from a `Vocabulary` gathered from
  that language's training examples. In scripts written without spaces
  (Chinese, Japanese, Thai, Lao, Khmer, Burmese) the units are single letters
  instead of words. For token classification, only tokens tagged ``O`` are
  replaced, so the tags stay valid.
- ``entities`` (`replace_entities`, token classification only): a share of
  the entities is replaced by entities of the same type taken from *other
  sentences* of the same language; the tags are rebuilt (``B-X I-X ...``) to
  fit the new entity's length, so tokens and tags stay aligned.
- ``chars`` (`char_noise`): a share of the letters receives one edit each:
  a swap with the next letter, a drop, an insertion after it, or a
  substitution. Inserted and substituted letters are drawn from the example's
  own letters, so the script does not change.

A "word" is a maximal run of letters, combining marks and digits that holds
at least one letter (punctuation and spacing are never changed). The number
of units changed is ``round(rate * n)`` (halves round up), so rate 0 is the
identity. All randomness comes from a generator seeded with the seed, the
kind, the language and the example key: the same call always gives the same
result, on every machine, and examples do not share positions.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

from babelprune.data.languages import language_info
from babelprune.data.tasks import Example, Task, TaskSplit
from babelprune.errors import BabelpruneError
from babelprune.evaluate.task_metrics import entities, tag_names

PerturbationKind = Literal["words", "entities", "chars"]
PERTURBATION_KINDS: tuple[str, ...] = ("words", "entities", "chars")

# Scripts written without spaces between words: perturb letters, not words.
CHARACTER_SCRIPTS = frozenset({"Hans", "Hant", "Hani", "Jpan", "Thai", "Laoo", "Khmr", "Mymr"})
_CHAR_EDITS = ("swap", "drop", "insert", "substitute")


def uses_characters(lang: str) -> bool:
    """Whether word replacement works on single letters in `lang` (no spaces between words)."""
    return language_info(lang).script in CHARACTER_SCRIPTS


@dataclass(frozen=True)
class EntitySpan:
    key: str  # the example the entity comes from
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    """Replacement material of one language: words (or letters) and entities by type."""

    lang: str
    words: tuple[str, ...]
    entities: Mapping[str, tuple[EntitySpan, ...]] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    by_characters: bool = False

    @cached_property
    def word_index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}


def _is_letter(char: str) -> bool:
    return unicodedata.category(char).startswith("L")


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def unit_spans(text: str, by_characters: bool) -> list[tuple[int, int]]:
    """(start, end) of the replaceable units of `text`: words with a letter, or single letters."""
    if by_characters:
        return [(i, i + 1) for i, char in enumerate(text) if _is_letter(char)]
    spans, start = [], None
    for i, char in enumerate([*text, " "]):
        if _is_word_char(char):
            start = i if start is None else start
        elif start is not None:
            if any(_is_letter(c) for c in text[start:i]):
                spans.append((start, i))
            start = None
    return spans


def build_vocabulary(examples: Iterable[Example], lang: str, labels: Sequence[str] = ()) -> Vocabulary:
    """The words/letters and entities of `lang`'s examples, in order of first appearance.

    For token classification, words are the tokens tagged ``O`` and entities
    are read from the tags (names in `labels`); otherwise words come from
    ``text`` and ``text_pair``.
    """
    by_characters = uses_characters(lang)
    words: dict[str, None] = {}  # an ordered set
    spans: dict[str, dict[tuple[str, ...], EntitySpan]] = {}
    for example in examples:
        if example.lang != lang:
            continue
        if example.tokens is not None:
            names = tag_names(example.tags or (), labels)
            for token, name in zip(example.tokens, names, strict=True):
                if name == "O" and any(map(_is_letter, token)):
                    words.setdefault(token)
            for kind, start, end in entities(names):
                tokens = example.tokens[start:end]
                spans.setdefault(kind, {}).setdefault(tokens, EntitySpan(example.key, tokens))
            continue
        for text in (example.text, example.text_pair):
            for start, end in unit_spans(text or "", by_characters):
                words.setdefault(text[start:end])  # type: ignore[index]
    return Vocabulary(
        lang=lang,
        words=tuple(words),
        entities={kind: tuple(found.values()) for kind, found in spans.items()},
        labels=tuple(labels),
        by_characters=by_characters,
    )


def check_rate(rate: float) -> float:
    if not 0.0 <= rate <= 1.0:
        raise BabelpruneError(f"Perturbation rate must be between 0 and 1, not {rate}.")
    return rate


def units_to_change(rate: float, count: int) -> int:
    """round(rate * count) with halves rounded up."""
    return int(check_rate(rate) * count + 0.5)


def _generator(seed: int, kind: str, example: Example) -> random.Random:
    # A string seed is hashed by SHA-512 inside `random`: stable across runs and machines.
    return random.Random(f"{seed}|{kind}|{example.lang}|{example.key}")


def _vocabulary_for(example: Example, vocabulary_by_lang: Mapping[str, Vocabulary]) -> Vocabulary:
    if example.lang not in vocabulary_by_lang:
        raise BabelpruneError(
            f"No vocabulary for language '{example.lang}'; build one from its training examples."
        )
    return vocabulary_by_lang[example.lang]


def _other_word(word: str, vocabulary: Vocabulary, rng: random.Random) -> str:
    """A vocabulary word different from `word` (or `word` itself if there is none)."""
    words = vocabulary.words
    position = vocabulary.word_index.get(word)
    if position is None:
        return rng.choice(words) if words else word
    if len(words) < 2:
        return word
    index = rng.randrange(len(words) - 1)  # skip the word's own position
    return words[index + 1 if index >= position else index]


def _replace_in_text(text: str, vocabulary: Vocabulary, rate: float, rng: random.Random) -> str:
    spans = unit_spans(text, vocabulary.by_characters)
    chosen = sorted(rng.sample(range(len(spans)), units_to_change(rate, len(spans))))
    pieces, cursor = [], 0
    for index in chosen:
        start, end = spans[index]
        pieces += [text[cursor:start], _other_word(text[start:end], vocabulary, rng)]
        cursor = end
    return "".join(pieces) + text[cursor:]


def replace_words(
    example: Example, vocabulary_by_lang: Mapping[str, Vocabulary], rate: float, seed: int = 0
) -> Example:
    """`example` with a share `rate` of its words replaced by other words of its language."""
    vocabulary = _vocabulary_for(example, vocabulary_by_lang)
    rng = _generator(seed, "words", example)
    if example.tokens is not None:
        names = tag_names(example.tags or (), vocabulary.labels)
        positions = [
            i for i, (token, name) in enumerate(zip(example.tokens, names, strict=True))
            if name == "O" and any(map(_is_letter, token))
        ]  # fmt: skip
        chosen = rng.sample(positions, units_to_change(rate, len(positions)))
        tokens = list(example.tokens)
        for i in sorted(chosen):
            tokens[i] = _other_word(tokens[i], vocabulary, rng)
        return replace(example, tokens=tuple(tokens))
    text = _replace_in_text(example.text, vocabulary, rate, rng) if example.text is not None else None
    pair = _replace_in_text(example.text_pair, vocabulary, rate, rng) if example.text_pair is not None else None
    return replace(example, text=text, text_pair=pair)


def replace_entities(
    example: Example, vocabulary_by_lang: Mapping[str, Vocabulary], rate: float, seed: int = 0
) -> Example:
    """`example` (token classification) with a share `rate` of its entities replaced by
    entities of the same type from other sentences; tags rebuilt to stay aligned."""
    if example.tokens is None or example.tags is None:
        raise BabelpruneError("Entity replacement needs token-classification examples (tokens and tags).")
    vocabulary = _vocabulary_for(example, vocabulary_by_lang)
    labels = vocabulary.labels
    found = entities(tag_names(example.tags, labels))
    rng = _generator(seed, "entities", example)
    chosen = sorted(rng.sample(range(len(found)), units_to_change(rate, len(found))))
    tokens, tags = list(example.tokens), list(example.tags)
    for index in reversed(chosen):  # right to left: earlier positions stay valid
        kind, start, end = found[index]
        original = tuple(tokens[start:end])
        candidates = [
            span.tokens for span in vocabulary.entities.get(kind, ())
            if span.key != example.key and span.tokens != original
        ]  # fmt: skip
        if not candidates:
            continue
        new = rng.choice(candidates)
        tokens[start:end] = new
        tags[start:end] = _entity_tags(kind, len(new), labels)
    return replace(example, tokens=tuple(tokens), tags=tuple(tags))


def _entity_tags(kind: str, length: int, labels: Sequence[str]) -> list[int]:
    """Tag ids B-kind, I-kind, ... for an entity of `length` tokens."""
    names = [f"B-{kind}"] + [f"I-{kind}"] * (length - 1)
    missing = [name for name in names if name not in labels]
    if missing:
        raise BabelpruneError(f"Label '{missing[0]}' is not among the task's labels {', '.join(labels)}.")
    return [labels.index(name) for name in names]


def _word_length_at(text: str, i: int) -> int:
    """Length of the run of word characters around position i."""
    start, end = i, i + 1
    while start > 0 and _is_word_char(text[start - 1]):
        start -= 1
    while end < len(text) and _is_word_char(text[end]):
        end += 1
    return end - start


def _edit(text: str, i: int, alphabet: Sequence[str], rng: random.Random) -> str:
    """One random edit of the letter at position i (see module docstring)."""
    edit = rng.choice(_CHAR_EDITS)
    if edit == "swap" and i + 1 < len(text) and _is_letter(text[i + 1]) and text[i + 1] != text[i]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if edit == "drop" and _word_length_at(text, i) >= 2:
        return text[:i] + text[i + 1 :]
    others = [char for char in alphabet if char != text[i]]
    if edit == "insert" or not others:
        return text[: i + 1] + rng.choice(alphabet) + text[i + 1 :]
    # A substitution, also when a swap or a drop is impossible at i.
    return text[:i] + rng.choice(others) + text[i + 1 :]


def _noisy_fields(fields: list[str], rate: float, rng: random.Random) -> list[str]:
    positions = [(f, i) for f, text in enumerate(fields) for i, char in enumerate(text) if _is_letter(char)]
    alphabet = sorted({fields[f][i] for f, i in positions})  # sorted: sets have no stable order
    chosen = rng.sample(positions, units_to_change(rate, len(positions)))
    fields = list(fields)
    for f, i in sorted(chosen, reverse=True):  # right to left: earlier positions stay valid
        fields[f] = _edit(fields[f], i, alphabet, rng)
    return fields


def char_noise(example: Example, rate: float, seed: int = 0) -> Example:
    """`example` with a share `rate` of its letters edited (swap, drop, insert, substitute)."""
    rng = _generator(seed, "chars", example)
    if example.tokens is not None:
        return replace(example, tokens=tuple(_noisy_fields(list(example.tokens), rate, rng)))
    texts = [t for t in (example.text, example.text_pair) if t is not None]
    noisy = iter(_noisy_fields(texts, rate, rng))
    return replace(
        example,
        text=next(noisy) if example.text is not None else None,
        text_pair=next(noisy) if example.text_pair is not None else None,
    )


def task_vocabulary(task: Task, lang: str) -> Vocabulary:
    """The vocabulary of `lang` gathered from the task's training examples."""
    labels = task.labels if task.kind == "token-classification" else ()
    return build_vocabulary(task.examples(lang, "train"), lang, labels)


def perturbed_examples(
    task: Task, lang: str, split: TaskSplit, kind: PerturbationKind, rate: float, seed: int = 0
) -> list[Example]:
    """The examples of `lang` in `split`, each perturbed (same keys, same order)."""
    check_rate(rate)
    if kind not in PERTURBATION_KINDS:
        raise BabelpruneError(f"Unknown perturbation '{kind}'; use one of {', '.join(PERTURBATION_KINDS)}.")
    if kind == "entities" and task.kind != "token-classification":
        raise BabelpruneError(
            f"Entity replacement needs a token-classification task, and '{task.name}' is "
            f"{task.kind}; use 'words' or 'chars'."
        )
    examples = task.examples(lang, split)
    if kind == "chars":
        return [char_noise(example, rate, seed) for example in examples]
    vocabulary = {lang: task_vocabulary(task, lang)}
    perturb = replace_words if kind == "words" else replace_entities
    return [perturb(example, vocabulary, rate, seed) for example in examples]
