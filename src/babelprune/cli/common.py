"""What every command module shares: the consoles, the note line, integer bounds, registry-backed choices."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.text import Text

from babelprune.choices import DEVICE_FORMS, ModelDtype, SparseKernels
from babelprune.flags import method_names

# --device and --dtype, shared by the commands that load a model; the library checks the device against the machine.
DeviceOption = Annotated[str, typer.Option(help=f"Where the model runs: {DEVICE_FORMS} (auto: CUDA, else MPS, else the CPU).")]
DtypeOption = Annotated[ModelDtype, typer.Option(
    help="Type of the model's weights (auto: float32 on the CPU and MPS, bfloat16 on CUDA where supported, else float16); "
    "pruning statistics stay float32 or float64.")]
# --sparse-kernels, shared by `eval` and `bench-speed`: the library refuses it off CUDA or in float32.
SparseKernelsOption = Annotated[SparseKernels, typer.Option(
    help="2:4: run every block linear whose weight is 2:4 along its inputs with PyTorch's semi-structured sparse kernels "
    "(needs --device cuda and float16 or bfloat16); the others stay dense and are named. none: dense kernels.")]

# The calibration text, shared by the commands that run a model over it (prune; export's importance matrix).
CalibOption = Annotated[str, typer.Option(help="Calibration corpus: bible, udhr, a folder/JSONL, or hf:<dataset>.")]
CalibLangsOption = Annotated[Optional[str], typer.Option(help="Comma-separated calibration languages (default: en,es,fr,zh,ru,ar,hi,sw).")]
SamplesOption = Annotated[int, typer.Option(min=1, max=2**31 - 1, help="Calibration windows per language.")]
SeqLenOption = Annotated[int, typer.Option(min=2, max=2**31 - 1, help="Calibration window length in tokens.")]
SeedOption = Annotated[int, typer.Option(min=0, max=2**31 - 1, help="Seed for the choice of calibration windows.")]

# `sweep` takes them as replacements of the experiment file's own: left out, the file decides (cpu and auto when it says nothing).
SweepDeviceOption = Annotated[Optional[str], typer.Option(
    "--device", help=f"Replace the experiment's device: {DEVICE_FORMS} (default: the file's `device`, else cpu); entries that name their own keep it.")]
SweepDtypeOption = Annotated[Optional[ModelDtype], typer.Option(
    "--dtype", help="Replace the experiment's dtype (default: the file's `dtype`, else auto); entries that name their own keep it.")]

# The largest count an option takes: beyond it a C integer inside torch or the OS would overflow.
MAX_INT = 2**31 - 1

# Wide enough for per-language tables when the output is a file or a pipe.
# Markup is off: paths, language codes and labels are the user's text and print as typed
# (a code such as '[/x]' is not a Rich tag); styled parts are built with rich.text.Text.
console = Console(width=None if sys.stdout.isatty() else 140, markup=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False)


def note(line: str) -> None:
    """A remark about the run on standard error: 'note:' in yellow, then the text as it is."""
    err_console.print(Text.assemble(("note:", "yellow"), " ", line), highlight=False)


def show_sparse_kernels(record, spec: str | None = None) -> None:
    """What `--sparse-kernels` converted: one line when every block linear was, else a note naming those left dense."""
    if record is None:
        return
    if record.complete:
        console.print(Text(record.summary(spec)))
    else:
        note(record.summary(spec))


class RegistryChoices(typer.core.TyperCommand):
    """A command whose registry-backed options take as choices the names registered when it runs.

    typer reads an option's choices from its annotation, and a Literal there would freeze the
    registry at import: a method registered afterwards would be missing from --help and refused.
    So these options are annotated `str`, and just before parsing (which --help is part of) each
    gets the Literal of the names registered at that moment: help, the one-line error for a bad
    value and shell completion then list them exactly as for any other choice option.
    This reads typer's own parameter description (`type_descriptor`, typer 0.29): if a typer
    release changes it, tests/test_cli_choices.py and tests/test_method_registry.py fail.
    """

    # option name -> the names it accepts; the registry is imported only when the command runs
    CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {"method": method_names}

    def parse_args(self, ctx, args):
        for param in self.params:
            names = self.CHOICES.get(param.name)
            if names is not None and hasattr(param, "type_descriptor"):
                # Without typer's description (another typer) the option stays a plain string that the
                # config checks against the registry: still one sentence listing the methods.
                param.type_descriptor = dataclasses.replace(param.type_descriptor, annotation=Literal[names()])
                param._runtime_param = None  # typer caches the coercion built from the old annotation
        return super().parse_args(ctx, args)
