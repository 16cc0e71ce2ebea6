"""Output paths are checked when a command starts: one sentence, exit 2, before any model is loaded, nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from babelprune.errors import BabelpruneError
from babelprune.outputs import check_output_file, check_output_folder
from tests.cli_runner import run_cli
from tests.test_compare import lm_result


class ModelLoaded(Exception):
    """Raised in place of loading a model: a command that gets this far did not refuse its outputs first."""


@pytest.fixture
def no_loading(monkeypatch):
    """Every way a command loads a model raises ModelLoaded instead."""
    import babelprune.api as api
    from babelprune.finetune import dynamic as dynamic_training  # not "babelprune.prune...": that name is the prune verb

    def refuse(*args, **kwargs):
        raise ModelLoaded(args[0] if args else "")

    for name in ("load_model", "calibrate", "export_gguf"):
        monkeypatch.setattr(api, name, refuse)
    monkeypatch.setattr(dynamic_training, "slice_width", refuse)
    return refuse


def read_only_folder(tmp_path: Path) -> Path:
    """A folder the current user cannot create entries in (root is refused only by a read-only file system)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    pytest.skip("no read-only folder to test with")


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# ----- the rules, one by one -----------------------------------------------------------


@pytest.mark.parametrize(("name", "words"), [("", "names no file"), (".", "names no file"), ("..", "names no file"),
                                             ("a\nb.json", "control character"), ("a\x1b[31m.json", "control character")])
def test_a_name_that_names_nothing_or_holds_control_characters_is_refused(tmp_path, name, words):
    with pytest.raises(BabelpruneError, match=words):
        check_output_file(name, "--out", (".json",))


def test_a_file_output_with_the_wrong_suffix_names_the_right_ones(tmp_path):
    with pytest.raises(BabelpruneError) as info:
        check_output_file(tmp_path / "c.txt", "--chart", (".png", ".svg", ".pdf"))
    assert "does not end in .png, .svg or .pdf" in str(info.value)
    assert check_output_file(tmp_path / "c.PNG", "--chart", (".png",)) == tmp_path / "c.PNG"  # case does not matter


def test_a_folder_where_a_file_is_expected_and_the_reverse(tmp_path):
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BabelpruneError, match="is a folder, but this output is a file"):
        check_output_file(tmp_path / "dir.json", "--out", (".json",))
    with pytest.raises(BabelpruneError, match="is a file, but this output is a folder"):
        check_output_folder(tmp_path / "file", "--out")


