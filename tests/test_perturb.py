"""Perturbations: word and entity replacement, character noise; hand-checked outcomes."""

from __future__ import annotations

import re

import pytest

from babelprune.data.ner_nli import NER_LABELS
from babelprune.data.tasks import Example, Task, get_task
from babelprune.errors import BabelpruneError
from babelprune.evaluate.perturb import (
    Vocabulary,
    build_vocabulary,
    char_noise,
    perturbed_examples,
    replace_entities,
    replace_words,
    unit_spans,
    units_to_change,
)


def _tags(*names: str) -> tuple[int, ...]:
    return tuple(NER_LABELS.index(name) for name in names)


def _vocab(lang: str, *words: str) -> dict[str, Vocabulary]:
    return {lang: Vocabulary(lang=lang, words=words, labels=NER_LABELS)}


def test_units_and_counts() -> None:
    text = "Mungu, aliziumba 2 mbingu!"
    assert [text[s:e] for s, e in unit_spans(text, by_characters=False)] == ["Mungu", "aliziumba", "mbingu"]
    # Devanagari vowel signs are combining marks: they stay inside the word.
    hindi = "नमस्ते दुनिया"
    assert [hindi[s:e] for s, e in unit_spans(hindi, by_characters=False)] == ["नमस्ते", "दुनिया"]
    chinese = "我爱北京。"
    assert [chinese[s:e] for s, e in unit_spans(chinese, by_characters=True)] == ["我", "爱", "北", "京"]
    assert [units_to_change(r, 4) for r in (0.0, 0.1, 0.125, 0.5, 1.0)] == [0, 0, 1, 2, 4]
    with pytest.raises(BabelpruneError, match="between 0 and 1"):
        units_to_change(1.5, 4)


def test_rate_zero_is_identity() -> None:
    text = Example(key="k", lang="en", text="The cat sat.", text_pair="A dog ran.", label=1)
    tokens = Example(key="t", lang="en", tokens=("Ada", "met", "Bob"), tags=_tags("B-PER", "O", "B-PER"))
    vocab = _vocab("en", "x", "y")
    assert replace_words(text, vocab, 0.0) == text
    assert replace_words(tokens, vocab, 0.0) == tokens
    assert replace_entities(tokens, vocab, 0.0) == tokens
    assert char_noise(text, 0.0) == text
    assert char_noise(tokens, 0.0) == tokens


def test_forced_word_replacement_keeps_punctuation() -> None:
    # Only one other word exists for each word: the result is fixed whatever the generator.
    example = Example(key="k", lang="en", text="a, b a.")
    assert replace_words(example, _vocab("en", "a", "b"), rate=1.0).text == "b, a b."


def test_half_the_words_change_and_the_rest_stay() -> None:
    example = Example(key="k", lang="en", text="one two three four.")
    out = replace_words(example, _vocab("en", "x"), rate=0.5, seed=3).text
    words = out.rstrip(".").split(" ")
    assert out.endswith(".") and len(words) == 4
    assert words.count("x") == 2
    assert [w for w in words if w != "x"] == [w for w, o in zip(["one", "two", "three", "four"], words) if o != "x"]
    assert replace_words(example, _vocab("en", "x"), rate=0.5, seed=3).text == out  # deterministic
    changed = {
        tuple(i for i, w in enumerate(replace_words(example, _vocab("en", "x"), 0.5, seed=s).text.split(" ")) if w == "x")
        for s in range(10)
    }
    assert len(changed) > 1  # the seed chooses the positions


def test_vocabulary_is_per_language_and_in_order() -> None:
    examples = [
        Example(key="1", lang="en", text="the cat"),
        Example(key="2", lang="fr", text="le chat, le chien", text_pair="un oiseau"),
        Example(key="3", lang="fr", text="Le 3 chats"),
    ]
    assert build_vocabulary(examples, "fr").words == ("le", "chat", "chien", "un", "oiseau", "Le", "chats")
    with pytest.raises(BabelpruneError, match="No vocabulary for language 'de'"):
        replace_words(Example(key="x", lang="de", text="Hallo"), {"fr": build_vocabulary(examples, "fr")}, 0.5)


