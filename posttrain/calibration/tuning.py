"""Calibration tuning (Kapoor et al. 2024, "Large language models must be taught to know what they don't know").

A LoRA adapter learns to answer the follow-up "Is the proposed answer correct?" truthfully: for a conversation ending
in one of the model's own graded answers, the loss is

    loss = BCE(z, correct) + kl_coef · mean over answer tokens of KL(p_base(· | prefix) ‖ p_tuned(· | prefix))

where ``z = logsumexp(yes logits) − logsumexp(no logits)`` at the position after the query (the p_yes logit, so
training and elicitation read the very same number) and the KL term, on the next-token distributions that produced
the answer, keeps the model's answers what they were. With LoRA the frozen base is the same model with its adapters
disabled, so no second copy is held. A ``transformers.Trainer`` runs the optimisation; only ``compute_loss`` is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from posttrain.calibration.elicit import YesNoTokens, left_padded, query_inputs, yes_no_logit
from posttrain.errors import UserError
from posttrain.training.arguments import trainer_arguments
from posttrain.training.model import peft_config
from posttrain.training.settings import Batches, LoraSettings, Reporter, Scheduler, TrainerSettings

Message = dict[str, Any]


class TuningSettings(TrainerSettings, Batches):
    """The ``tuning`` section: the loss and the optimisation of the LoRA adapter."""

    kl_coef: float = Field(1.0, ge=0.0, description="weight of the KL to the base model on the answer tokens")
    output: Literal["adapter", "merged"] = Field(
        "adapter", description="adapter: the output keeps the input weights (answers bit-identical) and saves the LoRA "
        "as confidence_adapter/, applied only to read p_yes; merged: the LoRA merged into the weights (one model for "
        "answers and confidence; the KL term keeps answers close, but greedy answers can still change)")
    learning_rate: PositiveFloat = 1e-4
    lr_scheduler: Scheduler = "constant"
    batch_size: PositiveInt = 4
    max_length: int = Field(1024, ge=16, description="longer examples (prompt + answer + query) are left out and "
                            "counted")
    report_to: list[Reporter] = Field(default_factory=list)


@dataclass(frozen=True)
class Example:
    """One graded answer: the conversation ending in it, and whether the verifier passed it."""

    messages: list[Message]
    correct: bool
    tools: list[dict[str, Any]] | None = None


def build_rows(tokenizer: Any, examples: Sequence[Example], query: str,
               max_length: int, chat: Any = None) -> tuple[list[dict[str, Any]], int]:
    """Tokenized training rows (ids, answer span, label) and how many examples were too long to keep."""
    rows, too_long = [], 0
    for ex in examples:
        inputs = query_inputs(tokenizer, ex.messages, query, ex.tools, chat)
        if len(inputs.input_ids) > max_length:
            too_long += 1
            continue
        start, end = inputs.answer_span
        rows.append({"input_ids": inputs.input_ids, "answer_start": start, "answer_end": end,
                     "label": float(ex.correct)})
    return rows, too_long


class _Collator:
    """Left-pads a batch (the query's last token lands in the last column for every row) and marks the positions
    whose next-token distribution produced an answer token."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids, mask, positions = left_padded([f["input_ids"] for f in features], self.pad_id)
        answer = torch.zeros_like(mask)
        for i, f in enumerate(features):
            shift = ids.shape[1] - len(f["input_ids"])
            # the logits at position t predict token t + 1, so answer tokens [s, e) come from positions [s-1, e-1)
            answer[i, shift + max(f["answer_start"] - 1, 0): shift + f["answer_end"] - 1] = 1
        labels = torch.tensor([f["label"] for f in features], dtype=torch.float32)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "answer_mask": answer,
                "labels": labels}


def _trainer_class() -> type:
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class CalibrationTuningTrainer(Trainer):
        """``Trainer`` with the calibration-tuning loss; logs its two parts as ``bce`` and ``kl``."""

        loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

        def __init__(self, *args: Any, tokens: YesNoTokens, kl_coef: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tokens, self.kl_coef = tokens, kl_coef
            self._parts: dict[str, list[float]] = {"bce": [], "kl": []}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            answer = inputs["answer_mask"]
            # Only the answer's and the query's positions need logits (left padding puts them last).
            first = int(answer.float().argmax(dim=1).min()) if bool(answer.any()) else answer.shape[1] - 1
            keep = answer.shape[1] - first
            forward = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids")}
            logits = model(**forward, logits_to_keep=keep).logits.float()
            z = yes_no_logit(logits[:, -1], self.tokens)
            bce = F.binary_cross_entropy_with_logits(z, inputs["labels"].to(z.dtype))
            kl = torch.zeros((), device=z.device)
            if self.kl_coef > 0 and bool(answer.any()):
                with torch.no_grad(), model.disable_adapter():
                    base = model(**forward, logits_to_keep=keep).logits.float()
                m = answer[:, first:].to(logits.dtype)
                base_logp = base.log_softmax(-1)
                per_token = (base_logp.exp() * (base_logp - logits.log_softmax(-1))).sum(-1)
                kl = (per_token * m).sum() / m.sum()
            self._parts["bce"].append(float(bce.detach()))
            self._parts["kl"].append(float(kl.detach()))
            loss = bce + self.kl_coef * kl
            return (loss, {"logits": z}) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            for name, values in self._parts.items():
                if values and "loss" in logs:
                    logs[name] = sum(values) / len(values)
                    values.clear()
            super().log(logs, start_time)

    return CalibrationTuningTrainer


def make_trainer(model: Any, tokenizer: Any, examples: Sequence[Example], tokens: YesNoTokens, query: str,
                 settings: TuningSettings, lora: LoraSettings, work_dir: Path,
                 chat: Any = None) -> tuple[Any, dict[str, Any]]:
    """A ready-to-train ``CalibrationTuningTrainer`` on ``examples`` with a fresh LoRA adapter on ``model``
    -> (trainer, data counts). Training runs in ``work_dir`` and saves no checkpoints: a few minutes of training,
    where the sampled answers are what is worth keeping."""
    import datasets
    from peft import get_peft_model
    from transformers import TrainingArguments

    from posttrain.training.callbacks import training_callbacks

    rows, too_long = build_rows(tokenizer, examples, query, settings.max_length, chat)
    if not rows:
        raise UserError(f"tuning: all {len(examples)} training examples are longer than tuning.max_length="
                        f"{settings.max_length} tokens")
    labels = [r["label"] for r in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    peft_model = get_peft_model(model, peft_config(lora))
    trainer = _trainer_class()(
        model=peft_model, train_dataset=datasets.Dataset.from_list(rows),
        # the answer span and label columns are ours, not the model's
        args=trainer_arguments(TrainingArguments, settings, work_dir, remove_unused_columns=False),
        data_collator=_Collator(pad), processing_class=tokenizer, callbacks=training_callbacks(settings, work_dir),
        tokens=tokens, kl_coef=settings.kl_coef,
    )
    counts = {"examples": len(rows), "correct": int(sum(labels)), "too_long": too_long}
    return trainer, counts
