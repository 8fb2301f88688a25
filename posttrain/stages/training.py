"""Pieces the training stages (midtrain, sft) share: config sections, inputs, the TRL arguments, resume and outputs.

Each stage module reads top to bottom and calls into here for the parts that are the same everywhere, so that a
stage shows its recipe and this module holds the plumbing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.manifest import MANIFEST, file_sha256, read_manifest, write_manifest

CHECKPOINTS = "checkpoints"
LOGS = "logs"
METRICS_FILE = "metrics.jsonl"
Reporter = Literal["tensorboard", "wandb", "trackio"]


class LoraSettings(Schema):
    """A LoRA adapter (peft) instead of full fine-tuning."""

    r: PositiveInt = 16
    alpha: PositiveFloat = 32.0
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    merge: bool = Field(True, description="Save merged full weights (true) or only the adapter (false).")


class TrainSettings(Schema):
    """Optimisation and bookkeeping settings common to every TRL-trained stage."""

    epochs: PositiveFloat = 1.0
    max_steps: PositiveInt | None = Field(None, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: PositiveFloat = 2e-5
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: PositiveFloat = 1.0
    batch_size: PositiveInt = 8
    eval_batch_size: PositiveInt | None = None
    grad_accumulation: PositiveInt = 1
    max_length: int = Field(1024, ge=16)
    packing: bool = False
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    eval_fraction: float = Field(0.0, ge=0.0, le=0.5)
    eval_steps: PositiveInt | None = Field(None, description="Evaluate every N steps; the end of training always is.")
    logging_steps: PositiveInt = 1
    save_steps: PositiveInt = 50
    save_total_limit: PositiveInt = 2
    keep_checkpoints: bool = Field(False, description="Keep checkpoints/ once finished (they resume a killed run).")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 mixed precision on GPUs that support it, fp32 on CPU (bf16 autocast is slower "
        "there).")
    gradient_checkpointing: bool = False
    report_to: list[Reporter] = Field(default_factory=lambda: ["tensorboard"])


# ------------------------------------------------------------------------------------------------------------- inputs
def built_dataset(data: Path, kind: str, source: str) -> tuple[Any, dict[str, Any]]:
    """Load a ``posttrain data build`` folder of the given kind -> (datasets.Dataset, its manifest)."""
    from posttrain.data import load_built

    if not data.is_dir():
        raise UserError(f"{source}: data: folder {str(data)!r} not found; expected a folder written by "
                        "`posttrain data build` (data.parquet + manifest.json)")
    manifest = read_manifest(data)
    if manifest.get("kind") != kind:
        raise UserError(f"{source}: data: {data} holds {manifest.get('kind')!r} rows; this stage needs a {kind!r} "
                        "dataset (recipe kind)")
    return load_built(data), manifest


def model_fingerprint(model_dir: Path) -> str:
    """A stable hash for a model folder: its manifest when a stage wrote one, else its config and weight files."""
    if (model_dir / MANIFEST).is_file():
        return file_sha256(model_dir / MANIFEST)
    import hashlib

    h = hashlib.sha256()
    for p in sorted(model_dir.glob("*.json")) + sorted(model_dir.glob("*.safetensors")):
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def stage_inputs(data_dir: Path, model_dir: Path) -> dict[str, str]:
    return {str(data_dir / MANIFEST): file_sha256(data_dir / MANIFEST), str(model_dir): model_fingerprint(model_dir)}


def already_done(out: Path, stage: str, config: dict[str, Any], inputs: dict[str, str]) -> bool:
    """True when ``out`` holds a finished run of this stage with the same config and inputs (re-running is a no-op)."""
    if not (out / MANIFEST).is_file():
        return False
    try:
        previous = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return previous.get("stage") == stage and previous.get("config") == config and previous.get("inputs") == inputs


def split_eval(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """Hold out ``fraction`` of the rows (at least one) for evaluation; None when the fraction is 0."""
    if fraction <= 0:
        return dataset, None
    n_eval = max(1, round(len(dataset) * fraction))
    if n_eval >= len(dataset):
        raise UserError(f"train.eval_fraction={fraction} leaves no training rows out of {len(dataset)}")
    parts = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


# -------------------------------------------------------------------------------------------------------------- model
def use_bf16(precision: str) -> bool:
    import torch

    if precision == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return precision == "bf16"


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """The model with fp32 master weights (mixed precision autocasts from them) and the dtype it was stored in."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    stored = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None) or torch.float32
    if isinstance(stored, str):
        stored = getattr(torch, stored)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), stored


