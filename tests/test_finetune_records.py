"""Fine-tuning result records: long-format rows, JSON round trip, clear errors on bad files."""

from __future__ import annotations

import pytest

from babelprune.errors import BabelpruneError
from babelprune.prune.gradual import GMPConfig
from babelprune.report.finetune_records import FinetuneResult, TaskScore


def _score(lang: str, value: float, perturbation: str | None = None, gap: float | None = None) -> TaskScore:
    resource = {"en": "high", "sw": "low"}[lang]
    return TaskScore(
        language=lang, name=lang, script="Latn", resource=resource, metric="accuracy", value=value,
        n_examples=20, perturbation=perturbation, gap=gap,
    )


def make_result(sparsity: float = 0.5, seed: int = 0, scores=None) -> FinetuneResult:
    gmp = GMPConfig(final_sparsity=sparsity, end_step=10) if sparsity else None
    return FinetuneResult(
        model="e5-small", task="bible-genre", mode="zero-shot", train_languages=["en"], train_examples={"en": 100},
        seed=seed, sparsity=sparsity, gmp=gmp, achieved_sparsity=sparsity, steps=12, seconds=3.5,
        scores=scores or [_score("en", 0.8), _score("en", 0.6, "words", 0.2), _score("sw", 0.5)],
    )


def test_records_rows_by_hand():
    rows = make_result().records()
    # en clean: 1 row; en words: value + gap rows; sw clean: 1 row.
    assert [(r.language, r.split, r.metric, r.value) for r in rows] == [
        ("en", "test", "accuracy", 0.8),
        ("en", "test+words", "accuracy", 0.6),
        ("en", "test+words", "accuracy_gap", 0.2),
        ("sw", "test", "accuracy", 0.5),
    ]
    assert {(r.method, r.sparsity, r.setting, r.corpus, r.count) for r in rows} == {("gmp", 0.5, "zero-shot", "bible-genre", 20)}
    assert rows[-1].resource == "low"


def test_dense_result_is_method_dense():
    result = make_result(sparsity=0.0)
    assert result.method == "dense" and result.records()[0].method == "dense"


def test_lookup_helpers():
    result = make_result()
    assert result.score("en", "words").gap == 0.2
    assert result.languages() == ["en", "sw"]
    assert result.perturbations() == ["words"]
    with pytest.raises(KeyError):
        result.score("sw", "chars")


def test_json_round_trip(tmp_path):
    result = make_result()
    result.save(tmp_path / "r.json")
    assert FinetuneResult.load(tmp_path / "r.json") == result


def test_load_errors(tmp_path):
    with pytest.raises(BabelpruneError, match="No fine-tuning result"):
        FinetuneResult.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"model": 3}')
    with pytest.raises(BabelpruneError, match="is not a babelprune fine-tuning result"):
        FinetuneResult.load(tmp_path / "bad.json")
