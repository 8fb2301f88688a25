"""Resuming and the train call: a killed run continues from its newest checkpoint in ``OUT/checkpoints``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from posttrain.report import say
from posttrain.training.arguments import CHECKPOINTS


def last_checkpoint(trainer: Any, out: Path, resume: bool) -> str | None:
    """The newest ``out/checkpoints/checkpoint-N`` to resume from; a fresh start clears old ones (on one process)."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / CHECKPOINTS
    if not resume:
        if trainer.is_world_process_zero() and folder.is_dir():
            shutil.rmtree(folder)
        trainer.accelerator.wait_for_everyone()  # no process looks for checkpoints while they are being removed
        return None
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def fit(trainer: Any, out: Path, resume: bool) -> tuple[Any, dict[str, float]]:
    """Run training (resuming when a checkpoint exists) and the final evaluation -> (train output, eval metrics)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our progress callback shows them instead
    checkpoint = last_checkpoint(trainer, out, resume)
    if checkpoint and trainer.is_world_process_zero():
        say(f"resuming from {checkpoint}")
    cpu_start = time.process_time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # CPU seconds of this process: unlike wall time, barely moved by other jobs sharing the machine.
    result.metrics["train_cpu_seconds"] = time.process_time() - cpu_start
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    return result, eval_metrics
