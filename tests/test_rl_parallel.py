"""`posttrain rl`: both tracks at once as Ray tasks; a failing track keeps the other's results; each resumes alone.

Real Ray (local, started by the stage), real TRL DPO (Chat) and GRPO (Logic) on the tiny model, the HF engine for
the Logic track's rollout workers (vLLM is covered by the rollout tests), real math verification.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.stages.rl import RLConfig, TrackFailed, run

ROOT = Path(__file__).resolve().parents[1]
PREFS = ROOT / "data_recipes/preference_tiny.yaml"
TASKS = ROOT / "data_recipes/rs_tasks.yaml"


def config(model: Path, out: Path, logic_model: str | None = None) -> RLConfig:
    overrides = [
        f"model={model}", f"output_dir={out}",
        # Chat: offline DPO only, a few steps.
        f"chat.offline.data={PREFS}", "chat.win_rate.prompts=0", "chat.eval_fraction=0.2",
        "chat.offline.train={max_steps: 3, batch_size: 4, learning_rate: 1.0e-3, report_to: [], max_length: 256}",
        # Logic: GRPO, two steps on a few math tasks through one HF rollout worker.
        f"logic.tasks={{recipe: {TASKS}, recipe_overrides: ['buckets.tool_calling.share.count=1'], limit: 4}}",
        "logic.train={max_steps: 2, prompts_per_step: 2, num_generations: 2, learning_rate: 1.0e-2, report_to: [], "
        "save_steps: 100}",
        "logic.sampling={max_tokens: 8}", "logic.agent={max_turns: 1}", "logic.verify={workers: 1}",
        "logic.rollout={engine: hf, num_workers: 1, resources: {num_cpus: 0.5}}",
        "resources={chat: {num_cpus: 0.5}, logic: {num_cpus: 0.5}}",
    ]
    if logic_model is not None:
        overrides.append(f"logic.model={logic_model}")
    return load_config(RLConfig, None, overrides)


def test_failing_track_keeps_the_other_and_rerun_finishes_only_the_failed_one(tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    out = tmp_path / "rl"
    # 1. The Logic track is pointed at a missing model: it fails, the Chat track trains anyway.
    with pytest.raises(TrackFailed) as failed:
        run(config(tiny_model_dir, out, logic_model=str(tmp_path / "no-such-model")))
    assert failed.value.tracks == ["logic"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parallel"] is True
    assert manifest["tracks"]["chat"]["status"] == "ok"
    assert manifest["tracks"]["logic"]["status"] == "failed"
    assert "no-such-model" in manifest["tracks"]["logic"]["error"]
    chat_manifest = json.loads((out / "chat/manifest.json").read_text())
    assert chat_manifest["stage"] == "rl_chat" and (out / "chat/model/config.json").is_file()
    chat_weights = (out / "chat/model/model.safetensors").stat().st_mtime_ns

    # 2. Fixed and re-run: the finished Chat track is a no-op, the Logic track trains.
    result = run(config(tiny_model_dir, out)).manifest
    assert {t: s["status"] for t, s in result["tracks"].items()} == {"chat": "ok", "logic": "ok"}
    assert (out / "chat/model/model.safetensors").stat().st_mtime_ns == chat_weights
    logic_manifest = json.loads((out / "logic/manifest.json").read_text())
    assert logic_manifest["stage"] == "rl_logic"
    assert Path(result["tracks"]["logic"]["model_dir"], "config.json").is_file()


def test_cli_dry_run_and_bad_track(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\noutput_dir: {tmp_path / 'o'}\n"
                   f"chat: {{offline: {{data: {PREFS}}}, win_rate: {{prompts: 0}}, rollout: {{engine: hf}}}}\n")
    cmd = [sys.executable, "-m", "posttrain.cli", "rl", "--config", str(cfg)]
    dry = subprocess.run([*cmd, "--track", "chat", "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0 and "tracks:" in dry.stdout and "- chat" in dry.stdout
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
    # The dry run validates the track sections (they stay plain mappings in the rl schema) and their pre-flight.
    empty = subprocess.run([*cmd, "--track", "chat", "--dry-run", "chat={}"], capture_output=True, text=True)
    assert empty.returncode == 2 and "chat" in empty.stderr and "nothing to train" in empty.stderr
    assert "Traceback" not in empty.stderr
    typo = subprocess.run([*cmd, "--track", "chat", "--dry-run", "chat.rollout.engine_kwargs.num_thread=2"],
                          capture_output=True, text=True)
    said = " ".join(typo.stderr.split())  # rich wraps long lines
    assert typo.returncode == 2 and "chat: rollout.engine_kwargs.num_thread: not an argument of the hf engine" in said
    assert "did you mean num_threads" in said and "Traceback" not in said
    logic = subprocess.run([*cmd, "--track", "both", "--dry-run"], capture_output=True, text=True)
    assert logic.returncode == 2 and "logic" in logic.stderr and "tasks" in logic.stderr  # the section is missing
    bad = subprocess.run([*cmd, "--track", "both", "resources.chat.num_cpus=-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "resources.chat.num_cpus" in bad.stderr and "Traceback" not in bad.stderr
    wrong = subprocess.run([*cmd, "--track", "logc"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "expected chat, logic or both" in wrong.stderr


def test_shipped_parallel_config_validates_both_tracks() -> None:
    from posttrain.rl.config import LogicTrackConfig
    from posttrain.stages.rl import track_config
    from posttrain.stages.rl_chat import ChatTrackConfig

    path = ROOT / "configs/rl_parallel.yaml"
    cfg = load_config(RLConfig, path)
    chat, logic = (track_config(cfg, t, str(path)) for t in ("chat", "logic"))
    assert isinstance(chat, ChatTrackConfig) and isinstance(logic, LogicTrackConfig)
    assert chat.model == logic.model == "smollm2-135m-instruct"
    assert chat.output_dir == Path("runs/rl/chat") and logic.output_dir == Path("runs/rl/logic")
