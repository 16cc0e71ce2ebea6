"""Every option with a fixed set of values is a real choice, and every bad value ends in one line.

The walk reads the commands' own annotations, so an option added later is
checked without touching this file.
"""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path

import pytest
import typer

from babelprune import cli
from babelprune.choices import StructuredUnit
from tests.cli_runner import run_cli

# Options whose values come from a fixed set: each must be annotated as a Literal, or take its values
# from a registry when the command runs (cli.RegistryChoices: --method, from the method registry).
CHOICE_OPTIONS = {"method", "allocation", "setting", "order", "save_format", "importance", "gqa", "ranking", "split",
                  "mode", "gmp_scope"}


def _command_infos(app: typer.Typer, prefix: tuple[str, ...] = ()):
    """(command words, typer's CommandInfo) of every command, sub-apps included."""
    for info in app.registered_commands:
        yield prefix + (info.name or info.callback.__name__.replace("_", "-"),), info
    for group in app.registered_groups:
        yield from _command_infos(group.typer_instance, prefix + (group.name,))


def _commands(app: typer.Typer):
    """(command words, callback) of every command, sub-apps included."""
    for words, info in _command_infos(app):
        yield words, info.callback


COMMAND_INFOS = dict(_command_infos(cli.app))


def _literal_values(annotation) -> tuple[str, ...] | None:
    """The values of a Literal annotation (through Annotated and Optional), None for other types."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None


def _choice_values(words, name, annotation) -> tuple[str, ...] | None:
    """The values an option accepts: a registry-backed option's names registered now, else its Literal's."""
    cls = COMMAND_INFOS[words].cls
    if cls is not None and issubclass(cls, cli.RegistryChoices) and name in cls.CHOICES:
        return cls.CHOICES[name]()
    return _literal_values(annotation)


def _parameters(callback):
    """name -> (annotation, typer info, flag) of a command's parameters."""
    hints = typing.get_type_hints(callback, include_extras=True)
    result = {}
    for name, parameter in inspect.signature(callback).parameters.items():
        annotation = hints[name]
        info = next(m for m in typing.get_args(annotation)[1:] if isinstance(m, (typer.models.OptionInfo, typer.models.ArgumentInfo)))
        # typer.Option("--format") keeps the flag as its first argument (in `default`) when annotated.
        decls = [*(info.param_decls or ()), *([info.default] if isinstance(info.default, str) else [])]
        declared = [d for d in decls if d.startswith("--")]
        flag = declared[0] if declared else "--" + name.replace("_", "-")
        result[name] = (annotation, info, flag, parameter.default)
    return result


def _placeholders(params, workdir: Path) -> list[str]:
    """Values for the required parameters, so that parsing reaches the option under test."""
    args: list[str] = []
    for name, (annotation, info, flag, default) in params.items():
        if default is not inspect.Parameter.empty:
            continue
        value = str(workdir / f"placeholder-{name}")
        args += [value] if isinstance(info, typer.models.ArgumentInfo) else [flag, value]
    return args


CHOICES = [
    (words, name, flag)
    for words, callback in _commands(cli.app)
    for name, (annotation, _, flag, _) in _parameters(callback).items()
    if _choice_values(words, name, annotation)
]


def test_the_walk_finds_the_choice_options():
    found = {(words[-1], name) for words, name, _ in CHOICES}
    for expected in [("prune", "method"), ("prune", "allocation"), ("prune", "setting"), ("prune", "order"),
                     ("prune", "save_format"), ("eval", "split"), ("train-dynamic", "importance")]:
        assert expected in found


@pytest.mark.parametrize("words", [words for words, _ in _commands(cli.app)], ids=" ".join)
def test_fixed_value_options_are_literal_choices(words):
    callback = dict(_commands(cli.app))[words]
    for name, (annotation, *_rest) in _parameters(callback).items():
        if name in CHOICE_OPTIONS:
            assert _choice_values(words, name, annotation), \
                f"{' '.join(words)} --{name} takes fixed values but is neither a Literal nor registry-backed"


@pytest.mark.parametrize(("words", "name", "flag"), CHOICES, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_a_bad_choice_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, words, name, flag):
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    params = _parameters(dict(_commands(cli.app))[words])
    code, out, err = run_cli(monkeypatch, capsys, *words, *_placeholders(params, workdir), flag, "NO-SUCH-VALUE")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    assert flag in lines[0] and "'NO-SUCH-VALUE'" in lines[0]
    for value in _choice_values(words, name, params[name][0]):
        assert repr(value) in lines[0]  # the line lists what would have been accepted
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--calib-batch", "0"], "'--calib-batch' (0)"),
        (["--alpha", "-1"], "'--alpha' (-1.0)"),
        (["--beta", "-2"], "'--beta' (-2.0)"),
        (["--sparsity", "1.5"], "outside [0, 1)"),
        (["--pattern", "2:3x"], "Unknown sparsity pattern '2:3x'"),
        (["--pattern", "4:2"], "N >= M"),
        (["--structured", "heads,necks"], "'necks'"),
        (["--structured", ","], "heads, ffn, blocks"),
        (["--reconstruct", "--setting", "per-language"], "per-language setting keeps one set of dense weights"),
        (["--reconstruct", "--refit-shrink", "2"], "'--refit-shrink' (2.0)"),
        (["--reconstruct", "--refit-damp", "0"], "'--refit-damp' (0.0)"),
        (["--language-weights", "sw=0"], "must be positive"),
        (["--language-weights", "sw"], "write them as sw=2,en=1"),
        (["--language-weights", "sw=2", "--balance", "tokens"], "needs --balance languages"),
        (["--language-budget", "minimax", "--calib-langs", "en"], "at least two"),
    ],
)
def test_config_rules_end_in_one_sentence(monkeypatch, capsys, tmp_path, args, expected):
    out = tmp_path / "pruned"
    code, _, err = run_cli(monkeypatch, capsys, "prune", "--model", "no-such-model", "--out", str(out), *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert expected in lines[0]
    assert not out.exists()


def test_cli_method_choices_are_the_registered_methods(monkeypatch, capsys):
    # What --help shows, not what the annotation says: --method is a plain str that gets its choices
    # from the registry when the command runs.
    from babelprune.prune.methods import METHODS

    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_cli(monkeypatch, capsys, "prune", "--help")
    assert code == 0
    assert "<" + "|".join(METHODS) + ">" in out


def test_cli_choices_match_the_library_configs():
    from babelprune.models.layouts import GqaMode
    from babelprune.prune.structured import ImportanceName
    from babelprune.prune.structured.selection import Ranking

    from babelprune import choices

    assert typing.get_args(choices.StructuredImportance) == typing.get_args(ImportanceName)
    assert set(typing.get_args(choices.Ranking)) == set(typing.get_args(Ranking))
    assert set(typing.get_args(choices.GqaMode)) == set(typing.get_args(GqaMode))
    assert set(typing.get_args(StructuredUnit)) == {"heads", "ffn", "blocks"}


def test_help_lists_the_values(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")  # wide enough that no value is wrapped across lines
    monkeypatch.setattr(sys, "argv", ["babelprune", "prune", "--help"])
    cli.main()
    text = capsys.readouterr().out
    for value in ("uniform", "owl", "cwl", "one-pass", "two-pass", "per-language", "sparsegpt"):
        assert value in text
