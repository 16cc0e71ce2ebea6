"""What a sweep shows while it runs: one bar for the whole sweep (done, running, failed, time left) and a line per finished run."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from babelprune.sweep.runs import RunSpec
from babelprune.sweep.store import RunRecord


@dataclass
class SweepSummary:
    planned: int  # runs of the grid
    skipped: int  # already done in the store
    done: list[str] = field(default_factory=list)  # keys finished now
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class SweepDisplay:
    """The sweep's progress bar; `started(spec)` and `finished(record)` as runs go."""

    def __init__(self, planned: int, todo: int, enabled: bool = True, console: Console | None = None) -> None:
        self.summary = SweepSummary(planned=planned, skipped=planned - todo)
        self.console = console or Console()
        self.running: dict[str, str] = {}  # key -> label
        # Runs take minutes: estimate the time left from every finished run, not from the last 30 s.
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(),  # run labels are text, not markup MofNCompleteColumn(),
            TextColumn("[green]{task.fields[done]} done[/] [red]{task.fields[failed]} failed[/]"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=self.console, disable=not enabled or todo == 0, speed_estimate_period=7 * 24 * 3600,
        )
        self.task = self.progress.add_task("sweep", total=todo, done=0, failed=0)

    def __enter__(self) -> SweepDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def started(self, spec: RunSpec) -> None:
        self.running[spec.key] = spec.label
        self._describe()

    def finished(self, record: RunRecord) -> None:
        self.running.pop(record.key, None)
        (self.summary.done if record.state == "done" else self.summary.failed).append(record.key)
        if record.state == "done":
            self.progress.console.print(Text.assemble(("done", "green"), f"   {record.key}  {record.label}  ({record.seconds:.1f} s)"), highlight=False)
        else:
            self.progress.console.print(Text.assemble(("failed", "red"), f" {record.key}  {record.label}: {record.error}"), highlight=False)
        self.progress.update(self.task, advance=1, done=len(self.summary.done), failed=len(self.summary.failed))
        self._describe()

    def _describe(self) -> None:
        labels = list(self.running.values())
        text = "running " + ", ".join(labels[:2]) + (f" +{len(labels) - 2}" if len(labels) > 2 else "") if labels else "sweep"
        self.progress.update(self.task, description=text)
