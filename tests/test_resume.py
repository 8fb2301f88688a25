"""Resuming a training run (the trainer kit every training stage shares: `posttrain.training.checkpoints`), on SFT
with the tiny model: only checkpoints of the same run are resumed, half-written ones are skipped, a killed and
resumed run's manifest covers the whole run, and nothing is removed before every check has passed.

The kill is a real SIGKILL of a `posttrain sft` process (slowed after its first checkpoint so the test can kill it
there); the half-written checkpoint is a real checkpoint whose weight file is cut, as a kill during the save leaves
it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_built_dataset
from transformers import AutoModelForCausalLM

from posttrain.errors import UserError
from posttrain.stages.sft import SFTStageConfig, run_sft
from posttrain.training.checkpoints import RUN_FILE, RunIdentity, incomplete

COMMON = {"batch_size": 4, "learning_rate": 3e-3, "max_length": 256, "save_steps": 2, "report_to": [],
          "lr_scheduler": "constant"}  # constant: the resumed and the straight run follow the same schedule


def chat_rows(n: int = 24, offset: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} + {offset + 3}?"},
                          {"role": "assistant", "content": f"{i} + {offset + 3} = {i + offset + 3}."}], "tools": ""}
            for i in range(n)]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_built_dataset(tmp_path_factory.mktemp("resume") / "data", "chat", chat_rows())


@pytest.fixture(scope="module")
def straight(tiny_model_dir: Path, chat_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of 4 steps: what every resumed run must equal."""
    return run_sft(config(tiny_model_dir, chat_data, tmp_path_factory.mktemp("straight") / "out")).output_dir


def config(model: Path, data: Path, out: Path, **train) -> SFTStageConfig:
    return SFTStageConfig(model=str(model), data=data, output_dir=out, train={"max_steps": 4, **COMMON, **train})


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def same_weights(a: Path, b: Path) -> bool:
    x, y = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (a, b))
    return all(torch.allclose(x[k], y[k], atol=1e-6) for k in x)


KILLABLE = """
import sys, time
from transformers import TrainerCallback
import posttrain.training.callbacks as callbacks

class StopAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        print("saved", state.global_step, flush=True)
        time.sleep(600)  # the test SIGKILLs the process here

real = callbacks.training_callbacks
callbacks.training_callbacks = lambda *a, **k: [*real(*a, **k), StopAfterFirstCheckpoint()]
from posttrain.cli import main
sys.argv = ["posttrain", "sft", *sys.argv[1:]]
main()
"""


