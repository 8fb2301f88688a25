"""How a stage tells what it is doing, the same way in every stage.

A stage gets a :class:`Progress` and calls ``progress.say("...")`` for a line a person reads and
``progress.event("step", step=3, max_steps=10)`` (or ``"log"`` with metrics, ``"round"``, ``"checkpoint"``, ``"done"``)
for what a live board shows. Without a sink, messages go to the console and training shows its rich progress line;
with a sink (a plain callable, so a Ray task can forward to an actor), every message and event reaches the sink as
one dict::

    {"stage": str, "event": "phase" | "step" | "log" | "round" | "checkpoint" | "done", "message": str,
     "round": int | None, "step": int, "max_steps": int, "metrics": {...}}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from posttrain.report.console import say as print_message

Sink = Callable[[dict[str, Any]], None]


@dataclass
class Progress:
    stage: str = ""
    sink: Sink | None = None

    @property
    def forwarding(self) -> bool:
        """True when a board listens (training then forwards its steps instead of drawing a progress line)."""
        return self.sink is not None

    def say(self, message: str, *, round_: int | None = None, metrics: dict[str, Any] | None = None) -> None:
        self.event("phase", message, round_=round_, metrics=metrics)

    def event(self, kind: str, message: str = "", *, round_: int | None = None, step: int = 0, max_steps: int = 0,
              metrics: dict[str, Any] | None = None) -> None:
        if self.sink is not None:
            self.sink({"stage": self.stage, "event": kind, "message": message, "round": round_, "step": step,
                       "max_steps": max_steps, "metrics": metrics or {}})
        elif message:
            print_message(f"{self.stage}: {message}" if self.stage else message)

    def for_stage(self, stage: str) -> Progress:
        """The same sink, reporting as another stage (a stage that runs another one inside, as rs runs sft)."""
        return Progress(stage, self.sink)


def as_progress(progress: Progress | Sink | None, stage: str) -> Progress:
    """What a stage's ``progress`` argument may be: a Progress, a plain sink callable, or None (the console)."""
    if isinstance(progress, Progress):
        return progress if progress.stage else progress.for_stage(stage)
    return Progress(stage, progress)
