"""benchmarks/recipe_results.py: a recipe's time from its store's records, pauses left out."""

from __future__ import annotations

import statistics
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


def _l0_result(setting: str, gates: dict[str, dict], steps: int = 40):
    from babelprune.report.task_prune_records import ModelScores, TaskPruneResult

    dense = ModelScores(name="dense", languages=[], parameters=10, block_parameters=8, sparsity=0.0,
                        items_per_second=1.0, eval_seconds=1.0)
    return TaskPruneResult(kind="task-structured", task="t", units=["ffn"], importance="l0", setting=setting,
                           ranking="global", target_sparsity=0.5, dense=dense, models=[], steps={"joint_l0": steps}, l0=gates)


def _gates(expected: float, gate_share: float, closed: int, kept: int, removed: int) -> dict:
    return {"expected_sparsity_last": expected, "gate_sparsity": gate_share, "closed_units": closed,
            "closed_kept": kept, "removed_units": removed}


def test_l0_gates_table_by_hand():
    shared = _l0_result("shared", {"shared": _gates(0.42, 0.26, 30, 0, 100)})
    # two languages: 10 of 40 and 30 of 60 removed units were closed by the gates (5 closed ones kept back) -> 40 of 100
    per_language = _l0_result("per-language", {"en": _gates(0.2, 0.1, 10, 0, 40), "sw": _gates(0.4, 0.3, 35, 5, 60)})
    text = recipe_results.l0_gates_markdown([shared, per_language])
    assert "for 40 steps" in text
    assert "| ffn per-language 50% | 0.300 | 0.200 | 40% |" in text
    assert "| ffn shared 50% | 0.420 | 0.260 | 30% |" in text
    assert recipe_results.l0_gates_markdown([]) == ""


def test_commits_are_compared_on_the_package_code_only(tmp_path):
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "src").mkdir()
    commits = []
    for name, text in (("src/code.py", "a = 1\n"), ("docs.md", "more\n"), ("src/code.py", "a = 2\n")):
        (tmp_path / name).write_text(text)
        git("add", "-A")
        git("commit", "-qm", name)
        commits.append(git("rev-parse", "HEAD"))
    first, docs_only, changed = commits
    assert "same at all of them" in recipe_results.same_code([first, docs_only], repo=tmp_path)
    assert "differs between them" in recipe_results.same_code([first, docs_only, changed], repo=tmp_path)
    assert "not known" in recipe_results.same_code([first, "0" * 40], repo=tmp_path)
    assert "not known" in recipe_results.same_code([first, docs_only + "+dirty"], repo=tmp_path)


def _oneshot(key: str, factors: dict[str, float], **prune) -> RunRecord:
    from tests import report_store as made

    # as a store holds it: the allocation written out (mwanda's default, CWL, is a variant in these tables)
    verb = {"method": "mwanda", "sparsity": 0.5, "allocation": "uniform", **prune}
    return RunRecord(key=key, sweep="r", kind="oneshot", label=key, config={"verb": verb}, state="done",
                     evaluations={"bible": made.eval_result(lambda lang: made.pruned_nll(lang, factors))})


def test_mwanda_and_its_ablation_against_wanda_by_hand():
    from tests import report_store as made

    def mean_increase(factors):  # every window's NLL times a factor: bits per byte rise by (factor - 1) x dense
        dense = {lang: made.bits_per_byte(made.DENSE_NLL[lang]) for lang in made.DENSE_NLL}
        return statistics.fmean(made.bits_per_byte(made.pruned_nll(lang, factors)) - dense[lang] for lang in dense)

    wanda = {"fr": 1.10, "sw": 1.30, "yo": 1.40}
    plain = {"fr": 1.08, "sw": 1.20, "yo": 1.25}
    with_ap = {"fr": 1.09, "sw": 1.25, "yo": 1.35}
    records = [made.dense_record(), _oneshot("w", wanda, method="wanda"), _oneshot("m", plain),
               _oneshot("ap", with_ap, mwanda={"activation_prob": True})]
    text = recipe_results.oneshot_markdown(records)
    main, ablation = text.split("### mwanda's ablation")
    assert f"| 50% | bible | wanda | {mean_increase(plain):+.4f} | {mean_increase(wanda):+.4f} |" in main
    assert "activation probability" not in main  # the variant is not the default M-Wanda
    assert (f"| 50%, mwanda + activation probability | bible | mwanda (uniform) | {mean_increase(with_ap):+.4f} | "
            f"{mean_increase(plain):+.4f} |") in ablation
    assert f"| 50%, mwanda + activation probability | bible | wanda | {mean_increase(with_ap):+.4f} |" in ablation
