"""Resuming, and the train call: a killed run continues from its newest complete checkpoint in ``OUT/checkpoints``,
and only when the checkpoints are provably of the same run.

* **Same run.** ``OUT/checkpoints/run.json`` holds the :class:`RunIdentity` of the run that writes the checkpoints
  (stage, config, input hashes), written before the first one. A resume compares it with the new run's: any
  difference is a ``UserError`` naming what differs, before anything is removed (the old checkpoints may be hours of
  work; ``resume: false`` starts over, another ``output_dir`` keeps both). Keys that cannot change the result may
  differ (:data:`RESUMABLE`), and so may the run's length (``train.max_steps``, ``train.epochs``: training on) when
  the learning-rate schedule does not depend on it (a constant schedule without warmup).
* **Complete checkpoints.** A run killed while saving leaves a checkpoint without its ``trainer_state.json`` (written
  last) or with a cut weight or optimizer file; it is skipped (and removed, as the run writes it again), and the
  newest complete one is resumed.
* **Whole-run numbers.** ``callbacks.RunTotals`` keeps the training time, CPU time, tokens and loss of the steps
  behind every checkpoint in the checkpoint's ``trainer_state.json``, so a resumed run's manifest covers the whole run.
* **Nothing removed early.** :func:`fit` removes the old manifest and checkpoints only after the trainer exists (every
  input, row and setting checked) and the resume check passed: a late config error leaves a finished run intact.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.manifest import start_fresh, write_json
from posttrain.report import say
from posttrain.training.arguments import CHECKPOINTS

RUN_FILE = "run.json"
TRAINER_STATE = "trainer_state.json"  # transformers writes it last into a checkpoint
# Config keys that may differ between the sessions of one run: how it is run, reported and kept, not what it computes.
RESUMABLE = ("resume", "output_dir", "train.report_to", "train.logging_steps", "train.save_steps",
             "train.save_total_limit", "train.keep_checkpoints", "rollout.num_workers", "rollout.resources",
             "rollout.chunk_size", "rollout.max_chunk_failures", "verify.workers", "verify.max_in_flight")
LENGTH = ("train.max_steps", "train.epochs")  # may grow when the schedule does not depend on the run's length
CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")


@dataclass(frozen=True)
class RunIdentity:
    """What makes two training sessions one run: the stage, its config and the hashes of its inputs."""

    stage: str
    config: dict[str, Any]
    inputs: dict[str, Any]

    def differences(self, old: RunIdentity) -> list[str]:
        """What differs from ``old`` (dotted config keys, input names), ignoring what may change on a resume."""
        if self.stage != old.stage:
            return [f"stage ({old.stage} -> {self.stage})"]
        constant = _length_free(self.config) and _length_free(old.config)
        ignored = RESUMABLE + (LENGTH if constant else ())
        found = [_show(key, a, b) for key, a, b in _changes(_without(old.config, ignored),
                                                              _without(self.config, ignored))]
        found += [f"input {key}" for key in sorted(set(old.inputs) | set(self.inputs))
                  if old.inputs.get(key) != self.inputs.get(key)]
        return found

    @classmethod
    def read(cls, path: Path) -> RunIdentity | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(data["stage"]), dict(data["config"]), dict(data["inputs"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _length_free(config: dict[str, Any]) -> bool:
    """The learning-rate schedule does not depend on the number of steps (training longer changes no earlier step)."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    return train.get("lr_scheduler") in CONSTANT_SCHEDULES and not train.get("warmup_ratio")


def _without(config: dict[str, Any], dotted: tuple[str, ...]) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    for key in dotted:
        *parents, last = key.split(".")
        node: Any = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return config