def test_chinese_is_perturbed_by_characters() -> None:
    vocab = {"zh": build_vocabulary([Example(key="1", lang="zh", text="天地")], "zh")}
    assert vocab["zh"].words == ("天", "地")
    out = replace_words(Example(key="2", lang="zh", text="我爱北京。"), vocab, rate=1.0).text
    assert re.fullmatch("[天地]{4}。", out)


def test_token_words_replace_only_outside_tokens() -> None:
    example = Example(key="e", lang="en", tokens=("John", "lives", "in", "Paris"), tags=_tags("B-PER", "O", "O", "B-LOC"))
    out = replace_words(example, _vocab("en", "sleeps"), rate=1.0)
    assert out.tokens == ("John", "sleeps", "sleeps", "Paris")
    assert out.tags == example.tags


def test_entities_replaced_by_same_type_from_other_sentences() -> None:
    train = [
        Example(key="t1", lang="en", tokens=("Ada", "Lovelace", "wrote"), tags=_tags("B-PER", "I-PER", "O")),
        Example(key="t2", lang="en", tokens=("Rome", "fell"), tags=_tags("B-LOC", "O")),
    ]
    vocab = {"en": build_vocabulary(train, "en", NER_LABELS)}
    assert vocab["en"].words == ("wrote", "fell")
    example = Example(
        key="e1", lang="en", tokens=("Bob", "met", "Ann", "in", "Oslo"), tags=_tags("B-PER", "O", "B-PER", "O", "B-LOC")
    )
    out = replace_entities(example, vocab, rate=1.0)
    assert out.tokens == ("Ada", "Lovelace", "met", "Ada", "Lovelace", "in", "Rome")
    assert out.tags == _tags("B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC")


def test_entities_of_the_same_sentence_are_not_used() -> None:
    example = Example(key="e1", lang="en", tokens=("Bob", "in", "Oslo"), tags=_tags("B-PER", "O", "B-LOC"))
    other = Example(key="t1", lang="en", tokens=("Ada", "Lovelace"), tags=_tags("B-PER", "I-PER"))
    vocab = {"en": build_vocabulary([example, other], "en", NER_LABELS)}
    out = replace_entities(example, vocab, rate=1.0)
    # 'Oslo' is the only location, and it comes from this very sentence: it stays.
    assert out.tokens == ("Ada", "Lovelace", "in", "Oslo")
    assert out.tags == _tags("B-PER", "I-PER", "O", "B-LOC")
    with pytest.raises(BabelpruneError, match="needs token-classification examples"):
        replace_entities(Example(key="x", lang="en", text="Oslo"), vocab, 1.0)


