"""The progress display every long-running step uses (rich; gone from the screen when done)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def progress_bar(enabled: bool = True, counted: bool = True) -> Progress:
    """A bar with done/total and elapsed time; `counted=False` for work without a known total (a spinner)."""
    if counted:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    else:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    return Progress(*columns, disable=not enabled, transient=True)
