"""The command line holds no library logic: its modules import only the library's entry points.

A command parses its options, builds its config through `babelprune.flags`, calls
one verb and prints. So every module of `babelprune.cli` may import the public
verbs (`babelprune.api`), the flag tables, choices, errors, output checks,
records, the functions that `sweep`, `report` and `demo` expose to run and show
sweeps, and the other CLI modules; an import of anything else (a kernel, a
format, the trainer) means logic a library user would need has crept into the
CLI, and fails here. The list of modules is read from the package itself, so a
new command module is checked without being named.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import babelprune.cli
from tests.test_import_graph import import_graph

# What the CLI may import; the package __init__s these imports run are listed with them.
ENTRY_POINTS = {
    "babelprune.api", "babelprune.flags", "babelprune.choices", "babelprune.errors", "babelprune.outputs",
    "babelprune.records",
    # running and listing sweeps, and the store they fill
    "babelprune.sweep", "babelprune.sweep.experiment", "babelprune.sweep.runs", "babelprune.sweep.store",
    "babelprune.sweep.local", "babelprune.sweep.ray_backend", "babelprune.sweep.finetune_sweep",
    # comparing results and writing reports, and the tables and charts the commands print or draw
    "babelprune.report", "babelprune.report.html", "babelprune.report.compare", "babelprune.report.plots",
    "babelprune.report.tables",
    "babelprune.demo",
}


def cli_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(babelprune.cli.__path__, "babelprune.cli.")]
    return ["babelprune.cli", *sorted(names)]


def allowed(module: str) -> bool:
    return (module in ENTRY_POINTS or module.startswith(("babelprune.records.", "babelprune.cli.")) or module == "babelprune.cli")


def test_the_command_modules_are_found():
    modules = cli_modules()
    assert {"babelprune.cli.prune", "babelprune.cli.evaluate", "babelprune.cli.finetune", "babelprune.cli.sweep",
            "babelprune.cli.data", "babelprune.cli.common"} <= set(modules)


@pytest.mark.parametrize("module", cli_modules())
def test_a_command_module_imports_only_entry_points(module):
    if not module.endswith("__main__"):  # importing __main__ would run the command line
        importlib.import_module(module)  # a name it imports from an entry point exists there
    imported = import_graph()[module]
    reaching_past = sorted(target for target in imported if not allowed(target))
    assert not reaching_past, f"{module} reaches past the library's entry points into: {', '.join(reaching_past)}"


def test_the_rule_refuses_library_internals():
    assert not allowed("babelprune.prune.kernels") and not allowed("babelprune.finetune.trainer")
    assert allowed("babelprune.api") and allowed("babelprune.records.eval") and allowed("babelprune.cli.common")
