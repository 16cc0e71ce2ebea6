"""The command line: one module per group of commands, each parsing its options, calling the library and printing.

The commands live in `babelprune.cli.evaluate` (models, eval, compare, bench-speed),
`babelprune.cli.prune` (prune, trim-vocab, export, shrink), `babelprune.cli.finetune` (tasks,
finetune, finetune-sweep, train-dynamic, slice), `babelprune.cli.sweep` (sweep, recipes,
runs, report, demo) and `babelprune.cli.data` (data list, data fetch). They import only
the library's entry points (tests/test_cli_imports.py checks it); `main` turns a user's
mistake into one sentence and a non-zero exit.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.text import Text

from babelprune.cli import data, evaluate, finetune, prune, sweep
from babelprune.cli.common import MAX_INT, RegistryChoices, console, err_console, note
from babelprune.errors import BabelpruneError, describe_validation_error, one_line

app = typer.Typer(help="Prune multilingual language models and see, language by language, what pruning costs.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Corpora: list languages, fetch corpora into the cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# The commands, in the order `babelprune --help` lists them.
app.command("models")(evaluate.models_command)
app.command("eval")(evaluate.eval_command)
app.command("prune", cls=RegistryChoices)(prune.prune_command)
app.command("compare")(evaluate.compare_command)
app.command("report")(sweep.report_command)
app.command("bench-speed")(evaluate.bench_speed_command)
app.command("tasks")(finetune.tasks_command)
app.command("finetune")(finetune.finetune_command)
app.command("finetune-sweep")(finetune.finetune_sweep_command)
app.command("train-dynamic")(finetune.train_dynamic_command)
app.command("slice")(finetune.slice_command)
app.command("trim-vocab")(prune.trim_vocab_command)
app.command("export")(prune.export_command)
app.command("shrink")(prune.shrink_command)
app.command("demo")(sweep.demo_command)
app.command("sweep")(sweep.sweep_command)
app.command("recipes")(sweep.recipes_command)
app.command("runs")(sweep.runs_command)
data_app.command("fetch")(data.data_fetch)
data_app.command("list")(data.data_list)

# The command functions by their old names (`babelprune.cli.prune_command`...), for code that calls them.
prune_command, trim_vocab_command, export_command = prune.prune_command, prune.trim_vocab_command, prune.export_command
finetune_command, train_dynamic_command, slice_command = finetune.finetune_command, finetune.train_dynamic_command, finetune.slice_command
eval_command, compare_command, bench_speed_command = evaluate.eval_command, evaluate.compare_command, evaluate.bench_speed_command

__all__ = ["MAX_INT", "RegistryChoices", "app", "console", "data_app", "err_console", "main", "note"]


def _fail(message: str, status: int = 2) -> None:
    # The sentence is text, not markup: "pip install 'babelprune[ray]'" keeps its brackets.
    err_console.print(Text.assemble(("error:", "bold red"), " ", one_line(message)), highlight=False)
    sys.exit(status)


class _NoteHandler(logging.Handler):
    """The library's warnings (e.g. a partial output of a killed run removed) as one 'note:' line each."""

    def emit(self, record: logging.LogRecord) -> None:
        note(one_line(record.getMessage()))


def _show_library_warnings() -> None:
    log = logging.getLogger("babelprune")
    if not any(isinstance(handler, _NoteHandler) for handler in log.handlers):
        log.addHandler(_NoteHandler(level=logging.WARNING))
    log.propagate = False


def main() -> None:
    """Entry point: user errors become one red sentence and exit status 2, never a traceback."""
    from pydantic import ValidationError
    from typer.exceptions import TyperException

    _show_library_warnings()
    try:
        status = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
        if isinstance(status, int) and status:
            sys.exit(status)
    except BabelpruneError as error:
        _fail(str(error))
    except ValidationError as error:  # a config built from the options broke one of its rules
        _fail(_name_flags(describe_validation_error(error)))
    except (typer.Abort, KeyboardInterrupt):
        err_console.print(Text.assemble(("interrupted:", "bold red"), " nothing was left half-written."))
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except TyperException as error:  # command-line usage: unknown option, bad choice, missing value
        if type(error).__name__ == "NoArgsIsHelpError":  # a bare command prints its help
            error.show()
            sys.exit(error.exit_code)
        _fail(_usage_sentence(error), error.exit_code)


def _name_flags(sentence: str) -> str:
    """Name a config field by the flag the user typed ('calib_batch' -> '--calib-batch').

    The flag tables of babelprune.flags name nested fields ('mwanda.alpha' is --alpha); other
    flags of a nested config carry its prefix: --refit-shrink sets the field 'shrink'.
    """
    from babelprune.flags import PRUNE_FLAGS, STRUCTURED_FLAGS, TRIM_FLAGS

    for word in sys.argv[1:]:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            field = flag[2:].replace("-", "_")
            paths = [table[field] for table in (PRUNE_FLAGS, STRUCTURED_FLAGS, TRIM_FLAGS) if field in table]
            for name in (*paths, field, field.partition("_")[2]):
                if name and f"'{name}'" in sentence:
                    sentence = sentence.replace(f"'{name}'", f"'{flag}'")
                    break
    return sentence


def _usage_sentence(error) -> str:
    """The parser's message, without pydantic's prefix, pointing at the command's --help."""
    message = error.format_message().replace("Value error, ", "").rstrip(".")
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "babelprune"
    return f"{message} (see `{command} --help`)."
