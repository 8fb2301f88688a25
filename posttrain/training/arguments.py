"""The one mapping from our ``train`` sections to TRL/transformers arguments, for every trainer we run.

Checkpoints go to ``OUT/checkpoints`` (``OUT/logs`` holds TensorBoard, outside it, because finished runs delete
checkpoints); tqdm is off (our progress line replaces it); TensorBoard is attached as a callback writing to
``OUT/logs``, so only the other reporters go to ``report_to``; an uninstalled reporter is an error, not a silent
no-op.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, TypeVar

from posttrain.errors import UserError
from posttrain.training.settings import Batches, Checkpoints, TrainerSettings, TrainSettings

CHECKPOINTS = "checkpoints"
LOGS = "logs"
A = TypeVar("A")


def use_bf16(precision: str) -> bool:
    import torch

    if precision == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return precision == "bf16"


def check_reporters(report_to: list[str], key: str = "train.report_to") -> list[str]:
    """Reporters must be installed: asking for wandb without it is an error, not a silent no-op."""
    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise UserError(f"{key}: {name!r} is not installed (pip install {name}); tensorboard is always available")
    return list(report_to)


def trainer_arguments(args_class: type[A], train: TrainerSettings, out: Path, *, evaluate: bool = False,
                      **specific: Any) -> A:
    """``args_class`` (``SFTConfig``, ``RewardConfig``, ``DPOConfig``, ``GRPOConfig``, ``TrainingArguments``) from a
    ``train`` section; ``evaluate``: there is an eval set; ``specific``: the trainer's own arguments, which win."""
    import torch

    mapped: dict[str, Any] = dict(
        output_dir=str(out / CHECKPOINTS),
        max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a fraction of the total steps in transformers 5
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        gradient_accumulation_steps=train.grad_accumulation,
        logging_steps=train.logging_steps,
        seed=train.seed,
        bf16=use_bf16(train.precision),
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=train.gradient_checkpointing,
        report_to=[r for r in check_reporters(train.report_to) if r != "tensorboard"],  # see training.callbacks
        disable_tqdm=True,  # the rich progress line replaces tqdm
        save_strategy="no",
    )
    if isinstance(train, Batches):
        mapped.update(num_train_epochs=train.epochs, per_device_train_batch_size=train.batch_size)
    if isinstance(train, Checkpoints):
        mapped.update(save_strategy="steps", save_steps=train.save_steps, save_total_limit=train.save_total_limit)
    if isinstance(train, TrainSettings):
        mapped.update(per_device_eval_batch_size=train.eval_batch_size or train.batch_size,
                      max_length=train.max_length, eval_strategy="steps" if evaluate and train.eval_steps else "no",
                      eval_steps=train.eval_steps)
    return args_class(**{**mapped, **specific})


def sft_arguments(train: TrainSettings, out: Path, *, evaluate: bool, **specific: Any) -> Any:
    """TRL's ``SFTConfig`` (midtrain and sft): the mapping plus packing."""
    from trl import SFTConfig

    return trainer_arguments(SFTConfig, train, out, evaluate=evaluate, packing=train.packing,
                             packing_strategy=train.packing_strategy, **specific)
