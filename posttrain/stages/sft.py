"""Supervised fine-tuning: a built chat dataset -> a fine-tuned model folder (full weights, merged LoRA, or adapter).

The recipe, top to bottom: resolve the model (folder, known name or Hub id) and the dataset; load the model's chat
format (its own template unless ``chat_template`` names another; its tool-call format); check every row (a bad row
is an error naming it, never a silent drop); split off an eval set; render each conversation in the model's format
with its assistant-only loss mask (:mod:`posttrain.models.masks`) and measure its length; train with TRL's
``SFTTrainer`` on those rows, with optional packing and LoRA; save the model with its template, ``metrics.jsonl`` and
``manifest.json``. A finished run with the same config and inputs is a no-op; a killed run resumes from its newest
checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from posttrain.data.formats import ROLES
from posttrain.errors import UserError
from posttrain.manifest import finished_run
from posttrain.models.chat import ChatFormat, describe, load_chat
from posttrain.models.masks import MaskPlan, plan_masks, stop_token_trained, training_rows
from posttrain.report import Progress, as_progress
from posttrain.report.tables import print_finished
from posttrain.stages.contract import Stage, StageResult, output_folder, trainer_inputs, training_summary
from posttrain.training.arguments import sft_arguments
from posttrain.training.checkpoints import RunIdentity, fit, resume_point
from posttrain.training.data import model_and_dataset, split_eval
from posttrain.training.model import check_lora, load_model, peft_config, save_model
from posttrain.training.outputs import training_metrics, write_outputs
from posttrain.training.settings import DatasetStageConfig, TrainSettings

NAME = "sft"


class SFTTrain(TrainSettings):
    assistant_only_loss: bool = Field(True, description="Train only on assistant tokens (incl. their end of turn); "
                                      "how they are found depends on the chat template (docs/training.md).")


class SFTStageConfig(DatasetStageConfig):
    """``posttrain sft`` config (``data``: a built `chat` dataset)."""

    train: SFTTrain = Field(default_factory=SFTTrain)


def run_sft(cfg: SFTStageConfig, source: str = "config", progress: Progress | None = None) -> StageResult:
    """Run SFT as configured; ``source`` (the config file) prefixes error messages."""
    from trl import SFTTrainer

    from posttrain.training.callbacks import training_callbacks

    report = as_progress(progress, NAME)
    out = STAGE.open(cfg, source)  # the output folder may be written; trackers are installed
    config = cfg.model_dump(mode="json")

    # 1. Inputs: the model (folder or known name) and the built chat dataset. Same config + inputs as last time: done.
    model_dir, dataset, inputs = model_and_dataset(cfg, "chat", source)
    if finished_run(out, NAME, config, inputs):
        report.say(f"{out} is already trained with this config and these inputs; nothing to do")
        return StageResult.read(out, model_dir=out)
    check_lora(cfg.lora, model_dir, f"{source}: lora")
    run = RunIdentity(NAME, config, inputs)
    resume_point(out, run, cfg.resume)  # checkpoints of another run: refused now, before any work

    # 2. The model's own chat format (or the config's template and tool format), and how its assistant tokens are
    #    found for the loss (the template's {% generation %} markers, TRL's training variant, or prefix rendering).
    chat = load_chat(model_dir, cfg.chat_template, cfg.tool_format, source=source)
    report.say(describe(chat))
    where = cfg.data / "data.parquet"
    rows = chat_rows(dataset, where, cfg.train.assistant_only_loss)
    if any(t != "[]" for t in rows["tools"]):
        chat.check_tools(f"{source}: chat_template", f"rows of {where}")
    plan = plan_masks(chat)
    if cfg.train.assistant_only_loss:
        report.say(f"assistant-only loss: {plan.method} ({plan.detail})")
        if not stop_token_trained(chat, plan):
            report.say("warning: the chat template writes no end-of-turn token inside the assistant turn, so the "
                       "model may not learn to stop; give a chat_template whose assistant turns end with one")

    # 3. Rows: each conversation split off for eval or kept for training, then rendered and masked in the model's
    #    format (a template that rewrites history yields several rows per conversation); lengths are reported.
    train_convs, eval_convs = split_eval(rows, cfg.train.eval_fraction, cfg.train.seed)
    train_rows, split_train = tokenized_rows(chat, train_convs, plan, cfg.train.assistant_only_loss, where)
    eval_rows = tokenized_rows(chat, eval_convs, plan, cfg.train.assistant_only_loss, where)[0] \
        if eval_convs is not None else None
    lengths = [len(ids) for ids in train_rows["input_ids"]] + (
        [len(ids) for ids in eval_rows["input_ids"]] if eval_rows is not None else [])
    truncated = sum(n > cfg.train.max_length for n in lengths)
    if truncated:
        report.say(f"warning: {truncated} of {len(lengths)} training rows are longer than train.max_length="
                   f"{cfg.train.max_length} tokens and will be truncated (longest: {max(lengths)})")
    if split_train:
        report.say(f"{split_train} conversations were split into several rows: the chat template rewrites earlier "
                   "turns (e.g. drops old reasoning), so each turn is trained in the context the template shows it")

    # 4. Model and trainer: TRL's SFTTrainer on the rendered rows (labels from our masks); LoRA through peft.
    model, stored_dtype = load_model(model_dir, cfg.lora)
    args = sft_arguments(cfg.train, out, evaluate=eval_rows is not None, assistant_only_loss=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                         processing_class=chat.tokenizer, peft_config=peft_config(cfg.lora),
                         callbacks=training_callbacks(cfg.train, out, report))

    # 5. Train (resuming this run's newest complete checkpoint; only now is the old manifest removed), evaluate.
    trained, eval_metrics = fit(trainer, out, cfg.resume, run)

    # 6. Outputs: the model and tokenizer (with its chat template: its own or the config's), metrics.jsonl, manifest.
    outputs = save_model(trainer, out, chat.tokenizer, cfg.lora, stored_dtype)
    if not trainer.is_world_process_zero():
        return StageResult(out, {}, out)
    metrics = training_metrics(trained, eval_metrics, trainer.state.log_history, trainer.state.global_step)
    metrics.update(rows_train=len(train_rows), rows_eval=len(eval_rows) if eval_rows is not None else 0,
                   rows_truncated=truncated, dataset_tokens=sum(lengths), conversations_split=split_train,
                   chat={**chat.record(), "assistant_mask": plan.record() if cfg.train.assistant_only_loss else None})
    write_outputs(out, NAME, config, inputs, outputs, metrics, trainer.state.log_history, cfg.train.keep_checkpoints)
    print_finished(NAME, out, metrics)
    return StageResult.read(out, model_dir=out)


def chat_rows(dataset: Any, where: Path, need_assistant: bool) -> Any:
    """Validate each row's messages and tools -> a Dataset of ``messages`` + ``tools`` (a JSON list string).

    The built format stores ``tools`` as ``""`` when a row has none; TRL decodes the string per row for the chat
    template, so it becomes ``"[]"`` (no tools block) rather than a string that is not JSON.
    """
    import datasets

    problems: list[str] = []
    tools_out: list[str] = []
    ids = dataset["id"] if "id" in dataset.column_names else [None] * len(dataset)
    for i, (row_id, messages, tools) in enumerate(zip(ids, dataset["messages"], dataset["tools"], strict=True)):
        error = _row_problem(messages, tools, need_assistant)
        if error:
            problems.append(f"row {i}" + (f" (id {row_id})" if row_id else "") + f": {error}")
        tools_out.append(tools if tools and tools.strip() else "[]")
    if problems:
        shown = "\n  ".join(problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise UserError(f"{where}: {len(problems)} of {len(dataset)} rows cannot be trained on:\n  {shown}{more}")
    return datasets.Dataset.from_dict({"messages": dataset["messages"], "tools": tools_out})


def _row_problem(messages: Any, tools: Any, need_assistant: bool) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: expected a non-empty list of {role, content}"
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return f"messages[{j}]: expected role in {ROLES} and string content, got {m!r:.120}"
    if need_assistant and not any(m["role"] == "assistant" and m["content"] for m in messages):
        return "no assistant message to train on (train.assistant_only_loss is true)"
    if tools and tools.strip():
        try:
            decoded = json.loads(tools)
        except json.JSONDecodeError as e:
            return f"tools: not valid JSON ({e.msg})"
        if not isinstance(decoded, list) or not all(isinstance(t, dict) for t in decoded):
            return "tools: expected a JSON list of tool schemas"
    return None


def tokenized_rows(chat: ChatFormat, rows: Any, plan: MaskPlan, assistant_only: bool, where: Path) -> tuple[Any, int]:
    """Conversations -> a Dataset of ``input_ids`` + ``assistant_masks`` in the model's own format (TRL builds the
    labels from the masks), and how many conversations became more than one row."""
    import datasets

    ids, masks, split = [], [], 0
    for i, (messages, tools) in enumerate(zip(rows["messages"], rows["tools"], strict=True)):
        parts = training_rows(chat, messages, json.loads(tools) or None, plan, assistant_only=assistant_only,
                              where=f"{where}: row {i}: ")
        split += len(parts) > 1
        for part in parts:
            ids.append(part.input_ids)
            masks.append(part.assistant_masks)
    return datasets.Dataset.from_dict({"input_ids": ids, "assistant_masks": masks}), split


STAGE = Stage(NAME, SFTStageConfig, run_sft,
              "Supervised fine-tuning on a built `chat` dataset (assistant-only loss, tools, packing, LoRA).",
              model_dir=output_folder, policy=True, eval_name=NAME, wire=trainer_inputs("sft"),
              summary=training_summary)