def test_an_existing_output_is_replaced_only_with_overwrite_and_only_when_babelprune_wrote_it(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("mine")
    ours = lambda path: path.read_text() == "ours"  # noqa: E731
    with pytest.raises(BabelpruneError, match="exists; choose another --out, remove it, or give --overwrite"):
        check_output_file(target, "--out", (".json",), recognise=ours)
    with pytest.raises(BabelpruneError, match="is not a file written by babelprune, so --overwrite leaves it alone"):
        check_output_file(target, "--out", (".json",), overwrite=True, recognise=ours)
    target.write_text("ours")
    assert check_output_file(target, "--out", (".json",), overwrite=True, recognise=ours) == target
    with pytest.raises(BabelpruneError, match="exists; choose another --out or remove it"):  # no --overwrite offered
        check_output_file(target, "--out", (".json",))


def test_a_parent_that_is_a_file_or_read_only_is_refused_and_missing_parents_are_left_to_the_writer(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(BabelpruneError, match="which is a file, not a folder"):
        check_output_file(tmp_path / "plain" / "deeper" / "r.json", "--out", (".json",))
    locked = read_only_folder(tmp_path)
    with pytest.raises(BabelpruneError, match=r"cannot be written to \(read-only\)"):
        check_output_folder(locked / "new-model", "--out")
    with pytest.raises(BabelpruneError, match=r"cannot be written to \(read-only\)"):
        check_output_file(locked / "missing" / "r.json", "--out", (".json",))
    assert check_output_file(tmp_path / "a" / "b" / "r.json", "--out", (".json",)) == tmp_path / "a" / "b" / "r.json"
    assert not (tmp_path / "a").exists()  # the check creates nothing


# ----- every command checks before it loads anything ---------------------------------------


def _command_outputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    """(arguments, words of the refusal) for one output mistake of each command that writes."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "plain").write_text("x")
    dense = tmp_path / "dense.json"
    lm_result({"en": 2.0}).save(dense)
    return [
        (["eval", "--out", str(tmp_path / "taken")], "is a folder"),
        (["eval", "--out", str(tmp_path / "r.txt")], "does not end in .json"),
        (["eval", "--out", str(tmp_path / "plain" / "r.json")], "which is a file, not a folder"),
        (["prune", "--out", str(tmp_path / "taken")], "exists"),
        (["prune", "--out", str(tmp_path / "plain")], "is a file, but this output is a folder"),
        (["prune", "--out", ""], "names no file or folder"),
        (["compare", str(dense), str(dense), "--chart", str(tmp_path / "c.txt")], "does not end in .png, .svg or .pdf"),
        (["report", str(tmp_path / "no.sqlite"), "--out", str(tmp_path / "plain")], "is a file, but this output is a folder"),
        (["bench-speed", "gemma3-270m", "--json", str(tmp_path / "taken")], "is a folder"),
        (["bench-speed", "gemma3-270m", "--json", str(tmp_path / "s.csv")], "does not end in .json"),
        (["train-dynamic", "--out", str(tmp_path / "taken")], "exists"),
        (["slice", str(tmp_path), "--out", str(tmp_path / "taken")], "exists"),
        (["trim-vocab", "--out", str(tmp_path / "plain" / "x")], "which is a file, not a folder"),
        (["export", "gemma3-270m", "--out", str(tmp_path / "m.bin")], "does not end in .gguf"),
        (["export", "gemma3-270m", "--out", str(tmp_path / "plain")], "does not end in .gguf"),
        (["demo", "--out", str(tmp_path / "plain")], "is a file, but this output is a folder"),
        (["demo", "--out", str(tmp_path / "rep"), "--store", str(tmp_path / "s.json")], "does not end in .sqlite"),
    ]


def test_every_command_refuses_a_bad_output_in_one_sentence_before_loading_anything(monkeypatch, capsys, tmp_path, no_loading):
    for args, words in _command_outputs(tmp_path):
        before = listing(tmp_path)
        code, out, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2, (args, out, err)
        assert words in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert listing(tmp_path) == before, args


# ----- existing outputs: --overwrite replaces only babelprune's own ---------------------------


def test_eval_out_refuses_a_users_file_and_overwrites_its_own_result_only_when_asked(monkeypatch, capsys, tmp_path, no_loading):
    users = tmp_path / "notes.json"
    users.write_text('{"mine": true}')
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--out", str(users))
    assert code == 2 and "exists" in err and "--overwrite" in err
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--out", str(users), "--overwrite")
    assert code == 2 and "is not a file written by `babelprune eval`" in err
    assert users.read_text() == '{"mine": true}'
    ours = tmp_path / "result.json"
    lm_result({"en": 2.0}).save(ours)
    with pytest.raises(ModelLoaded):  # accepted: the command goes on to load the model
        run_cli(monkeypatch, capsys, "eval", "--out", str(ours), "--overwrite")


def test_compare_chart_creates_its_folder_and_replaces_only_a_chart_it_drew(monkeypatch, capsys, tmp_path):
    dense, pruned = tmp_path / "dense.json", tmp_path / "pruned.json"
    lm_result({"en": 2.0, "fr": 2.5, "sw": 3.0}).save(dense)
    lm_result({"en": 2.2, "fr": 2.6, "sw": 3.6}, method="wanda").save(pruned)
    chart = tmp_path / "new" / "folder" / "chart.png"
    code, out, err = run_cli(monkeypatch, capsys, "compare", str(dense), str(pruned), "--chart", str(chart))
    assert code == 0, err
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert not [p for p in chart.parent.iterdir() if p.name != "chart.png"]  # no temporary left beside it
    first = chart.stat().st_mtime_ns
    code, _, err = run_cli(monkeypatch, capsys, "compare", str(dense), str(pruned), "--chart", str(chart))
    assert code == 2 and "exists" in err
    code, _, err = run_cli(monkeypatch, capsys, "compare", str(dense), str(pruned), "--chart", str(chart), "--overwrite")
    assert code == 0 and chart.stat().st_mtime_ns >= first
    other = tmp_path / "photo.png"
    other.write_bytes(b"\x89PNG\r\n\x1a\n not drawn by babelprune")
    code, _, err = run_cli(monkeypatch, capsys, "compare", str(dense), str(pruned), "--chart", str(other), "--overwrite")
    assert code == 2 and "is not a file written by `babelprune compare`" in err
    assert other.read_bytes().endswith(b"not drawn by babelprune")


def test_bench_speed_json_is_recognised_by_its_fields(tmp_path):
    from babelprune.evaluate.speed import SpeedReport, is_speed_reports_file

    fields = {name: 0 for name in SpeedReport.model_fields}
    ours, theirs, empty = tmp_path / "ours.json", tmp_path / "theirs.json", tmp_path / "empty.json"
    ours.write_text(json.dumps([fields, fields]))
    theirs.write_text(json.dumps([{"spec": "x", "latency": 1}]))
    empty.write_text("[]")
    assert is_speed_reports_file(ours)
    assert not is_speed_reports_file(theirs) and not is_speed_reports_file(empty)


def test_eval_results_are_recognised_by_their_fields(tmp_path):
    from babelprune.report.records import is_eval_result_file

    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    lm_result({"en": 2.0}).save(ours)
    theirs.write_text(json.dumps({"model": "x", "scores": []}))
    assert is_eval_result_file(ours) and not is_eval_result_file(theirs)


def test_a_partial_left_by_a_killed_run_is_removed_by_the_next_write_and_said_in_one_note(monkeypatch, capsys, tmp_path):
    import subprocess

    from babelprune.cache import _host_tag

    dead_pid = subprocess.Popen(["true"])  # its pid names no process once it has ended
    dead_pid.wait()
    dense, pruned = tmp_path / "dense.json", tmp_path / "pruned.json"
    lm_result({"en": 2.0, "fr": 2.5}).save(dense)
    lm_result({"en": 2.2, "fr": 2.6}, method="wanda").save(pruned)
    chart = tmp_path / "chart.png"
    debris = tmp_path / f".chart.png.partial-{dead_pid.pid}-{_host_tag()}-abcd1234"
    debris.write_bytes(b"\0" * 2048)
    code, out, err = run_cli(monkeypatch, capsys, "compare", str(dense), str(pruned), "--chart", str(chart))
    assert code == 0, err
    assert not debris.exists() and chart.is_file()
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and debris.name in notes[0] and "interrupted run" in notes[0]