def peft_config(lora: LoraSettings | None) -> Any:
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type="CAUSAL_LM")


# ------------------------------------------------------------------------------------------------------------ trainer
def check_reporters(report_to: list[str]) -> list[str]:
    """Reporters must be installed: asking for wandb without it is an error, not a silent no-op."""
    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise UserError(f"train.report_to: {name!r} is not installed (pip install {name}); "
                            "tensorboard is always available")
    return list(report_to)


def sft_arguments(train: TrainSettings, out: Path, has_eval: bool, **extra: Any) -> Any:
    """The TRL ``SFTConfig`` for a stage: checkpoints under ``out/checkpoints``, logs under ``out/logs``."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a fraction of the total steps in transformers 5
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size or train.batch_size,
        gradient_accumulation_steps=train.grad_accumulation,
        max_length=train.max_length,
        packing=train.packing,
        packing_strategy=train.packing_strategy,
        eval_strategy="steps" if has_eval and train.eval_steps else "no",
        eval_steps=train.eval_steps,
        logging_steps=train.logging_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        seed=train.seed,
        bf16=use_bf16(train.precision),
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=train.gradient_checkpointing,
        report_to=[r for r in check_reporters(train.report_to) if r != "tensorboard"],  # see `callbacks`
        disable_tqdm=True,  # the rich progress line replaces tqdm
        **extra,
    )


def callbacks(train: TrainSettings, out: Path) -> list[Any]:
    """The rich progress line, and TensorBoard writing to ``out/logs`` (outside checkpoints/, which is cleaned up)."""
    from posttrain.stages.reporting import RichProgress

    found = [RichProgress()]
    if "tensorboard" in train.report_to:
        from transformers.integrations import TensorBoardCallback

        board = TensorBoardCallback()
        board.logging_dir = str(out / LOGS)
        found.append(board)
    return found


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

    from posttrain.stages.reporting import say

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; RichProgress shows them instead
    checkpoint = last_checkpoint(trainer, out, resume)
    if checkpoint and trainer.is_world_process_zero():
        say(f"resuming from {checkpoint}")
    cpu_start = time.process_time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # CPU seconds of this process: unlike wall time, barely moved by other jobs sharing the machine.
    result.metrics["train_cpu_seconds"] = time.process_time() - cpu_start
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    return result, eval_metrics


# ------------------------------------------------------------------------------------------------------------ outputs
def save_model(trainer: Any, out: Path, tokenizer: Any, lora: LoraSettings | None, stored_dtype: Any) -> dict[str, str]:
    """Write the trained model into ``out`` (merged weights or a LoRA adapter) with the tokenizer; -> file hashes.

    Full and merged models are saved in the dtype the input model was stored in (a bf16 model stays bf16).
    Sharded training (DeepSpeed ZeRO-3, FSDP) gathers the weights through ``trainer.save_model`` on every process.
    """
    sharded = trainer.is_fsdp_enabled or (
        trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3)
    if sharded:
        if lora is not None and lora.merge:
            raise UserError("lora.merge: merging needs the full weights on one process, which ZeRO-3/FSDP shard; "
                            "set lora.merge=false and merge the saved adapter afterwards")
        trainer.save_model(str(out))
    elif trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        if lora is not None and lora.merge:
            model = model.merge_and_unload()
        if lora is None or lora.merge:
            model = model.to(stored_dtype)
        model.save_pretrained(out)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)
        return {p.name: file_sha256(p) for p in sorted(out.glob("*.safetensors"))}
    return {}


def write_outputs(out: Path, stage: str, config: dict[str, Any], inputs: dict[str, str], outputs: dict[str, str],
                  metrics: dict[str, Any], log_history: list[dict[str, Any]], keep_checkpoints: bool) -> None:
    """metrics.jsonl (the trainer's log history), the manifest, and the checkpoints cleaned up once finished."""
    tmp = out / (METRICS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in log_history), encoding="utf-8")
    tmp.replace(out / METRICS_FILE)
    write_manifest(out, {"stage": stage, "config": config, "inputs": inputs, "outputs": outputs, "metrics": metrics})
    if not keep_checkpoints and (out / CHECKPOINTS).is_dir():
        shutil.rmtree(out / CHECKPOINTS)


def start_fresh(out: Path) -> None:
    """A run that is about to overwrite ``out`` first removes the old manifest, so a crash never looks finished."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)


__all__ = [
    "LoraSettings", "TrainSettings", "already_done", "built_dataset", "callbacks", "fit", "load_model", "peft_config",
    "save_model", "sft_arguments", "split_eval", "stage_inputs", "start_fresh", "write_outputs",
]
