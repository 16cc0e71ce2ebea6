"""benchmarks/recipe_results.py: a recipe's time from its store's records, pauses left out."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import recipe_results  # noqa: E402
from babelprune.sweep.store import RunRecord  # noqa: E402


def _record(key: str, started: str, finished: str, seconds: float, state: str = "done") -> RunRecord:
    return RunRecord(key=key, sweep="r", kind="finetune", label=f"run {key}", config={}, state=state,
                     started=f"2026-01-01T{started}+00:00", finished=f"2026-01-01T{finished}+00:00", seconds=seconds)


def test_recipe_time_by_hand():
    records = [
        _record("a", "10:00:00", "10:01:40", 100),
        _record("b", "10:01:50", "10:03:30", 100),  # 10 s of the sweep's own time before it
        _record("c", "10:30:00", "10:31:00", 60, state="failed"),  # after a pause of 26 min 30 s
        _record("other", "11:00:00", "11:01:00", 60),  # not a run of this recipe
    ]
    took = recipe_results.recipe_time({"a", "b", "c", "d"}, records)
    assert (took.planned, took.done, took.failed, took.missing) == (4, 2, 1, 1)
    assert took.run_seconds == 260
    assert took.span == 31 * 60  # 10:00:00 to 10:31:00
    assert took.pauses == [26 * 60 + 30]
    assert took.sweep_seconds == 31 * 60 - (26 * 60 + 30)  # 270 s: the runs' 260 and 10 between them
    assert took.longest.key in ("a", "b")


def test_recipe_time_of_an_empty_store():
    took = recipe_results.recipe_time({"a"}, [])
    assert (took.done, took.missing, took.span, took.longest) == (0, 1, 0.0, None)


def test_an_unknown_recipe_or_a_missing_store_is_one_sentence(monkeypatch, tmp_path):
    import pytest

    monkeypatch.setattr(sys, "argv", ["recipe_results.py", "--recipe", "li2022", "--store", str(tmp_path / "none.sqlite")])
    with pytest.raises(SystemExit, match=r"^error: No results store at .*none\.sqlite; give the --store"):
        recipe_results.main()
    assert list(tmp_path.iterdir()) == []  # nothing created
