"""Every command, every option, hostile values: one sentence, exit 2, no traceback, nothing written.

The table below is derived from the command line itself (typer's click
commands), so a new command or option is driven without editing this file.
Each value goes into an otherwise valid invocation; the functions where a
command's real work starts (loading a model, running a sweep, fetching a
corpus) are replaced by one that raises `WorkStarted`, so the test sees
whether a value was refused up front or let through to the work.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

import pytest
from typer.models import ArgumentInfo, OptionInfo

from babelprune import cli
from tests.cli_runner import run_cli
from tests.sweep_fixtures import experiment, write_experiment, write_tiny_corpus
from tests.test_compare import lm_result


class WorkStarted(Exception):
    """The command accepted its arguments and began its real work."""


# Where each command's real work starts (module, attribute): replaced by `WorkStarted` (finetune-sweep checks its
# model and task while planning, and starts its work in run_local, as a sweep does). A model's name
# is still checked for real (load_model runs up to reading the weights).
WORK = [
    ("babelprune.formats.loading", "load_hf_model"), ("babelprune.api", "calibrate"), ("babelprune.api", "export_gguf"),
    ("babelprune.prune.offload", "open_offloaded"), ("babelprune.finetune.dynamic", "slice_width"),
    ("babelprune.finetune.trainer", "finetune"),
    ("babelprune.demo", "run_demo"), ("babelprune.sweep.local", "run_local"), ("babelprune.sweep.ray_backend", "run_ray"),
    ("babelprune.data.udhr", "fetch_udhr"),
]

# Hostile values by the option's type. None of them is a sensible value for any option.
HOSTILE_TEXT = ["", " ", "[/x]", "../../escaped", "/escaped/absolute", "a\x00b", "a\nb", "\x1b[31m", ",,", "x" * 300]
HOSTILE_INT = ["", "abc", "1.5", "-7", "99999999999999999999999"]
HOSTILE_FLOAT = ["", "abc", "nan", "inf", "-inf", "-7", "1e309"]
# A path elsewhere ('../x', '[/x]') is a valid place for an output the user names, so paths get only broken ones.
HOSTILE_PATH = ["", "a\x00b", "/proc/sys/escaped/x"]

# Valid invocations of each command ({tmp} is the test's folder); a hostile value replaces one option of them.
BASE = {
    "models": [], "tasks": [], "recipes": [],
    "eval": ["--out", "{tmp}/r.json"],
    "prune": ["--out", "{tmp}/pruned"],
    "compare": ["{tmp}/dense.json", "{tmp}/dense.json"],
    "report": ["{tmp}/store.sqlite", "--out", "{tmp}/report"],
    "bench-speed": ["gemma3-270m"],
    "finetune": ["--out", "{tmp}/ft"],
    "finetune-sweep": ["--out", "{tmp}/fts"],
    "train-dynamic": ["--out", "{tmp}/dyn"],
    "slice": ["{tmp}/dynamic-model", "--out", "{tmp}/sliced"],
    "trim-vocab": ["--out", "{tmp}/trimmed"],
    "export": ["gemma3-270m", "--out", "{tmp}/m.gguf"],
    "shrink": ["--out", "{tmp}/shrunk", "--langs", "en,fr", "--budget", "2%"],
    "demo": ["--out", "{tmp}/demo"],
    "sweep": ["{tmp}/experiment.yaml", "--store", "{tmp}/s.sqlite"],
    "runs": ["{tmp}/store.sqlite"],
    "data fetch": ["udhr"],
    "data list": ["bible"],
}

# (command, parameter, value) that a command may accept: the value is a valid one for that option.
ACCEPTED: set[tuple[str, str, str]] = set()  # none today: every value above is refused by every option


@dataclass(frozen=True)
class Param:
    """One parameter of a command, read off its function's signature: name, flag, Python type, argument or option."""

    name: str
    flag: str | None  # None for a positional argument
    kind: object  # the Python type with Optional/list/Annotated removed
    position: int  # among the command's arguments


@dataclass(frozen=True)
class Command:
    name: str  # as typed: "eval", "data list"
    params: tuple[Param, ...]


def _bare(hint) -> object:
    """int for Optional[int], Path for list[Path], a Literal or Enum as itself."""
    while get_origin(hint) in (Union, UnionType, list):
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    return hint


def _command(name: str, function) -> Command:
    hints = get_type_hints(function, include_extras=True)
    params, arguments = [], 0
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints[parameter.name]
        info = next((m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, (OptionInfo, ArgumentInfo))), None)
        kind = _bare(get_args(annotation)[0] if info is not None else annotation)
        if isinstance(info, ArgumentInfo):
            params.append(Param(parameter.name, None, kind, arguments))
            arguments += 1
        else:
            declared = [d for d in (info.param_decls or ()) if d.startswith("--")] if info is not None else []
            flag = declared[0].split("/")[0] if declared else "--" + parameter.name.replace("_", "-")
            params.append(Param(parameter.name, flag, kind, -1))
    return Command(name, tuple(params))


def commands() -> dict[str, Command]:
    """Every command of the command line by its name as typed ('data list' for a subcommand)."""
    found = {}
    for info in cli.app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        found[name] = _command(name, info.callback)
    for group in cli.app.registered_groups:
        for info in group.typer_instance.registered_commands:
            name = f"{group.name} {info.name or info.callback.__name__}"
            found[name] = _command(name, info.callback)
    return found