def test_a_killed_run_resumes_and_its_manifest_covers_the_whole_run(tiny_model_dir, chat_data, straight, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    overrides = [f"model={tiny_model_dir}", f"data={chat_data}", f"output_dir={out}",
                 "train=" + json.dumps({"max_steps": 4, **COMMON})]
    proc = subprocess.Popen([sys.executable, str(script), *overrides], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            if line.startswith("saved 2"):
                break
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    checkpoint = out / "checkpoints" / "checkpoint-2"
    assert incomplete(checkpoint) is None and not (out / "manifest.json").exists()
    stored = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["RunTotals"]
    before = stored["attributes"]["totals"]
    assert before["tokens"] > 0 and before["cpu_seconds"] > 0 and before["loss_steps"] == 2

    run_sft(config(tiny_model_dir, chat_data, out))
    whole, once = manifest(out)["metrics"], manifest(straight)["metrics"]
    assert losses(out) == pytest.approx(losses(straight), rel=1e-5) and same_weights(out, straight)
    assert whole["sessions"] == 2 and whole["resumed_from_step"] == 2 and once["sessions"] == 1
    # The whole run's numbers, not the resumed half's.
    assert whole["tokens"] == once["tokens"] and whole["steps"] == once["steps"] == 4
    assert whole["train_loss_mean"] == pytest.approx(once["train_loss_mean"], rel=1e-5)
    assert whole["train_loss_mean"] == pytest.approx(sum(losses(straight)) / 4, rel=1e-5)
    assert whole["cpu_seconds"] > before["cpu_seconds"] and whole["duration_s"] > before["seconds"]
    assert whole["tokens_per_second"] == pytest.approx(whole["tokens"] / whole["duration_s"], rel=1e-2)


def test_a_half_written_checkpoint_is_skipped_and_the_newest_complete_one_resumed(tiny_model_dir, chat_data,
                                                                                straight, tmp_path, capsys):
    out = tmp_path / "cut"
    run_sft(config(tiny_model_dir, chat_data, out, max_steps=2, keep_checkpoints=True))
    good = out / "checkpoints" / "checkpoint-2"
    cut = out / "checkpoints" / "checkpoint-4"  # killed while writing its weights
    shutil.copytree(good, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (out / "checkpoints" / "checkpoint-3").mkdir()  # killed before anything but the folder was written
    assert "model.safetensors is damaged" in incomplete(cut) and "trainer_state.json" in incomplete(
        out / "checkpoints" / "checkpoint-3")

    run_sft(config(tiny_model_dir, chat_data, out))
    said = "".join(capsys.readouterr().err.split())  # rich wraps long lines, also inside paths
    assert "skippingtheincompletecheckpoint" in said and "checkpoint-4(model.safetensorsisdamaged" in said
    assert f"resumingfrom{good}" in said
    assert losses(out) == pytest.approx(losses(straight), rel=1e-5) and same_weights(out, straight)
    assert manifest(out)["metrics"]["resumed_from_step"] == 2


def test_checkpoints_of_a_different_run_are_refused_naming_what_differs(tiny_model_dir, chat_data, tmp_path):
    out = tmp_path / "out"
    run_sft(config(tiny_model_dir, chat_data, out, max_steps=2, keep_checkpoints=True))
    finished = (out / "manifest.json").read_bytes()
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())

    other_data = write_built_dataset(tmp_path / "other", "chat", chat_rows(24, offset=5))
    for changed, expected in [({"learning_rate": 1e-3}, "train.learning_rate (0.003 -> 0.001)"),
                              ({"lr_scheduler": "cosine"}, 'train.lr_scheduler ("constant" -> "cosine")')]:
        with pytest.raises(UserError, match="holds checkpoints of a different run") as refused:
            run_sft(config(tiny_model_dir, chat_data, out, **changed))
        assert expected in refused.value.message and "resume: false" in refused.value.message
    with pytest.raises(UserError, match=r"different run: data \(.*\); input .*manifest.json; input .*other"):
        run_sft(SFTStageConfig(model=str(tiny_model_dir), data=other_data, output_dir=out,
                               train={"max_steps": 4, **COMMON}))
    # Refused before anything was removed: the finished run and its checkpoints are as they were.
    assert (out / "manifest.json").read_bytes() == finished
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == checkpoints

    # resume: false starts over with the new config (the old checkpoints are removed).
    run_sft(config(tiny_model_dir, chat_data, out, learning_rate=1e-3).model_copy(update={"resume": False}))
    m = manifest(out)
    assert m["config"]["train"]["learning_rate"] == 1e-3 and m["metrics"]["sessions"] == 1


def test_keys_that_do_not_change_the_result_do_not_block_a_resume(tiny_model_dir, chat_data, straight, tmp_path):
    out = tmp_path / "out"
    run_sft(config(tiny_model_dir, chat_data, out, max_steps=2, keep_checkpoints=True))
    # Logging, reporting and checkpoint keeping change nothing; with a constant schedule, training on is allowed.
    run_sft(config(tiny_model_dir, chat_data, out, logging_steps=2, save_total_limit=1, report_to=["tensorboard"]))
    m = manifest(out)["metrics"]
    assert m["resumed_from_step"] == 2 and m["steps"] == 4 and same_weights(out, straight)


def test_a_length_change_resumes_only_under_a_schedule_that_does_not_depend_on_it(tiny_model_dir, chat_data,
                                                                                 tmp_path):
    cosine = tmp_path / "cosine"
    run_sft(config(tiny_model_dir, chat_data, cosine, max_steps=2, keep_checkpoints=True, lr_scheduler="cosine"))
    with pytest.raises(UserError, match=r"train.max_steps \(2 -> 4\)"):  # steps 1-2 had a 2-step cosine
        run_sft(config(tiny_model_dir, chat_data, cosine, lr_scheduler="cosine"))
    constant = tmp_path / "constant"
    run_sft(config(tiny_model_dir, chat_data, constant, max_steps=2, keep_checkpoints=True))
    with pytest.raises(UserError, match="is at step 2, past train.max_steps=1"):  # shorter than what it resumes
        run_sft(config(tiny_model_dir, chat_data, constant, max_steps=1))


def test_checkpoints_without_a_record_of_their_run_are_not_resumed(tiny_model_dir, chat_data, tmp_path):
    out = tmp_path / "out"
    run_sft(config(tiny_model_dir, chat_data, out, max_steps=2, keep_checkpoints=True))
    (out / "checkpoints" / RUN_FILE).unlink()  # as an older posttrain, or another tool, leaves them
    with pytest.raises(UserError, match=f"no record \\({RUN_FILE}\\) of the run that wrote them"):
        run_sft(config(tiny_model_dir, chat_data, out))


def test_a_late_error_leaves_a_finished_run_intact(monkeypatch, tiny_model_dir, chat_data, tmp_path):
    """Everything a user can get wrong is checked before the old manifest goes (it used to be removed first)."""
    out = tmp_path / "out"
    run_sft(config(tiny_model_dir, chat_data, out, max_steps=1))
    finished = (out / "manifest.json").read_bytes()

    bad_rows = chat_rows(8)
    bad_rows[3]["tools"] = "{not json"
    bad = write_built_dataset(tmp_path / "bad", "chat", bad_rows)
    with pytest.raises(UserError, match="row 3 .*tools: not valid JSON"):
        run_sft(SFTStageConfig(model=str(tiny_model_dir), data=bad, output_dir=out, train={"max_steps": 1, **COMMON}))
    assert (out / "manifest.json").read_bytes() == finished

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match="'wandb' is not installed"):
        run_sft(config(tiny_model_dir, chat_data, out, max_steps=1, report_to=["wandb"]))
    assert (out / "manifest.json").read_bytes() == finished


def test_run_identity_differences():
    base = {"model": "m", "resume": True, "output_dir": "a",
            "train": {"learning_rate": 1e-3, "max_steps": 2, "lr_scheduler": "cosine", "warmup_ratio": 0.0,
                      "logging_steps": 1, "report_to": []}, "rollout": {"num_workers": 1, "engine": "hf"}}
    old = RunIdentity("sft", base, {"data": "h1"})

    def new(inputs: dict | None = None, **changes: dict) -> RunIdentity:
        config = json.loads(json.dumps(base))
        for section, values in changes.items():
            config[section].update(values) if isinstance(values, dict) else config.update({section: values})
        return RunIdentity("sft", config, inputs or {"data": "h1"})

    assert new(resume=False, output_dir="b", train={"logging_steps": 5, "report_to": ["wandb"]},
               rollout={"num_workers": 4}).differences(old) == []
    assert new(train={"max_steps": 8}).differences(old) == ["train.max_steps (2 -> 8)"]
    assert new(rollout={"engine": "vllm"}).differences(old) == ['rollout.engine ("hf" -> "vllm")']
    assert new({"data": "h2"}).differences(old) == ["input data"]
    constant = RunIdentity("sft", {**base, "train": {**base["train"], "lr_scheduler": "constant"}}, {"data": "h1"})
    longer = json.loads(json.dumps(constant.config))
    longer["train"]["max_steps"] = 8
    assert RunIdentity("sft", longer, {"data": "h1"}).differences(constant) == []
    assert RunIdentity("rm", base, {"data": "h1"}).differences(old) == ["stage (sft -> rm)"]
