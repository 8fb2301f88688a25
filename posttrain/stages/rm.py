"""``posttrain rm``: train a reward model on preference pairs with TRL's RewardTrainer.

    model (usually the SFT model) + preference dataset -> OUT/: an HF sequence-classification folder (one label)
                                                          + manifest.json + metrics.jsonl

The recipe, top to bottom: resolve the model and the preference dataset (a built folder, or a recipe built into
``OUT/data``); tokenize every pair as RewardTrainer would (pairs over ``train.max_length`` are counted and left out,
as the trainer would drop them anyway); hold out a share of the prompts; measure pairwise accuracy; train (a killed
run resumes from its newest checkpoint); measure again; save. A finished run with the same config and inputs is a
no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from posttrain.errors import UserError
from posttrain.manifest import finished_run
from posttrain.models.loading import load_tokenizer, resolve_model
from posttrain.models.settings import ChatSettings
from posttrain.preference.data import resolve_data, split_held_out
from posttrain.preference.scorers import reward_scores
from posttrain.preference.training import PairTrainSettings, log_series, summarize
from posttrain.report import Progress, as_progress
from posttrain.report.tables import print_finished
from posttrain.stages.contract import (
    Stage,
    StageResult,
    gain,
    manifest_metrics,
    output_folder,
    trainer_inputs,
)
from posttrain.training.arguments import trainer_arguments
from posttrain.training.checkpoints import RunIdentity, fit, resume_point
from posttrain.training.data import built_dataset, training_inputs
from posttrain.training.model import check_lora, peft_config, save_model, stored_dtype
from posttrain.training.outputs import training_metrics, write_outputs
from posttrain.training.settings import LoraSettings

NAME = "rm"


class RMTrain(PairTrainSettings):
    learning_rate: float = Field(1e-5, gt=0)
    eval_fraction: float = Field(0.1, ge=0.0, le=0.5, description="share of prompts held out for pairwise accuracy")
    center_rewards_coefficient: float | None = Field(None, ge=0, description="e.g. 0.01 keeps rewards near zero")
    accuracy_pairs: int = Field(128, ge=1, description="training pairs (the first N) whose accuracy is measured before "
                                "and after; held-out pairs are always measured in full")


class RMStageConfig(ChatSettings):
    """``posttrain rm`` config (``tool_format`` is not used: pairs are rendered as they are written)."""

    model: str = Field(..., description="A Hugging Face model folder, Hub id or known name (usually the SFT model).")
    data: Path = Field(..., description="A preference dataset folder (`posttrain data build`) or a recipe .yaml.")
    output_dir: Path
    lora: LoraSettings | None = Field(None, description="train a LoRA adapter (and the score head) instead of every "
                                      "weight; merge: false saves only the adapter, which scorers load with its base")
    train: RMTrain = Field(default_factory=RMTrain)
    resume: bool = Field(True, description="Resume from the newest checkpoint in output_dir/checkpoints.")


def run_rm(cfg: RMStageConfig, source: str = "config", progress: Progress | None = None) -> StageResult:
    """Train the reward model as configured; ``source`` (the config file) prefixes error messages. The manifest in
    the output folder holds the metrics."""
    from trl import RewardConfig, RewardTrainer

    from posttrain.training.callbacks import training_callbacks

    report = as_progress(progress, NAME)
    out = STAGE.open(cfg, source)  # the output folder may be written; trackers are installed
    config = cfg.model_dump(mode="json")

    # 1. Inputs: the model and the preference pairs. Same config + inputs as last time: nothing to do.
    model_dir = resolve_model(cfg.model, key=f"{source}: model")
    data_dir = resolve_data(cfg.data, out / "data", key=f"{source}: data")
    dataset, _ = built_dataset(data_dir, "preference", source)
    inputs = training_inputs(data_dir, model_dir)
    if finished_run(out, NAME, config, inputs):
        report.event("done", f"{out} already holds this reward model; nothing to do")
        return StageResult.read(out, model_dir=out)
    check_lora(cfg.lora, model_dir, f"{source}: lora")
    run = RunIdentity(NAME, config, inputs)
    resume_point(out, run, cfg.resume)  # checkpoints of another run: refused now, before any work

    # 2. Pairs: tokenized as the trainer would (chat template over prompt + answer); too-long pairs counted, left out.
    tokenizer = load_tokenizer(model_dir, cfg.chat_template, key=f"{source}: chat_template")
    rows = dataset.to_list()
    pairs, too_long = tokenize_pairs(rows, tokenizer, cfg.train.max_length)
    if too_long:
        report.say(f"warning: {too_long} of {len(rows)} pairs are longer than train.max_length="
                   f"{cfg.train.max_length} tokens and are left out", metrics={"too_long": too_long})
    train_rows, eval_rows = split_held_out(pairs, cfg.train.eval_fraction, cfg.train.seed)
    if not train_rows:
        raise UserError(f"{source}: data: no pairs left to train on ({len(rows)} read, {too_long} over "
                        f"train.max_length, {len(eval_rows)} held out by train.eval_fraction)")

    # 3. Trainer: TRL loads the model with a fresh one-label score head (seeded); with LoRA the adapter and the head
    # train (peft's SEQ_CLS task keeps the head trainable and saves it with the adapter).
    args = trainer_arguments(RewardConfig, cfg.train, out, evaluate=bool(eval_rows), dataloader_num_workers=0,
                             center_rewards_coefficient=cfg.train.center_rewards_coefficient)
    trainer = RewardTrainer(model=_reward_model(model_dir, cfg.lora), args=args,
                            train_dataset=_ids_dataset(train_rows),
                            eval_dataset=_ids_dataset(eval_rows) if eval_rows else None, processing_class=tokenizer,
                            peft_config=peft_config(cfg.lora, "SEQ_CLS"),
                            callbacks=training_callbacks(cfg.train, out, report))

    # 4. Pairwise accuracy before, train (resuming from the newest checkpoint), accuracy after.
    report.say(f"training on {len(train_rows)} pairs; {len(eval_rows)} held out")
    measured = train_rows[:cfg.train.accuracy_pairs]  # a forward pass per answer: bounded for large datasets
    before = {"train": pairwise_accuracy(trainer.model, tokenizer, measured),
              "eval": pairwise_accuracy(trainer.model, tokenizer, eval_rows)}
    trained, eval_metrics = fit(trainer, out, cfg.resume, run)
    after = {"train": pairwise_accuracy(trainer.model, tokenizer, measured),
             "eval": pairwise_accuracy(trainer.model, tokenizer, eval_rows)}

    # 5. Outputs: the reward model and tokenizer, metrics.jsonl, the manifest, a summary table.
    outputs = save_model(trainer, out, tokenizer, cfg.lora, stored_dtype(model_dir))
    history = trainer.state.log_history
    metrics = training_metrics(trained, eval_metrics, history, trainer.state.global_step)
    metrics.update(
        pairs_read=len(rows), pairs_too_long=too_long, pairs_train=len(train_rows), pairs_eval=len(eval_rows),
        pairs_accuracy_measured=len(measured),
        train_accuracy_before=before["train"]["accuracy"], train_accuracy_after=after["train"]["accuracy"],
        eval_accuracy_before=before["eval"]["accuracy"], eval_accuracy_after=after["eval"]["accuracy"],
        pairwise_accuracy={"before": before, "after": after},
        logged_accuracy=summarize(log_series(history, "accuracy")),
        logged_margin=summarize(log_series(history, "margin")),
    )
    write_outputs(out, NAME, config, inputs, outputs, metrics, history, cfg.train.keep_checkpoints)
    if not report.forwarding:
        print_finished(NAME, out, metrics)
    report.event("done", f"reward model written to {out}", metrics=metrics)
    return StageResult.read(out, model_dir=out)


def tokenize_pairs(rows: list[dict[str, Any]], tokenizer: Any, max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Each pair's chosen and rejected conversation as token ids (RewardTrainer's rendering); -> (pairs, too long)."""
    pairs, too_long = [], 0
    for row in rows:
        chosen = _render(tokenizer, row["prompt"] + row["chosen"])
        rejected = _render(tokenizer, row["prompt"] + row["rejected"])
        if max(len(chosen), len(rejected)) > max_length:
            too_long += 1
            continue
        pairs.append({"bucket": row["bucket"], "prompt": row["prompt"], "chosen_ids": chosen,
                      "rejected_ids": rejected})
    return pairs, too_long


