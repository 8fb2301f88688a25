"""What a trainer reports while it trains: a live progress line on a terminal (one plain line per log in CI), or,
when a board listens (``Progress.forwarding``), its steps, logs and checkpoints as events; TensorBoard; and the
whole run's totals kept in every checkpoint (:class:`RunTotals`, added by ``checkpoints.fit``)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as Bar
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

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


class RunTotals(TrainerCallback, ExportableState):
    """Training time, CPU time, tokens and loss of the run so far, kept in each checkpoint's ``trainer_state.json``
    (transformers saves an ``ExportableState`` callback's ``state()`` there), so that a resumed session adds to what
    the checkpoint it starts from had.

    Tokens are TRL's logged ``num_tokens`` (a session counter in SFT, DPO and reward training; the trainer state's
    own, resumed counter in GRPO): what each log adds is counted. Time is counted from ``on_train_begin``.
    """

    def __init__(self) -> None:
        self.before: dict[str, float] = {}
        self.started = self.cpu_started = 0.0
        self.start_step = 0
        self.tokens = self.loss_sum = 0.0
        self.loss_steps = 0
        self._last_tokens = 0.0
        self._last_loss_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        # Resumed: the state was loaded from the checkpoint, with what this callback stored there (at a fresh start
        # the entry is this instance's own, from when transformers created the state).
        stored = state.stateful_callbacks.get(type(self).__name__) if state.global_step > 0 else None
        attributes = stored.get("attributes", {}) if isinstance(stored, dict) else {}
        self.before = dict(attributes.get("totals") or {})
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.start_step = self._last_loss_step = state.global_step
        self._last_tokens = float(state.num_input_tokens_seen or 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if isinstance(logs.get("num_tokens"), int | float):
            self.tokens += logs["num_tokens"] - self._last_tokens
            self._last_tokens = logs["num_tokens"]
        if isinstance(logs.get("loss"), int | float) and state.global_step > self._last_loss_step:
            steps = state.global_step - self._last_loss_step
            self.loss_sum += logs["loss"] * steps
            self.loss_steps += steps
            self._last_loss_step = state.global_step

    def totals(self) -> dict[str, float]:
        """The run so far (this session added to what the resumed checkpoint had)."""
        b = self.before
        running = self.started > 0
        return {
            "seconds": b.get("seconds", 0.0) + (time.perf_counter() - self.started if running else 0.0),
            "cpu_seconds": b.get("cpu_seconds", 0.0) + (time.process_time() - self.cpu_started if running else 0.0),
            "tokens": b.get("tokens", 0.0) + self.tokens,
            "loss_sum": b.get("loss_sum", 0.0) + self.loss_sum,
            "loss_steps": b.get("loss_steps", 0) + self.loss_steps,
            "sessions": b.get("sessions", 0) + 1,
        }

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"totals": self.totals()}}

    def summary(self, result: Any, global_step: int) -> dict[str, Any]:
        """Whole-run numbers for ``result.metrics``; the session's exact mean loss replaces its logged share."""
        t = self.totals()
        session_steps = global_step - self.start_step
        session_loss = float(result.training_loss) * session_steps
        loss_steps = self.before.get("loss_steps", 0) + session_steps
        loss_mean = (self.before.get("loss_sum", 0.0) + session_loss) / loss_steps if loss_steps else None
        return {"run_seconds": t["seconds"], "run_cpu_seconds": t["cpu_seconds"], "run_tokens": t["tokens"],
                "run_loss_mean": loss_mean, "sessions": int(t["sessions"]),
                "resumed_from_step": self.start_step or None}
