"""The ``train`` sections the training stages share, and LoRA. Importing this module imports nothing heavy, so a
config validates in milliseconds.

``TrainerSettings`` holds what every trainer takes; the mixins add what only some have (epochs and batch sizes,
checkpoints). A stage's own section subclasses them and changes defaults (``RLTrain``, ``TuningSettings``, ...);
:func:`posttrain.training.arguments.trainer_arguments` maps any of them to TRL's arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from posttrain.config import Schema
from posttrain.models.settings import ChatSettings

Reporter = Literal["tensorboard", "wandb", "trackio"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr"]


class LoraSettings(Schema):
    """A LoRA adapter (peft, through the TRL trainer's ``peft_config``) instead of full fine-tuning: only the adapter
    has gradients and optimizer state, so a model several times larger fits the same memory."""

    r: PositiveInt = 16
    alpha: PositiveFloat = 32.0
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names (the last part, e.g. q_proj, v_proj) or all-linear (every linear "
        "layer but the output head); a name that matches no module of the model is an error")
    merge: bool = Field(True, description="Save merged full weights (true) or only the adapter (false).")
    quantize: Literal["4bit"] | None = Field(
        None, description="QLoRA: the frozen base loaded in 4-bit NF4 (bitsandbytes, CUDA GPUs only)")


class TrainerSettings(Schema):
    """Optimisation and bookkeeping every trainer takes."""

    max_steps: PositiveInt | None = Field(None, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: PositiveFloat = 2e-5
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: PositiveFloat = 1.0
    grad_accumulation: PositiveInt = Field(1, description="micro-batches per optimizer step")
    logging_steps: PositiveInt = 1
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 mixed precision on GPUs that support it, fp32 on CPU (bf16 autocast is slower "
        "there).")
    gradient_checkpointing: bool = False
    report_to: list[Reporter] = Field(default_factory=lambda: ["tensorboard"])


class Batches(Schema):
    """Passes over a dataset in fixed-size batches (not the Logic track, whose batch is prompts x samples)."""

    epochs: PositiveFloat = 1.0
    batch_size: PositiveInt = 8


class Checkpoints(Schema):
    """Checkpoints every N steps, which resume a killed run."""

    save_steps: PositiveInt = 50
    save_total_limit: PositiveInt = 2
    keep_checkpoints: bool = Field(False, description="Keep checkpoints/ once finished (they resume a killed run).")


class TrainSettings(TrainerSettings, Batches, Checkpoints):
    """``train`` of the stages that train on a dataset (midtrain, sft, rm, DPO)."""

    eval_batch_size: PositiveInt | None = None
    max_length: int = Field(1024, ge=16)
    packing: bool = False
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    eval_fraction: float = Field(0.0, ge=0.0, le=0.5)
    eval_steps: PositiveInt | None = Field(None, description="Evaluate every N steps; the end of training always is.")


class DatasetStageConfig(ChatSettings):
    """The config of a stage that trains a model on one built dataset (midtrain, sft); it adds its ``train``."""

    model: str = Field(..., description="A Hugging Face model folder, a Hub id (org/name[@revision]) or a known name "
                       "(smollm2-135m-instruct).")
    data: Path = Field(..., description="A dataset folder written by `posttrain data build`, of the stage's kind.")
    output_dir: Path
    lora: LoraSettings | None = None
    resume: bool = Field(True, description="Resume from the newest checkpoint in output_dir/checkpoints.")
