"""What a person sees during and after training: a live progress line, the run's metrics, a summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from transformers import TrainerCallback

console = Console(stderr=True)


def say(message: str) -> None:
    console.print(escape(message))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class RichProgress(TrainerCallback):
    """A live bar with loss, learning rate and tokens/s on a terminal; one plain line per log otherwise (CI logs)."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not console.is_terminal:
            return
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        shown = {k: logs[k] for k in ("loss", "eval_loss", "learning_rate", "grad_norm", "num_tokens") if k in logs}
        if not shown:
            return
        line = "  ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
        if self.progress is not None:
            self.progress.update(self.task, info=line)
            if "eval_loss" in logs:
                self.progress.console.print(f"step {state.global_step}: {line}")
        else:
            console.print(f"step {state.global_step}/{state.max_steps}: {line}", highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def training_metrics(result: Any, eval_metrics: dict[str, float], log_history: list[dict[str, Any]],
                     global_step: int) -> dict[str, Any]:
    """The numbers a manifest keeps: first/last/mean train loss, eval loss, steps, duration, tokens and tokens/s.

    ``tokens`` counts the non-padding tokens this session trained on (TRL's ``num_tokens``; a resumed run counts from
    the resume point, as do ``duration_s`` and ``cpu_seconds``, the CPU time of this process while training).
    """
    losses = [row["loss"] for row in log_history if "loss" in row]
    tokens = next((row["num_tokens"] for row in reversed(log_history) if "num_tokens" in row and "loss" in row), 0)
    runtime = float(result.metrics.get("train_runtime", 0.0))
    metrics: dict[str, Any] = {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.training_loss,
        "steps": global_step,
        "epochs": result.metrics.get("epoch"),
        "duration_s": round(runtime, 3),
        "tokens": int(tokens),
        "tokens_per_second": round(tokens / runtime, 2) if runtime > 0 else None,
    }
    cpu = result.metrics.get("train_cpu_seconds")
    if cpu:
        metrics["cpu_seconds"] = round(cpu, 3)
        metrics["tokens_per_cpu_second"] = round(tokens / cpu, 2)
    if "eval_loss" in eval_metrics:
        metrics["eval_loss"] = eval_metrics["eval_loss"]
    return metrics


def print_summary(stage: str, out: Any, metrics: dict[str, Any]) -> None:
    table = Table(title=f"{stage} finished", show_header=False, title_justify="left")
    table.add_row("output", str(out))
    for key, value in metrics.items():
        if not isinstance(value, dict | list):
            table.add_row(key, _fmt(value))
    console.print(table)
