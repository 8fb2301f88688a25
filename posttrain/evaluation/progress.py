"""Progress of an eval: a live bar over every generation job on a terminal, one plain line per finished job elsewhere
(CI logs). Jobs are finished on a background thread (verification overlaps generation); rich's bar is thread-safe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from posttrain.stages.reporting import console


class EvalProgress:
    def __init__(self, total: int, log: Callable[[str], None] | None = None) -> None:
        self.total, self.done = total, 0
        self.say = log or (lambda _msg: None)
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> EvalProgress:
        if console.is_terminal and self.total:
            self.bar = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=console)
            self.bar.start()
            self.task = self.bar.add_task("eval", total=self.total, info="")
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
