"""Live progress over a known number of jobs: a bar on a terminal, one plain line per finished job elsewhere (CI
logs). Jobs may finish on a background thread (verification overlaps generation); rich's bar is thread-safe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from posttrain.report.console import console


class JobsBar:
    def __init__(self, label: str, total: int, log: Callable[[str], None] | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.say = log or (lambda _msg: None)
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> JobsBar:
        if console.is_terminal and self.total:
            self.bar = Progress(TextColumn(f"[bold]{escape(self.label)}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=console)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, info="")
        return self

    def note(self, message: str) -> None:
        """A message that does not break the live bar (printed above it)."""
        if self.bar is not None:
            self.bar.console.print(escape(message), highlight=False)
        else:
            self.say(message)

    def working_on(self, label: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, info=label)

    def finished(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        else:
            self.say(f"[{self.done}/{self.total}] {label}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
