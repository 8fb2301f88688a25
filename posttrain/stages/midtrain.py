"""Mid-training (continued pre-training): a built ``text`` dataset -> a model folder, next-token loss on every token.

The recipe, top to bottom: resolve the model and the dataset; tokenize each document and end it with the tokenizer's
document separator (``<|endoftext|>`` when it has one, as in pre-training, else its eos); split off an eval set; pack
the token streams into ``max_length`` rows with TRL (``bfd_split`` by default: no token is lost and attention stays
inside each document) and train with ``SFTTrainer`` on the pre-tokenized ``input_ids``; save the model,
``metrics.jsonl`` and ``manifest.json``. Replay data (a share of earlier-stage data against forgetting) is mixed in by
the data recipe, not here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat

from posttrain.errors import UserError
from posttrain.manifest import finished_run
from posttrain.models.loading import load_tokenizer
from posttrain.report import Progress, as_progress
from posttrain.report.tables import print_finished
from posttrain.stages.contract import Stage, StageResult, output_folder, trainer_inputs, training_summary
from posttrain.training.arguments import sft_arguments
from posttrain.training.checkpoints import RunIdentity, fit, resume_point
from posttrain.training.data import model_and_dataset, split_eval
from posttrain.training.model import check_lora, load_model, peft_config, save_model
from posttrain.training.outputs import training_metrics, write_outputs
from posttrain.training.settings import DatasetStageConfig, TrainSettings

NAME = "midtrain"
DOC_SEPARATORS = ("<|endoftext|>",)


class MidtrainTrain(TrainSettings):
    packing: bool = True
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd_split"
    learning_rate: PositiveFloat = 5e-5


class MidtrainStageConfig(DatasetStageConfig):
    """``posttrain midtrain`` config (``data``: a built `text` dataset)."""

    train: MidtrainTrain = Field(default_factory=MidtrainTrain)


def run_midtrain(cfg: MidtrainStageConfig, source: str = "config", progress: Progress | None = None) -> StageResult:
    """Run mid-training as configured; ``source`` (the config file) prefixes error messages."""
    from trl import SFTTrainer

    from posttrain.training.callbacks import training_callbacks

    report = as_progress(progress, NAME)
    out = STAGE.open(cfg, source)  # the output folder may be written; trackers are installed
    config = cfg.model_dump(mode="json")

    # 1. Inputs: the model and the built text dataset. Same config + inputs as a finished run: nothing to do.
    model_dir, dataset, inputs = model_and_dataset(cfg, "text", source)
    if finished_run(out, NAME, config, inputs):
        report.say(f"{out} is already trained with this config and these inputs; nothing to do")
        return StageResult.read(out, model_dir=out)
    check_lora(cfg.lora, model_dir, f"{source}: lora")
    run = RunIdentity(NAME, config, inputs)
    resume_point(out, run, cfg.resume)  # checkpoints of another run: refused now, before any work

    # 2. Documents -> token ids, each ended by the document separator; report what packing will cut.
    tokenizer = load_tokenizer(model_dir, cfg.chat_template, key=f"{source}: chat_template", need_template=False)
    docs = tokenized_documents(dataset, cfg.data / "data.parquet", tokenizer)
    lengths = [len(ids) for ids in docs["input_ids"]]
    cut = 0 if cfg.train.packing and cfg.train.packing_strategy != "bfd" else sum(
        n > cfg.train.max_length for n in lengths)
    if cut:
        report.say(f"warning: {cut} of {len(lengths)} documents are longer than train.max_length="
                   f"{cfg.train.max_length} and will be truncated; packing_strategy=bfd_split keeps every token")
    train_docs, eval_docs = split_eval(docs, cfg.train.eval_fraction, cfg.train.seed)

    # 3. Model and trainer: SFTTrainer on pre-tokenized ids trains on every token (language modelling) and packs.
    model, stored_dtype = load_model(model_dir, cfg.lora)
    args = sft_arguments(cfg.train, out, evaluate=eval_docs is not None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_docs, eval_dataset=eval_docs,
                         processing_class=tokenizer, peft_config=peft_config(cfg.lora),
                         callbacks=training_callbacks(cfg.train, out, report))

    # 4. Train (resuming this run's newest complete checkpoint; only now is the old manifest removed), evaluate.
    trained, eval_metrics = fit(trainer, out, cfg.resume, run)

    # 5. Outputs: the model and tokenizer, metrics.jsonl, the manifest, a summary table.
    outputs = save_model(trainer, out, tokenizer, cfg.lora, stored_dtype)
    if not trainer.is_world_process_zero():
        return StageResult(out, {}, out)
    metrics = training_metrics(trained, eval_metrics, trainer.state.log_history, trainer.state.global_step)
    if "eval_loss" in metrics:
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    metrics.update(documents_train=len(train_docs), documents_eval=len(eval_docs) if eval_docs is not None else 0,
                   documents_truncated=cut, dataset_tokens=sum(lengths))
    write_outputs(out, NAME, config, inputs, outputs, metrics, trainer.state.log_history, cfg.train.keep_checkpoints)
    print_finished(NAME, out, metrics)
    return StageResult.read(out, model_dir=out)


def document_separator(tokenizer: Any) -> int:
    """Pre-training's end-of-document token when the vocabulary has one, else the tokenizer's eos."""
    vocab = tokenizer.get_vocab()
    for token in DOC_SEPARATORS:
        if token in vocab:
            return vocab[token]
    return tokenizer.eos_token_id


def tokenized_documents(dataset: Any, where: Path, tokenizer: Any) -> Any:
    """Rows' ``text`` -> a Dataset with one ``input_ids`` list per document (separator appended)."""
    import datasets

    texts = list(dataset["text"])
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise UserError(f"{where}: {len(empty)} of {len(texts)} rows have no text (first: row {empty[0]}); "
                        "expected a non-empty `text` in every row of a text dataset")
    sep = document_separator(tokenizer)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return datasets.Dataset.from_dict({"input_ids": [doc + [sep] for doc in ids]})


STAGE = Stage(NAME, MidtrainStageConfig, run_midtrain,
              "Mid-training (continued pre-training) on a built `text` dataset, packed, loss on every token.",
              model_dir=output_folder, policy=True, eval_name=NAME, wire=trainer_inputs("midtrain"),
              summary=training_summary)
