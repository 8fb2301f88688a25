"""The Logic track's config and inputs: every bad value is a UserError naming the key, file or row before any worker
starts; the command line (--dry-run, exit code 2); the shipped configs and task recipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from envs.math.tasks import generate_tasks as math_tasks
from envs.tool_calling.tasks import generate_tasks as tool_tasks
from posttrain.config import load_config, validate
from posttrain.errors import UserError
from posttrain.rl.config import LogicTrackConfig

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from posttrain.cli import main; main()", "rl-logic"]


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "rl.yaml"
    path.write_text("model: m\noutput_dir: out\ntasks: {dataset: data}\n")
    return path


@pytest.mark.parametrize("overrides, message", [
    (["algorithm=rloo", "train.scale_rewards=group"], "train.scale_rewards: 'group' with algorithm rloo"),
    (["sampling.n=4"], "sampling.n: the group size is train.num_generations"),
    (["sampling.temperature=0"], "sampling.temperature: 0 (greedy)"),
    (["sampling.buckets={math: {temperature: 0.5}}"], "sampling.buckets.math.temperature"),
    (["sampling.seed=3"], "sampling.seed: per-episode seeds derive from train.seed"),
    (["sampling.logprobs=false"], "sampling.logprobs"),
    (["train.grad_accumulation=3"], "train: value error, grad_accumulation: prompts_per_step x num_generations = 16"),
    (["train.num_generations=1"], "train.num_generations: input should be greater than or equal to 2"),
    (["train.loss_type=ppo"], "train.loss_type: input should be"),
    (["train.importance_sampling.clip_min=5"], "importance_sampling.clip_min: value error, must be below clip_max"),
    (["train.lr=1"], "train.lr: unknown key; expected one of:"),
    (["heldout={tasks: {dataset: h}, samples_per_task: 2}"], "heldout.samples_per_task: value error, 2 greedy"),
    (["tasks={recipe: a.yaml, dataset: b}"], "set exactly one of recipe"),
])
def test_bad_config_values_name_the_file_and_key(config_file, overrides, message) -> None:
    with pytest.raises(UserError) as err:
        load_config(LogicTrackConfig, config_file, overrides)
    assert str(config_file) in err.value.message and message in err.value.message, err.value.message


def test_defaults_and_derived_settings(config_file) -> None:
    cfg = load_config(LogicTrackConfig, config_file)
    assert cfg.algorithm == "grpo" and cfg.scale_rewards == "group" and cfg.train.micro_batch_size == 16
    rloo = load_config(LogicTrackConfig, config_file, ["algorithm=rloo", "train.grad_accumulation=4"])
    assert rloo.scale_rewards == "none" and rloo.train.micro_batch_size == 4


# ------------------------------------------------------------------------------------------------------------ inputs
def _dataset(writer, folder: Path, tasks: list[dict]) -> str:
    rows = [{"id": t["id"], "bucket": t["env"], "env": t["env"], "messages": t["messages"],
             "tools": json.dumps(t.get("tools") or []), "task": json.dumps(t)} for t in tasks]
    return str(writer(folder, "task", rows))


@pytest.fixture
def inputs(tiny_model_dir, built_dataset_writer, tmp_path):
    train = list(math_tasks(3, 0)) + list(tool_tasks(2, 0))
    heldout = list(math_tasks(2, 1))
    return {"model": str(tiny_model_dir), "output_dir": str(tmp_path / "out"),
            "tasks": {"dataset": _dataset(built_dataset_writer, tmp_path / "t", train)},
            "heldout": {"tasks": {"dataset": _dataset(built_dataset_writer, tmp_path / "h", heldout)}},
            "train": {"report_to": []}, "rollout": {"engine": "hf"}}, train


def _run(config: dict) -> None:
    from posttrain.stages.rl_logic import run_logic_track

    run_logic_track(validate(LogicTrackConfig, config, "rl.yaml"), source="rl.yaml")


def test_bad_inputs_fail_before_any_worker_starts(inputs, built_dataset_writer, tmp_path) -> None:
    config, train = inputs
    leak = {**config, "heldout": {"tasks": {"dataset": _dataset(built_dataset_writer, tmp_path / "leak", train[:1])}}}
    with pytest.raises(UserError, match=r"heldout.tasks: 1 held-out prompts are also training prompts \(e.g. row id "
                                        f"{train[0]['id']}"):
        _run(leak)
    with pytest.raises(UserError, match=r"envs: code: no task uses this environment"):
        _run({**config, "envs": {"code": {}}})
    with pytest.raises(UserError, match=r"envs.math: .*unexpected keyword argument 'strictness'"):
        _run({**config, "envs": {"math": {"strictness": 2}}})
    with pytest.raises(UserError, match=r"rewards.weights: code not among the environments"):
        _run({**config, "rewards": {"weights": {"code": 2.0}}})
    with pytest.raises(UserError, match=r"sampling.buckets: overrides for unknown bucket\(s\) maths"):
        _run({**config, "sampling": {"buckets": {"maths": {"max_tokens": 8}}}})
    with pytest.raises(UserError, match=r"rl.yaml: model: model folder 'nowhere' not found"):
        _run({**config, "model": "nowhere"})
    broken = [*train[:4], {**train[4], "turns": []}]  # a tool_calling task without its scripted turns
    bad = {**config, "tasks": {"dataset": _dataset(built_dataset_writer, tmp_path / "bad", broken)}}
    with pytest.raises(UserError, match=rf"tasks: row 4 \(id {train[4]['id']}\): environment tool_calling rejects"):
        _run(bad)
    assert not (tmp_path / "out" / "manifest.json").exists()


# --------------------------------------------------------------------------------------------- command line, shipped
def test_cli_dry_run_and_errors(tmp_path) -> None:
    from typer.testing import CliRunner

    import posttrain.cli  # noqa: F401  registers rl-logic
    from posttrain.cli import app

    done = CliRunner().invoke(app, ["rl-logic", "--config", str(ROOT / "configs/rl_logic.yaml"), "--dry-run",
                                    "algorithm=rloo"])
    assert done.exit_code == 0, done.output
    assert "algorithm: rloo" in done.output and "num_generations: 4" in done.output
    # The console script: a bad value is one message and exit code 2, no traceback.
    bad = subprocess.run([*CLI, "--config", str(ROOT / "configs/rl_logic.yaml"), "train.beta=-1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    message = " ".join(bad.stderr.split())  # rich wraps long lines
    assert bad.returncode == 2 and "train.beta: input should be greater than or equal to 0" in message
    assert "Traceback" not in bad.stderr


def test_shipped_configs_and_task_recipes_are_valid(tmp_path) -> None:
    from posttrain.data import build_dataset
    from posttrain.stages.rl_logic import check_tasks
    from posttrain.tasks import TasksConfig, load_tasks

    for name in ("rl_logic", "rl_logic_easy_math"):
        cfg = load_config(LogicTrackConfig, ROOT / "configs" / f"{name}.yaml")
        assert (ROOT / cfg.tasks.recipe).is_file() and (ROOT / cfg.heldout.tasks.recipe).is_file()
    cfg = load_config(LogicTrackConfig, ROOT / "configs/rl_logic.yaml")
    rows, _ = load_tasks(TasksConfig(recipe=str(ROOT / cfg.tasks.recipe)), tmp_path / "t")
    heldout, _ = load_tasks(TasksConfig(recipe=str(ROOT / cfg.heldout.tasks.recipe)), tmp_path / "h")
    assert len(rows) == 96 and len(heldout) == 28
    assert set(check_tasks(rows, heldout, cfg)) == {"math", "code", "tool_calling"}  # every env accepts every row
    easy = build_dataset(ROOT / "data_recipes/logic_easy_math.yaml", tmp_path / "easy")
    assert easy["metrics"]["rows"] == 64