def hostile_values(param: Param) -> list[str]:
    kind = param.kind
    if kind is bool:
        return []  # a flag takes no value
    if get_origin(kind) is Literal or (isinstance(kind, type) and issubclass(kind, Enum)):
        return ["", "nope", "[/x]"]
    return {int: HOSTILE_INT, float: HOSTILE_FLOAT, Path: HOSTILE_PATH, str: HOSTILE_TEXT}[kind]


def cases() -> list[tuple[str, str, str]]:
    found = []
    for name, command in commands().items():
        assert name in BASE, f"add a valid invocation of `babelprune {name}` to BASE"
        found += [(name, param.name, value) for param in command.params for value in hostile_values(param)]
    return found


def invocation(command: Command, param_name: str, value: str, tmp: Path) -> list[str]:
    """BASE[command] with `param_name` set to `value` (an argument replaces the base's positional at its place)."""
    base = [part.replace("{tmp}", str(tmp)) for part in BASE[command.name]]
    param = next(p for p in command.params if p.name == param_name)
    if param.flag is None:
        flagged = {index for index, part in enumerate(base) if part.startswith("--")}
        positions = [i for i in range(len(base)) if i not in flagged and i - 1 not in flagged]
        if param.position < len(positions):
            base[positions[param.position]] = value
        else:
            base.insert(positions[-1] + 1 if positions else 0, value)
    elif param.flag in base:
        base[base.index(param.flag) + 1] = value
    else:
        base += [param.flag, value]
    return [*command.name.split(), *base]


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    import importlib

    def started(*args, **kwargs):
        raise WorkStarted()

    for module, attribute in WORK:
        monkeypatch.setattr(importlib.import_module(module), attribute, started)
    from babelprune.formats.loading import ALIASES

    for alias, (description, _) in ALIASES.items():  # converting a built-in model is work too
        monkeypatch.setitem(ALIASES, alias, (description, started))
    # The commands run two folders below the watched one, so that '../../escaped' lands where the test looks.
    work = tmp_path / "outer" / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("BABELPRUNE_CACHE", str(work / "cache"))
    monkeypatch.chdir(work)
    lm_result({"en": 2.0}).save(work / "dense.json")
    corpus = write_tiny_corpus(work / "corpus.jsonl")
    write_experiment(work / "experiment.yaml", experiment(Path("gemma3-270m"), corpus, [{"kind": "dense"}]))
    (work / "dynamic-model").mkdir()  # what `slice` reads before any weights: the dynamic model's record
    (work / "dynamic-model" / "babelprune_dynamic.json").write_text('{"levels": [0.5], "units": ["ffn"]}')
    return work


def test_every_command_has_a_valid_base_invocation_that_reaches_its_work(monkeypatch, capsys, sandbox):
    """The table is only as good as its bases: each one must be accepted (or finish) when nothing is hostile."""
    for name, command in commands().items():
        args = [*name.split(), *[part.replace("{tmp}", str(sandbox)) for part in BASE[name]]]
        try:
            code, out, err = run_cli(monkeypatch, capsys, *args)
        except WorkStarted:
            continue
        if name in ("report", "runs"):  # no store at the base path: refused, but only for that
            assert code == 2 and "store.sqlite" in err, (name, err)
            continue
        assert code == 0, (name, err)


def test_hostile_values_in_every_option_end_in_one_sentence_and_write_nothing(monkeypatch, capsys, sandbox):
    table = commands()
    watched = sandbox.parent.parent
    failures, accepted = [], []
    for name, param_name, value in cases():
        args = invocation(table[name], param_name, value, sandbox)
        before = listing(watched)
        try:
            code, out, err = run_cli(monkeypatch, capsys, *args)
        except WorkStarted:
            capsys.readouterr()
            if (name, param_name, value) not in ACCEPTED:
                accepted.append((name, param_name, value))
            continue
        except BaseException as error:  # noqa: BLE001 - anything else escaping is what this test looks for
            failures.append((name, param_name, value, f"escaped: {type(error).__name__}: {error}"))
            continue
        lines = [line for line in err.splitlines() if line.strip()]
        if code == 0:  # a command with no work to stop (compare, data list) finished: the value was accepted
            if (name, param_name, value) not in ACCEPTED:
                accepted.append((name, param_name, value))
        elif code != 2 or len(lines) != 1 or "Traceback" in err or not lines[0].startswith("error:"):
            failures.append((name, param_name, value, f"exit {code}: {err.strip()[:300]}"))
        if listing(watched) != before:
            failures.append((name, param_name, value, f"wrote {sorted(set(listing(watched)) ^ set(before))}"))
    assert not Path("/escaped").exists(), "a command wrote at the absolute path it was given as a name"
    assert not failures, "\n".join(map(repr, failures))
    assert not accepted, "accepted hostile values:\n" + "\n".join(map(repr, accepted))


def test_text_that_looks_like_markup_is_printed_as_it_is(monkeypatch, capsys, tmp_path):
    """A store whose path holds '[/x]' (a Rich closing tag) is listed by `runs` with its path intact."""
    from babelprune.sweep.store import ResultsStore

    folder = tmp_path / "[red]" / "[/x]"
    folder.mkdir(parents=True)
    with ResultsStore(folder / "s.sqlite"):
        pass
    code, out, err = run_cli(monkeypatch, capsys, "runs", str(folder / "s.sqlite"))
    assert code == 0, err
    assert "[red]/[/x]/s.sqlite: 0 runs" in out  # the title, tags and all (before: a MarkupError)
