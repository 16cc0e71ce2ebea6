"""Findings per pruning condition, from hand-made fine-tuning results whose per-item answers are known.

Four languages of Joshi classes 5 (en, high), 4 (ru, medium), 3 (id, low)
and 2 (sw, low), 8 test items each, two seeds. The dense runs answer every
item right, clean and perturbed. At 50% (embeddings kept) the clean answers
are right on 8, 6, 4 and 0 items (relative changes 0, -25%, -50%, -100%) and
every perturbed answer is wrong, so each language's gap grows by its clean
score. At 50% with the embeddings pruned every answer equals the dense one.
"""

from __future__ import annotations

import pytest

from babelprune.prune.gradual import GMPConfig
from babelprune.report.finetune_findings import Condition, condition_findings, permutation_p
from babelprune.report.finetune_records import FinetuneResult, TaskScore
from babelprune.report.html import write_report
from babelprune.sweep.store import RunRecord
from tests import report_store as made
from tests.test_report_html import column, parse, row_of

LANGS = {"en": "high", "ru": "medium", "id": "low", "sw": "low"}
ITEMS = 8
RIGHT = {"en": 8, "ru": 6, "id": 4, "sw": 0}  # clean items right at 50%, embeddings kept
TRAIN = {"en": 8, "ru": 4, "id": 2, "sw": 2}


def _result(sparsity: float, seed: int, embeddings: bool = False) -> FinetuneResult:
    scores = []
    for lang, level in LANGS.items():
        pruned = sparsity > 0 and not embeddings
        clean = [1] * RIGHT[lang] + [0] * (ITEMS - RIGHT[lang]) if pruned else [1] * ITEMS
        perturbed = [0] * ITEMS if pruned else [1] * ITEMS
        base = dict(language=lang, name=lang, script="Latn", resource=level, metric="accuracy", n_examples=ITEMS)
        value = sum(clean) / ITEMS
        scores.append(TaskScore(**base, value=value, correct=clean))
        scores.append(TaskScore(**base, value=sum(perturbed) / ITEMS, perturbation="chars", gap=value - sum(perturbed) / ITEMS,
                                correct=perturbed))
    gmp = GMPConfig(final_sparsity=sparsity, end_step=4, interval=1, include_embeddings=embeddings) if sparsity else None
    return FinetuneResult(model="e5-small", task="bible-genre", mode="multilingual", train_languages=list(LANGS),
                          train_examples=TRAIN, train_asked={**TRAIN, "sw": 3}, seed=seed, sparsity=sparsity, gmp=gmp,
                          achieved_sparsity=sparsity, steps=4, seconds=1.0, scores=scores)


def results() -> list[FinetuneResult]:
    return [_result(sparsity, seed, embeddings) for sparsity, embeddings in ((0.0, False), (0.5, False), (0.5, True))
            for seed in (0, 1)]


@pytest.fixture(scope="module")
def findings():
    return {item.condition: item for item in condition_findings(results(), permutations=2000)}


def test_conditions_share_the_dense_runs(findings):
    assert list(findings) == [Condition(0.5, False), Condition(0.5, True)]
    assert findings[Condition(0.5, True)].condition.label == "50% + embeddings"
    assert all(item.seeds == (0, 1) for item in findings.values())


def test_relative_changes_and_their_intervals_by_hand(findings):
    changes = findings[Condition(0.5, False)].changes
    assert {lang: e.value for lang, e in changes.items()} == pytest.approx({"en": 0.0, "ru": -0.25, "id": -0.5, "sw": -1.0})
    # Every resample of en gives 0 and of sw -1: the intervals are points; en's contains 0 (n.s.).
    assert changes["en"].interval == (0.0, 0.0) and not changes["en"].resolved
    assert changes["sw"].interval == pytest.approx((-1.0, -1.0)) and changes["sw"].resolved
    # ru: a resample's change is minus the share of drawn items among the two wrong ones: within [-1, 0].
    low, high = changes["ru"].interval
    assert -1.0 <= low < -0.25 < high <= 0.0
    kept = findings[Condition(0.5, True)].changes
    assert all(e.value == 0.0 and e.interval == (0.0, 0.0) for e in kept.values())


def test_resource_levels_average_their_languages(findings):
    levels = findings[Condition(0.5, False)].levels
    assert {level: e.value for level, e in levels.items()} == pytest.approx({"high": 0.0, "medium": -0.25, "low": -0.75})
    # low = mean(id, sw) per resample, sw always -1 and id within [-1, 0]: inside [-1, -0.5] and resolved.
    low, high = levels["low"].interval
    assert -1.0 <= low <= high <= -0.5 and levels["low"].resolved


