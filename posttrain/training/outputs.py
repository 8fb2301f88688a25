"""What a finished training run leaves next to its model: ``metrics.jsonl`` (the trainer's log history), the
manifest with the numbers worth keeping, and no checkpoints (unless asked to keep them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from posttrain.manifest import METRICS_FILE, write_manifest
from posttrain.training.arguments import CHECKPOINTS


def training_metrics(result: Any, eval_metrics: dict[str, float], log_history: list[dict[str, Any]],
                     global_step: int) -> dict[str, Any]:
    """The numbers a manifest keeps: first/last/mean train loss, eval loss, steps, duration, tokens and tokens/s.

    All of them cover the whole run, also when it was resumed from a checkpoint (``checkpoints.fit`` puts the whole
    run's totals in ``result.metrics``; the log history is restored with the checkpoint): ``tokens`` are the
    non-padding tokens trained on (TRL's ``num_tokens``), ``duration_s`` and ``cpu_seconds`` the training time of
    the steps the model went through (steps redone after a kill count once), ``train_loss_mean`` the mean per-step
    loss. ``sessions`` says how many sessions the run took (1: never resumed), ``resumed_from_step`` where the last
    one started.
    """
    losses = [row["loss"] for row in log_history if "loss" in row]
    m = result.metrics
    logged_tokens = next((row["num_tokens"] for row in reversed(log_history) if "num_tokens" in row and "loss" in row),
                         0)
    tokens = m.get("run_tokens", logged_tokens)
    runtime = float(m.get("run_seconds", m.get("train_runtime", 0.0)))
    loss_mean = m.get("run_loss_mean", result.training_loss)
    metrics: dict[str, Any] = {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": loss_mean,
        "steps": global_step,
        "epochs": m.get("epoch"),
        "duration_s": round(runtime, 3),
        "tokens": int(tokens),
        "tokens_per_second": round(tokens / runtime, 2) if runtime > 0 else None,
        "sessions": m.get("sessions", 1),
        "resumed_from_step": m.get("resumed_from_step"),
    }
    cpu = m.get("run_cpu_seconds", m.get("train_cpu_seconds"))
    if cpu:
        metrics["cpu_seconds"] = round(cpu, 3)
        metrics["tokens_per_cpu_second"] = round(tokens / cpu, 2)
    if "eval_loss" in eval_metrics:
        metrics["eval_loss"] = eval_metrics["eval_loss"]
    return metrics


def write_outputs(out: Path, stage: str, config: dict[str, Any], inputs: dict[str, str], outputs: dict[str, str],
                  metrics: dict[str, Any], log_history: list[dict[str, Any]], keep_checkpoints: bool) -> None:
    """metrics.jsonl (the trainer's log history), the manifest, and the checkpoints cleaned up once finished."""
    tmp = out / (METRICS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in log_history), encoding="utf-8")
    tmp.replace(out / METRICS_FILE)
    write_manifest(out, {"stage": stage, "config": config, "inputs": inputs, "outputs": outputs, "metrics": metrics})
    if not keep_checkpoints and (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)
