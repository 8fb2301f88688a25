"""One DPO training run (TRL's DPOTrainer) from a policy folder against a reference folder, as the Chat track does it
once per round.

Pairs are TRL's conversational preference rows (``prompt``, ``chosen``, ``rejected``). DPOTrainer truncates a pair
longer than ``train.max_length`` (keeping its start) and drops one whose prompt alone fills it; both are counted here
first so a report says how many. The model is saved in float32: DPO's small updates do not survive rounding to bf16,
and the next round starts from this folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from posttrain.models.loading import load_tokenizer
from posttrain.preference.training import PairTrainSettings, log_series, summarize
from posttrain.report import Progress
from posttrain.training.arguments import trainer_arguments
from posttrain.training.checkpoints import RunIdentity, fit
from posttrain.training.model import load_model, peft_config, save_model
from posttrain.training.outputs import training_metrics
from posttrain.training.settings import LoraSettings

MARGIN, ACCURACY = "rewards/margins", "rewards/accuracies"


class DPOTrain(PairTrainSettings):
    learning_rate: float = Field(1e-6, gt=0)
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference model")
    loss_type: list[str] = Field(default_factory=lambda: ["sigmoid"], min_length=1,
                                 description="TRL DPO loss(es): sigmoid, ipo, hinge, robust, ...")
    reference: Literal["round_start", "initial"] = Field(
        "round_start", description="round_start: each round's starting policy (iterative DPO); initial: the SFT model")

    @model_validator(mode="after")
    def _held_out_is_track_level(self) -> DPOTrain:
        if self.eval_fraction:
            raise ValueError("eval_fraction: the Chat track holds out prompts with the top-level eval_fraction (one "
                             "split for pairs, on-policy prompts and the win rate); leave train.eval_fraction at 0")
        return self


def pair_lengths(tokenizer: Any, pairs: list[dict[str, Any]], max_length: int) -> dict[str, int]:
    """How many pairs DPOTrainer would truncate (prompt + answer over max_length) or drop (prompt alone fills it)."""
    truncated = dropped = 0
    for pair in pairs:
        prompt = len(tokenizer.apply_chat_template(pair["prompt"], tokenize=True, add_generation_prompt=True,
                                                   return_dict=True)["input_ids"])
        longest = max(len(tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True,
                                                        return_dict=True)["input_ids"])
                      for side in ("chosen", "rejected"))
        if prompt >= max_length:
            dropped += 1
        elif longest > max_length:
            truncated += 1
    return {"pairs_truncated": truncated, "pairs_dropped_prompt_too_long": dropped}


def train_dpo(policy_dir: Path, reference_dir: Path, pairs: list[dict[str, Any]], eval_pairs: list[dict[str, Any]],
              train: DPOTrain, out: Path, resume: bool, progress: Progress, round_: int,
              lora: LoraSettings | None = None, chat_template: str | None = None
              ) -> tuple[dict[str, Any], dict[str, str], list[dict[str, Any]]]:
    """Train ``policy_dir`` on ``pairs`` into ``out`` (checkpoints in ``out/checkpoints``, resumed when present),
    rendered with the policy's own chat template unless ``chat_template`` names another (saved with the model).

    With ``lora`` a fresh adapter trains on the policy and is merged into the saved weights (the next round starts
    from them); when the reference is the policy itself, the reference is the policy with the adapter switched off,
    so no second copy of the model is held.

    Returns (metrics, output file hashes, the trainer's log history). Metrics hold the chosen-rejected reward margin
    and accuracy over training steps and on ``eval_pairs`` before and after training.
    """
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from posttrain.training.callbacks import training_callbacks

    def as_dataset(rows: list[dict[str, Any]]) -> Any:
        return datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])

    tokenizer = load_tokenizer(policy_dir, chat_template)
    lengths = pair_lengths(tokenizer, pairs, train.max_length)
    model, _ = load_model(policy_dir, lora)
    same = Path(reference_dir).resolve() == Path(policy_dir).resolve()
    reference = None if lora is not None and same else AutoModelForCausalLM.from_pretrained(reference_dir,
                                                                                           dtype=torch.float32)
    args = trainer_arguments(DPOConfig, train, out, evaluate=bool(eval_pairs), dataloader_num_workers=0,
                             beta=train.beta, loss_type=list(train.loss_type))
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=as_dataset(pairs),
                         eval_dataset=as_dataset(eval_pairs) if eval_pairs else None, processing_class=tokenizer,
                         peft_config=peft_config(lora), callbacks=training_callbacks(train, out, progress, round_))
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts (fit removes it too, but after this evaluate)
    before = trainer.evaluate() if eval_pairs else {}
    result, after = fit(trainer, out, resume, dpo_identity(policy_dir, reference_dir, pairs, eval_pairs, train,
                                                           lora))
    merged = lora.model_copy(update={"merge": True}) if lora is not None else None
    outputs = save_model(trainer, out, tokenizer, merged, torch.float32)
    history = trainer.state.log_history
    metrics = training_metrics(result, after, history, trainer.state.global_step)
    metrics.update(lengths)
    metrics.update(
        pairs_train=len(pairs), pairs_eval=len(eval_pairs), reference=str(reference_dir),
        margin=summarize(log_series(history, MARGIN)), accuracy=summarize(log_series(history, ACCURACY)),
        eval_margin_before=before.get(f"eval_{MARGIN}"), eval_margin_after=after.get(f"eval_{MARGIN}"),
        eval_accuracy_before=before.get(f"eval_{ACCURACY}"), eval_accuracy_after=after.get(f"eval_{ACCURACY}"),
    )
    return metrics, outputs, history


def dpo_identity(policy_dir: Path, reference_dir: Path, pairs: list[dict[str, Any]], eval_pairs: list[dict[str, Any]],
                 train: DPOTrain, lora: LoraSettings | None = None) -> RunIdentity:
    """What a DPO run's checkpoints must match to be resumed: its settings, the policy and reference it starts from
    (by folder: the Chat track checks what they hold) and the content of its pairs."""
    import hashlib
    import json

    def digest(rows: list[dict[str, Any]]) -> str:
        return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()

    return RunIdentity("dpo", {"train": train.model_dump(mode="json"),
                               "lora": lora.model_dump(mode="json") if lora is not None else None},
                       {"policy": str(Path(policy_dir).resolve()), "reference": str(Path(reference_dir).resolve()),
                        "pairs": digest(pairs), "eval_pairs": digest(eval_pairs)})