def _changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for key in sorted(set(old) | set(new))
                for c in _changes(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [(prefix.rstrip("."), old, new)] if old != new else []


def _show(key: str, old: Any, new: Any) -> str:
    text = f"{key} ({json.dumps(old)} -> {json.dumps(new)})"
    return text if len(text) <= 160 else key


# ---------------------------------------------------------------------------------------------------- resuming
def incomplete(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed (a save cut off by a kill), or None when it is whole."""
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE} (the save did not finish)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return f"{TRAINER_STATE} is cut off"
    from safetensors import SafetensorError, safe_open

    weights = sorted(checkpoint.glob("*.safetensors"))
    sharded = any(p.is_dir() for p in checkpoint.iterdir())  # DeepSpeed/FSDP shard folders: not checked here
    if not weights and not list(checkpoint.glob("*.bin")) and not sharded:
        return "no weight files"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt"):  # reads the header; a cut file does not match it
                pass
        except (SafetensorError, OSError) as e:
            return f"{path.name} is damaged ({e})"
    for path in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]):
        if not zipfile.is_zipfile(path):  # torch.save writes a zip; a cut one has no central directory
            return f"{path.name} is cut off"
    return None


def _checkpoints(folder: Path) -> list[Path]:
    """``checkpoint-N`` folders, newest first."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)


def resume_point(out: Path, identity: RunIdentity | None, resume: bool) -> Path | None:
    """The checkpoint a run of ``identity`` resumes from (None: it starts fresh). A ``UserError`` when ``out``
    holds checkpoints of another run; removes nothing (stages call it as a pre-flight, :func:`fit` again)."""
    folder = out / CHECKPOINTS
    found = _checkpoints(folder) if resume and folder.is_dir() else []
    if not found:
        return None
    if identity is None:
        raise ValueError("resuming needs the run's identity (RunIdentity) to check the checkpoints against")
    old = RunIdentity.read(folder / RUN_FILE)
    if old is None:
        raise UserError(f"{folder}: checkpoints ({found[0].name}, ...) with no record ({RUN_FILE}) of the run that "
                        "wrote them (an older posttrain, or another tool), so they cannot be shown to be this run's. "
                        "Set resume: false to start over (they are removed), or choose another output_dir")
    changed = identity.differences(old)
    if changed:
        raise UserError(f"{folder}: holds checkpoints of a different run: {'; '.join(changed)}. Resuming them would "
                        "continue the old weights, optimizer and schedule under this config. Set resume: false to "
                        "start over (they are removed), or choose another output_dir")
    complete = next((c for c in found if incomplete(c) is None), None)
    if complete is not None:
        _check_length(identity, complete)
    return complete


def _check_length(identity: RunIdentity, checkpoint: Path) -> None:
    """A run made shorter than a checkpoint it resumes would be a longer run than its config says."""
    max_steps = (identity.config.get("train") or {}).get("max_steps")
    step = int(checkpoint.name.split("-", 1)[1])
    if max_steps and step > max_steps:
        raise UserError(f"{checkpoint}: is at step {step}, past train.max_steps={max_steps}; raise max_steps, or set "
                        "resume: false to start over")


def last_checkpoint(trainer: Any, out: Path, resume: bool, identity: RunIdentity | None = None) -> str | None:
    """The newest complete checkpoint of this run to resume from, after :func:`resume_point`'s check; incomplete
    newer ones are skipped (said, and removed: the run writes them again), a fresh start clears old ones."""
    folder = out / CHECKPOINTS
    main = trainer.is_world_process_zero()
    checkpoint = resume_point(out, identity, resume)
    if not resume or checkpoint is None:
        if main and resume:
            for cut in _checkpoints(folder) if folder.is_dir() else []:
                say(f"skipping the incomplete checkpoint {cut} ({incomplete(cut)}); no complete one: starting over")
        if main and folder.is_dir():
            shutil.rmtree(folder)
    else:
        for newer in _checkpoints(folder):
            if newer == checkpoint:
                break
            if main:
                say(f"skipping the incomplete checkpoint {newer} ({incomplete(newer)}); removed")
                shutil.rmtree(newer)
    trainer.accelerator.wait_for_everyone()  # no process reads checkpoints while they are being removed
    if main and identity is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / RUN_FILE, asdict(identity))
    return str(checkpoint) if checkpoint is not None else None


def fit(trainer: Any, out: Path, resume: bool, identity: RunIdentity | None = None) -> tuple[Any, dict[str, float]]:
    """Run training (resuming this run's newest complete checkpoint) and the final evaluation -> (train output, eval
    metrics). ``result.metrics`` gains the whole run's numbers (``run_seconds``, ``run_cpu_seconds``,
    ``run_tokens``, ``run_loss_mean``, ``sessions``, ``resumed_from_step``) and this session's ``train_cpu_seconds``.

    Called when everything the user gave has been checked (the trainer is built): only now is the old manifest
    removed (a crash from here on never looks finished) and a fresh start's old checkpoints cleared.
    """
    from transformers.trainer_callback import PrinterCallback

    from posttrain.training.callbacks import RunTotals

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our progress callback shows them instead
    checkpoint = last_checkpoint(trainer, out, resume, identity)
    if trainer.is_world_process_zero():
        start_fresh(out)
        if checkpoint:
            say(f"resuming from {checkpoint}")
    totals = RunTotals()
    trainer.add_callback(totals)
    cpu_start = time.process_time()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # CPU seconds of this process: unlike wall time, barely moved by other jobs sharing the machine.
    result.metrics["train_cpu_seconds"] = time.process_time() - cpu_start
    result.metrics.update(totals.summary(result, trainer.state.global_step))
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    return result, eval_metrics
