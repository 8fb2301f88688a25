"""The RM stage and the Chat track around TRL's RewardTrainer and DPOTrainer: trainer arguments from the shared
``train`` section (:class:`posttrain.stages.training.TrainSettings`), and progress reporting.

Progress functions receive plain dicts (picklable, so a Ray actor can forward them to a driver)::

    {"stage": "rm" | "rl_chat", "event": "phase" | "step" | "log" | "round" | "done", "round": int | None,
     "step": int, "max_steps": int, "metrics": {...}, "message": str}

Without a progress function, messages go to the console and training shows the shared rich progress line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import model_validator

from posttrain.stages.training import CHECKPOINTS, TrainSettings, callbacks, check_reporters, use_bf16

ProgressFn = Callable[[dict[str, Any]], None]


class PairTrainSettings(TrainSettings):
    """``train`` for pairwise trainers (reward model, DPO): as for SFT, except that pairs cannot be packed."""

    @model_validator(mode="after")
    def _no_packing(self) -> PairTrainSettings:
        if self.packing:
            raise ValueError("packing: preference pairs cannot be packed (RewardTrainer and DPOTrainer train on whole "
                             "chosen/rejected sequences); set packing: false")
        return self


def pair_trainer_kwargs(train: TrainSettings, out: Path, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments RewardConfig and DPOConfig share, mapped as the SFT stage maps them (checkpoints under
    ``out/checkpoints``)."""
    import torch

    return dict(
        output_dir=str(out / CHECKPOINTS), num_train_epochs=train.epochs, max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate, lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a fraction of the total steps in transformers 5
        weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size or train.batch_size,
        gradient_accumulation_steps=train.grad_accumulation, max_length=train.max_length,
        eval_strategy="steps" if has_eval and train.eval_steps else "no", eval_steps=train.eval_steps,
        logging_steps=train.logging_steps, save_strategy="steps", save_steps=train.save_steps,
        save_total_limit=train.save_total_limit, seed=train.seed, bf16=use_bf16(train.precision),
        use_cpu=not torch.cuda.is_available(), gradient_checkpointing=train.gradient_checkpointing,
        report_to=[r for r in check_reporters(train.report_to) if r != "tensorboard"],
        disable_tqdm=True, dataloader_num_workers=0,
    )


def notify(progress: ProgressFn | None, stage: str, event: str, message: str = "", round_: int | None = None,
           step: int = 0, max_steps: int = 0, metrics: dict[str, Any] | None = None) -> None:
    """One progress event: to the progress function when there is one, else the message to the console."""
    if progress is not None:
        progress({"stage": stage, "event": event, "round": round_, "step": step, "max_steps": max_steps,
                  "metrics": metrics or {}, "message": message})
    elif message:
        from posttrain.stages.reporting import say

        say(f"{stage}: {message}")


def trainer_callbacks(train: TrainSettings, out: Path, progress: ProgressFn | None, stage: str,
                      round_: int | None = None) -> list[Any]:
    """The shared callbacks (rich progress line, TensorBoard) when nobody listens, else TensorBoard plus a callback
    that forwards steps (at most once a second), logs and checkpoints to ``progress``."""
    shared = callbacks(train, out)
    if progress is None:
        return shared
    from transformers import TrainerCallback

    from posttrain.stages.reporting import RichProgress

    class Forward(TrainerCallback):
        def __init__(self) -> None:
            self._last = 0.0

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if logs:
                clean = {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)}
                notify(progress, stage, "log", "", round_, state.global_step, state.max_steps, clean)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            now = time.monotonic()
            if now - self._last >= 1.0 or state.global_step == state.max_steps:
                self._last = now
                notify(progress, stage, "step", "", round_, state.global_step, state.max_steps)

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            notify(progress, stage, "checkpoint", f"checkpoint at step {state.global_step}", round_,
                   state.global_step, state.max_steps)

    return [c for c in shared if not isinstance(c, RichProgress)] + [Forward()]


def log_series(log_history: list[dict[str, Any]], key: str) -> list[float]:
    """One logged training metric over steps (evaluation rows left out)."""
    return [float(row[key]) for row in log_history if key in row and isinstance(row[key], int | float)]


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """First, last and mean of a series (for manifests)."""
    if not values:
        return {"first": None, "last": None, "mean": None, "count": 0}
    return {"first": values[0], "last": values[-1], "mean": sum(values) / len(values), "count": len(values)}
