"""benchmarks/run_all.py: which scripts are benchmarks, their order, and a stop at the first failure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import run_all  # noqa: E402


def _script(folder: Path, name: str, marker: str | None, body: str = "") -> Path:
    path = folder / f"{name}.py"
    path.write_text((f"BENCHMARK = {marker}\n" if marker else "") + body, encoding="utf-8")
    return path


def test_discover_orders_marked_scripts_by_estimate_and_lists_the_others(tmp_path):
    _script(tmp_path, "slow", '{"minutes": 30}')
    _script(tmp_path, "fast", '{"minutes": 2, "args": ["--threads", "1"]}')
    _script(tmp_path, "helper", None, "X = 1\n")
    _script(tmp_path, "_private", '{"minutes": 1}')
    found, unmarked = run_all.discover(tmp_path)
    assert [(b.name, b.minutes, b.args) for b in found] == [("fast", 2.0, ("--threads", "1")), ("slow", 30.0, ())]
    assert unmarked == ["helper"]


def test_a_marker_without_minutes_is_an_error(tmp_path):
    _script(tmp_path, "bad", '{"args": []}')
    with pytest.raises(SystemExit, match="minutes"):
        run_all.discover(tmp_path)


def test_every_existing_benchmark_script_carries_the_marker():
    found, _ = run_all.discover()
    names = {b.name for b in found}
    assert {"eval_throughput", "finetune_throughput", "prune_speed", "prune_quality", "mwanda_sweep",
            "structured_speed", "dynamic_vs_separate", "finetune_experiment", "dense_quality", "bf16_cost",
            "scale"} <= names


def test_select_filters_by_name_and_budget(tmp_path):
    _script(tmp_path, "a", '{"minutes": 1}')
    _script(tmp_path, "b", '{"minutes": 5}')
    _script(tmp_path, "c", '{"minutes": 50}')
    found, _ = run_all.discover(tmp_path)
    assert [b.name for b in run_all.select(found, "", "b", None)] == ["a", "c"]
    assert [b.name for b in run_all.select(found, "b,c", "", 10)] == ["b"]
    with pytest.raises(SystemExit, match="unknown"):
        run_all.select(found, "nope", "", None)


def test_a_failing_benchmark_stops_with_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    ok = run_all.Benchmark("ok", _script(tmp_path, "ok", '{"minutes": 1}', "print('fine')\n"), 1.0)
    broken = run_all.Benchmark("broken", _script(tmp_path, "broken", '{"minutes": 1}', "raise SystemExit(3)\n"), 1.0)
    assert run_all.run(ok) >= 0
    with pytest.raises(SystemExit, match=r"benchmark broken failed \(exit code 3\)"):
        run_all.run(broken)


def test_a_benchmark_that_needs_cuda_is_skipped_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    _script(tmp_path, "gpu", '{"minutes": 1, "needs": "cuda"}', "raise SystemExit(3)\n")
    (benchmark,) = run_all.discover(tmp_path)[0]
    assert benchmark.needs == "cuda"
    monkeypatch.setattr(run_all, "cuda_available", lambda: False)
    assert run_all.run(benchmark) == 0.0  # skipped: the failing script never ran
    monkeypatch.setattr(run_all, "cuda_available", lambda: True)
    with pytest.raises(SystemExit, match=r"benchmark gpu failed \(exit code 3\)"):
        run_all.run(benchmark)