def test_spearman_with_resource_and_its_permutation_p(findings):
    rhos = {c.quantity: c for c in findings[Condition(0.5, False)].correlations}
    # Changes rank exactly as the Joshi classes: rho 1; 2 of the 24 orderings reach |rho| = 1, so p is about 1/12.
    assert rhos["joshi_class"].rho == pytest.approx(1.0)
    assert rhos["joshi_class"].p_value == pytest.approx(1 / 12, abs=0.02)
    # Training examples 8, 4, 2, 2 (ranks 4, 3, 1.5, 1.5) against changes ranked 4, 3, 2, 1: 4.5 / sqrt(4.5 * 5).
    assert rhos["train_examples"].rho == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert findings[Condition(0.5, True)].correlations == []  # no change anywhere: rho undefined


def test_permutation_p_of_a_perfect_ranking_of_three():
    # 3 items: 2 of the 6 orderings reach |rho| = 1.
    assert permutation_p([1, 2, 3], [1, 2, 3], 1.0, permutations=3000) == pytest.approx(1 / 3, abs=0.03)


def test_gap_differences_by_hand(findings):
    gaps = findings[Condition(0.5, False)].gap_differences["chars"]
    # Dense gap 0 everywhere; sparse gap = clean share (perturbed all wrong), in every resample alike.
    assert {lang: e.value for lang, e in gaps.items()} == pytest.approx({"en": 1.0, "ru": 0.75, "id": 0.5, "sw": 0.0})
    assert gaps["en"].interval == pytest.approx((1.0, 1.0)) and gaps["en"].resolved
    assert gaps["sw"].interval == (0.0, 0.0) and not gaps["sw"].resolved


def test_results_without_item_answers_get_values_but_no_intervals():
    bare = [r.model_copy(update={"scores": [s.model_copy(update={"correct": None}) for s in r.scores]}) for r in results()]
    item = condition_findings(bare, permutations=10)[0]
    assert item.changes["ru"].value == pytest.approx(-0.25) and item.changes["ru"].interval is None
    assert item.levels["low"].interval is None and item.gap_differences["chars"]["en"].interval is None


# --------------------------------------------------------------------------- the report's tables


def _record(result: FinetuneResult, index: int) -> RunRecord:
    return RunRecord(key=f"ft{index:04d}", sweep="ogueji2022", kind="finetune", label=f"run {index}", config={},
                     state="done", finetune=result, environment=made.ENVIRONMENT, finished=f"2026-01-03T00:00:{index:02d}+00:00")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("findings")
    store = made.write_store(folder / "runs.sqlite", [_record(r, i) for i, r in enumerate(results())])
    return parse(write_report(store, folder / "out")).tables


TITLE = "e5-small on bible-genre (multilingual)"


def test_the_report_shows_the_hand_computed_findings(tables):
    summary = tables[f"findings {TITLE}"]
    assert [row[0][0] for row in summary["rows"]] == ["50%", "50% + embeddings"]
    kept = row_of(summary, "50%")
    assert kept[column(summary, "medium resource")][0].startswith("-25.0% [")
    assert kept[column(summary, "high resource")] == ("+0.0% [+0.0, +0.0] n.s.", "0.0", True)
    assert kept[column(summary, "rho with Joshi class")][0].startswith("+1.00 (p = 0.0")
    languages = tables[f"findings languages {TITLE}"]
    assert row_of(languages, "sw")[column(languages, "50%")][0] == "-100.0% [-100.0, -100.0]"
    assert row_of(languages, "sw")[column(languages, "50% + embeddings")][2]  # 0 change, interval [0, 0]: n.s.
    gaps = tables[f"findings gap chars {TITLE}"]
    assert row_of(gaps, "ru")[column(gaps, "50%")][0].startswith("+75.0 pt")


def test_the_report_splits_the_embedding_settings_and_shows_the_training_sizes(tables):
    assert len(tables[f"finetune {TITLE[:-1]}, embeddings kept)"]["rows"]) == 2  # dense and 50%
    assert len(tables[f"finetune {TITLE[:-1]}, embeddings pruned)"]["rows"]) == 2
    sizes = tables[f"finetune training sizes {TITLE}"]
    assert row_of(sizes, "sw")[2:] == [("3", "3.0", False), ("2", "2.0", False)]