def pairwise_accuracy(model: Any, tokenizer: Any, pairs: list[dict[str, Any]], batch_size: int = 16) -> dict[str, Any]:
    """How often the model scores chosen above rejected (a tie counts half), overall and per bucket."""
    if not pairs:
        return {"pairs": 0, "accuracy": None, "margin": None, "buckets": {}}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chosen = reward_scores(model, pad, [p["chosen_ids"] for p in pairs], batch_size)
    rejected = reward_scores(model, pad, [p["rejected_ids"] for p in pairs], batch_size)
    wins = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)]
    buckets: dict[str, list[float]] = {}
    for pair, w in zip(pairs, wins, strict=True):
        buckets.setdefault(pair["bucket"], []).append(w)
    return {
        "pairs": len(pairs), "accuracy": sum(wins) / len(wins),
        "margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(pairs),
        "buckets": {b: {"pairs": len(v), "accuracy": sum(v) / len(v)} for b, v in sorted(buckets.items())},
    }


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def _reward_model(model_dir: Path, lora: LoraSettings | None) -> Any:
    """What RewardTrainer gets: the folder (it builds the one-label model itself, seeded), or with QLoRA the 4-bit
    sequence-classification model built here."""
    if lora is None or lora.quantize is None:
        return str(model_dir)
    from posttrain.training.model import load_model

    return load_model(model_dir, lora, auto_class="AutoModelForSequenceClassification")[0]


def _ids_dataset(pairs: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.Dataset.from_dict({"chosen_ids": [p["chosen_ids"] for p in pairs],
                                       "rejected_ids": [p["rejected_ids"] for p in pairs]})


def rm_summary(cfg: RMStageConfig) -> dict[str, Any]:
    m = manifest_metrics(cfg.output_dir)
    return {"gains": [gain("held-out pairwise accuracy", m.get("eval_accuracy_before"), m.get("eval_accuracy_after")),
                      gain("train pairwise accuracy", m.get("train_accuracy_before"), m.get("train_accuracy_after"))],
            "details": {k: m[k] for k in ("steps", "pairs_train", "pairs_eval", "duration_s") if k in m}}


STAGE = Stage(NAME, RMStageConfig, run_rm,
              "Train a reward model (TRL RewardTrainer) on a preference dataset; pairwise accuracy before/after.",
              model_dir=output_folder, wire=trainer_inputs("preference"), summary=rm_summary)
