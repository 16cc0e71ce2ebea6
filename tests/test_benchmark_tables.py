"""The benchmarks' shared helpers: result-table header, atomic write, timing rule, keyed stage caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def git_repo(tmp_path, monkeypatch) -> Path:
    """A throwaway repository with src/ and benchmarks/, standing in for the project's."""
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    (repo / "src" / "code.py").write_text("x = 1\n")
    (repo / "benchmarks" / "bench.py").write_text("y = 1\n")
    (repo / "notes.md").write_text("notes\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "start")
    monkeypatch.setattr(_common, "REPO", repo)
    return repo


def test_header_holds_command_date_commit_and_machine(tmp_path):
    path = _common.write_result_table("speed", "Speed", "| a | b |\n|---|---|\n| 1 | 2 |", command="python benchmarks/x.py --runs 3",
                                      threads=1, directory=tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "speed.md"
    assert text.startswith("# Speed\n")
    assert "- command: `python benchmarks/x.py --runs 3`" in text
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCHMARKS, capture_output=True, text=True, check=True).stdout.strip()
    assert f"- commit: {head}" in text
    machine = next(line for line in text.splitlines() if line.startswith("- machine:"))
    assert f"CPUs {os.cpu_count()}" in machine
    assert "torch threads 1" in machine
    assert f"torch {torch.__version__}" in machine
    assert "platform " in machine
    assert "- date: 20" in text
    assert text.rstrip().endswith("| 1 | 2 |")


def test_header_reports_the_threads_in_use_when_none_are_given(tmp_path):
    text = _common.write_result_table("t", "T", "body", command="c", directory=tmp_path).read_text(encoding="utf-8")
    assert f"torch threads {torch.get_num_threads()}," in text


def test_default_command_is_this_process_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "prune_speed.py"), "--langs", "en,fr", "--note", "two words"])
    assert _common.invoked_command() == "python benchmarks/prune_speed.py --langs en,fr --note 'two words'"


def test_commit_is_marked_dirty_only_for_changes_under_src_or_benchmarks(git_repo):
    head = _git(git_repo, "rev-parse", "HEAD")
    assert _common.code_version() == head
    (git_repo / "notes.md").write_text("edited\n")
    assert _common.code_version() == head
    (git_repo / "benchmarks" / "bench.py").write_text("y = 2\n")
    assert _common.code_version() == head + "+dirty"


def test_source_fingerprint_follows_uncommitted_changes_under_src(git_repo):
    clean = _common.source_fingerprint()
    (git_repo / "notes.md").write_text("edited\n")
    assert _common.source_fingerprint() == clean
    (git_repo / "src" / "code.py").write_text("x = 2\n")
    edited = _common.source_fingerprint()
    assert edited != clean
    (git_repo / "src" / "new.py").write_text("z = 1\n")
    assert _common.source_fingerprint() not in (clean, edited)


def test_source_fingerprint_follows_content_not_commits_and_only_the_named_paths(git_repo):
    (git_repo / "src" / "part").mkdir()
    (git_repo / "src" / "part" / "a.py").write_text("a = 1\n")
    before_commit = _common.source_fingerprint()
    part_only = _common.source_fingerprint(("src/part",))
    _git(git_repo, "add", ".")
    _git(git_repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "more")
    assert _common.source_fingerprint() == before_commit  # the same code, now committed
    (git_repo / "src" / "code.py").write_text("x = 3\n")
    assert _common.source_fingerprint(("src/part",)) == part_only  # a change outside the named part
    assert _common.source_fingerprint() != before_commit


def test_failed_write_leaves_the_old_table_whole_and_no_partial_file(tmp_path, monkeypatch):
    old = _common.write_result_table("t", "Old", "old body", command="c", directory=tmp_path).read_text(encoding="utf-8")

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        _common.write_result_table("t", "New", "new body", command="c", directory=tmp_path)
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]


