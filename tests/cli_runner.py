"""Run the babelprune command line in-process, as a user would from a shell."""

from __future__ import annotations

import sys

from babelprune import cli


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Exit status (0 when the command returns), stdout and stderr of `babelprune *args`."""
    monkeypatch.setattr(sys, "argv", ["babelprune", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