def _single_edits(word: str, alphabet: str) -> set[str]:
    """Every result of one swap, drop, insertion or substitution."""
    edits = set()
    for i in range(len(word)):
        edits.add(word[:i] + word[i + 1 :])
        if i + 1 < len(word):
            edits.add(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
        for char in alphabet:
            edits.add(word[:i] + char + word[i + 1 :])
            edits.add(word[: i + 1] + char + word[i + 1 :])
    edits.discard(word)
    return edits


def test_char_noise_makes_exactly_one_edit_at_quarter_rate() -> None:
    allowed = _single_edits("abcd", "abcd")
    results = {char_noise(Example(key=str(s), lang="en", text="abcd"), 0.25, seed=s).text for s in range(30)}
    assert results <= allowed
    assert len(results) > 3


def test_char_noise_keeps_the_script_and_the_spacing() -> None:
    for lang, text in (("ru", "Вначале сотворил Бог небо и землю."), ("hi", "आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की।")):
        out = char_noise(Example(key="1", lang=lang, text=text), 0.3, seed=0).text
        assert out != text
        letters = {c for c in text if c.isalpha()}
        assert {c for c in out if c.isalpha()} <= letters
        assert out.count(" ") == text.count(" ")
        assert out[-1] == text[-1]  # punctuation is never edited


def test_char_noise_never_empties_a_word_or_token() -> None:
    for seed in range(20):
        assert len(char_noise(Example(key="1", lang="en", text="a b"), 1.0, seed).text.split(" ")) == 2
        tokens = Example(key="t", lang="en", tokens=("I", "x", "Oslo"), tags=_tags("O", "O", "B-LOC"))
        out = char_noise(tokens, 1.0, seed)
        assert len(out.tokens) == 3 and all(out.tokens) and out.tags == tokens.tags


def test_pair_examples_perturb_both_texts() -> None:
    example = Example(key="p", lang="en", text="a a", text_pair="b b", label=2)
    out = replace_words(example, _vocab("en", "a", "b"), 1.0)
    assert (out.text, out.text_pair, out.label) == ("b b", "a a", 2)


class PairTask(Task):
    name = "pairs"
    kind = "pair-classification"
    labels = ("same", "different")

    def languages(self) -> list[str]:
        return ["en"]

    def _examples(self, lang: str, split: str) -> list[Example]:
        if split == "train":
            return [Example(key="t0", lang=lang, text="red", text_pair="blue", label=0)]
        return [Example(key="d0", lang=lang, text="green", text_pair="red", label=1)]


def test_perturbed_examples_of_a_task() -> None:
    task = PairTask()
    out = perturbed_examples(task, "en", "test", "words", rate=1.0)
    # Vocabulary from the training split: red, blue; 'green' becomes either, 'red' becomes blue.
    assert [(e.key, e.text_pair) for e in out] == [("d0", "blue")] and out[0].text in ("red", "blue")
    assert perturbed_examples(task, "en", "test", "chars", rate=0.0) == task.examples("en", "test")
    with pytest.raises(BabelpruneError, match="Entity replacement needs a token-classification task"):
        perturbed_examples(task, "en", "test", "entities", rate=0.5)
    with pytest.raises(BabelpruneError, match="Unknown perturbation 'typos'"):
        perturbed_examples(task, "en", "test", "typos", rate=0.5)  # type: ignore[arg-type]
    with pytest.raises(BabelpruneError, match="between 0 and 1"):
        perturbed_examples(task, "en", "test", "chars", rate=-0.1)


def test_perturbed_wikiann_fixture_keeps_tags_aligned() -> None:
    from pathlib import Path

    task = get_task("wikiann", source=str(Path(__file__).parent / "fixtures" / "tasks" / "wikiann"))
    out = perturbed_examples(task, "en", "test", "entities", rate=1.0, seed=0)
    original = task.examples("en", "test")
    assert [e.key for e in out] == [e.key for e in original]
    train_entities = {"Smith", "John", "Paris", "United", "Nations", "New", "York", "Mary", "Google", "Berlin", "Ada", "Lovelace", "London"}
    for before, after in zip(original, out, strict=True):
        assert len(after.tokens) == len(after.tags)
        names = [NER_LABELS[t] for t in after.tags]
        entity_tokens = {tok for tok, name in zip(after.tokens, names) if name != "O"}
        assert entity_tokens <= train_entities  # every entity now comes from the training sentences
        assert [n[2:] for n in names if n.startswith("B-")] == [NER_LABELS[t][2:] for t in before.tags if NER_LABELS[t].startswith("B-")]


@pytest.mark.real
def test_real_swahili_verse_perturbations_stay_latin() -> None:
    task = get_task("bible-genre", languages=["en", "sw"], max_per_label=20, max_eval=7)
    original = task.examples("sw", "test")
    for kind in ("words", "chars"):
        out = perturbed_examples(task, "sw", "test", kind, rate=0.3, seed=0)  # type: ignore[arg-type]
        assert [e.key for e in out] == [e.key for e in original]
        assert [e.label for e in out] == [e.label for e in original]
        for before, after in zip(original, out, strict=True):
            assert after.text != before.text
            assert re.fullmatch(r"[A-Za-z0-9\s.,;:!?'\"()\-]+", after.text), after.text