def test_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        _common.write_result_table("t", "T", "body", command="c", directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----- timing rule --------------------------------------------------------------------


def test_timed_median_warms_up_then_takes_the_median(monkeypatch):
    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 29.0])  # timed runs of 5, 1 and 9 seconds
    monkeypatch.setattr(_common.time, "perf_counter", lambda: next(clock))
    calls = []
    assert _common.timed_median(lambda: calls.append(1), repeats=3, warmup=2) == 5.0
    assert len(calls) == 5


def test_fewer_than_three_repeats_are_refused():
    with pytest.raises(ValueError, match="at least 3"):
        _common.timed_median(lambda: None, repeats=2)
    with pytest.raises(Exception, match="at least 3"):
        _common.repeats_arg("2")
    assert _common.repeats_arg("3") == 3


# ----- keyed stage caches ---------------------------------------------------------------


def test_cached_stage_reuses_a_stage_made_with_the_same_settings(tmp_path, capsys):
    runs = []
    fields = {"model": "e5-small", "steps": 100, "langs": "en,fr"}
    first = _common.cached_stage(tmp_path / "dynamic.json", fields, lambda: runs.append(1) or {"score": 0.5})
    again = _common.cached_stage(tmp_path / "dynamic.json", dict(fields), lambda: runs.append(1) or {"score": 0.9})
    assert runs == [1]
    assert again == first and again["score"] == 0.5
    assert "reusing" in capsys.readouterr().out


def test_cached_stage_reruns_and_says_so_when_a_setting_changed(tmp_path, capsys):
    path = tmp_path / "dynamic.json"
    _common.cached_stage(path, {"model": "e5-small", "steps": 100}, lambda: {"score": 0.5})
    result = _common.cached_stage(path, {"model": "e5-small", "steps": 200}, lambda: {"score": 0.7})
    assert result["score"] == 0.7
    out = capsys.readouterr().out
    assert "other settings" in out and "steps" in out and "rerunning" in out
    assert json.loads(path.read_text(encoding="utf-8"))["fields"]["steps"] == 200


def test_cached_stage_reruns_a_file_written_without_a_key(tmp_path, capsys):
    path = tmp_path / "separate-0.5.json"
    path.write_text(json.dumps({"scores": {"en": 0.1}}))
    assert _common.cached_stage(path, {"steps": 1}, lambda: {"scores": {"en": 0.2}})["scores"]["en"] == 0.2
    assert "no settings key" in capsys.readouterr().out


def test_keyed_folder_keeps_a_matching_folder_and_removes_another(tmp_path, capsys):
    folder = tmp_path / "sparsity0.50-seed0"
    _common.keyed_folder(folder, {"model": "e5-small", "max_eval": 14}, "run")
    (folder / "result.json").write_text("{}")
    _common.keyed_folder(folder, {"model": "e5-small", "max_eval": 14}, "run")
    assert (folder / "result.json").is_file()
    _common.keyed_folder(folder, {"model": "e5-small", "max_eval": 20}, "run")
    assert not (folder / "result.json").exists()
    assert json.loads((folder / "benchmark_key.json").read_text())["fields"]["max_eval"] == 20
    assert "max_eval" in capsys.readouterr().out


def test_header_names_both_commits_when_the_code_moved_during_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "_VERSION_AT_START", "0" * 40)
    text = _common.write_result_table("t", "T", "body", command="c", directory=tmp_path).read_text(encoding="utf-8")
    assert f"- commit: {'0' * 40} at start, {_common.code_version()} when written" in text


def test_prune_quality_recommends_cwl_only_where_an_allocation_can_vary_sparsity():
    import prune_quality

    # CWL moves sparsity between blocks; a 2:4 pattern fixes every row at half, so CWL cannot run there.
    assert prune_quality.recommended_for("50%") == "mwanda + cwl + refit"
    assert prune_quality.recommended_for("60%") == "mwanda + cwl + refit"
    assert prune_quality.recommended_for("2:4") == "mwanda + refit"
    assert not prune_quality.applies("mwanda + cwl + refit", "2:4")
    assert prune_quality.applies("mwanda + cwl + refit", "50%") and prune_quality.applies("mwanda + refit", "2:4")
