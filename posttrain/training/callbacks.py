"""What a trainer reports while it trains: a live progress line on a terminal (one plain line per log in CI), or,
when a board listens (``Progress.forwarding``), its steps, logs and checkpoints as events; and TensorBoard."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as Bar
from transformers import TrainerCallback

from posttrain.report import Progress, console
from posttrain.report.tables import fmt
from posttrain.training.arguments import LOGS
from posttrain.training.settings import TrainerSettings

SHOWN = ("loss", "eval_loss", "learning_rate", "grad_norm", "num_tokens", "reward")


class RichProgress(TrainerCallback):
    """A live bar with loss, learning rate and tokens on a terminal; one plain line per log otherwise (CI logs)."""

    def __init__(self) -> None:
        self.bar: Bar | None = None
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not console.is_terminal:
            return
        self.bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.bar.start()
        self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        shown = {k: logs[k] for k in SHOWN if k in logs}
        if not shown:
            return
        line = "  ".join(f"{k} {fmt(v)}" for k, v in shown.items())
        if self.bar is not None:
            self.bar.update(self.task, info=line)
            if "eval_loss" in logs:
                self.bar.console.print(f"step {state.global_step}: {line}")
        else:
            console.print(f"step {state.global_step}/{state.max_steps}: {line}", highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class ForwardEvents(TrainerCallback):
    """Steps (at most once a second, and the last), logged metrics and checkpoints as Progress events."""

    def __init__(self, progress: Progress, round_: int | None = None) -> None:
        self.progress, self.round, self._last = progress, round_, 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            clean = {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)}
            self.progress.event("log", round_=self.round, step=state.global_step, max_steps=state.max_steps,
                                metrics=clean)

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if state.is_world_process_zero and (now - self._last >= 1.0 or state.global_step == state.max_steps):
            self._last = now
            self.progress.event("step", round_=self.round, step=state.global_step, max_steps=state.max_steps)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.event("checkpoint", f"checkpoint at step {state.global_step}", round_=self.round,
                                step=state.global_step, max_steps=state.max_steps)


def training_callbacks(train: TrainerSettings, out: Path, progress: Progress | None = None,
                       round_: int | None = None) -> list[Any]:
    """The progress callback (a line for a person, or events for a board) and TensorBoard writing to ``out/logs``
    (outside checkpoints/, which a finished run removes)."""
    found: list[Any] = [ForwardEvents(progress, round_) if progress is not None and progress.forwarding
                        else RichProgress()]
    if "tensorboard" in train.report_to:
        from transformers.integrations import TensorBoardCallback

        board = TensorBoardCallback()
        board.logging_dir = str(out / LOGS)
        found.append(board)
    return found
