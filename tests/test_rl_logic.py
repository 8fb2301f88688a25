"""The Logic track end to end on the tiny model: TRL's GRPOTrainer generating through a real rollout pool (Ray, the
transformers engine) and the multi-turn agent loop, with the real math and tool_calling environments, verifier pools
and two small plugin environments written here (``digits``: the reward is the share of digits in the reply, which a
policy can learn in a few steps; ``echo``: every turn is answered with a tool result, for multi-turn masking).

One pool serves the whole module; every run pushes its own weights to it before its first rollout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from envs.math.tasks import generate_tasks as math_tasks
from envs.tool_calling.tasks import generate_tasks as tool_tasks
from posttrain.rl.rollout_func import PoolRollout
from posttrain.rollout.agent_loop import AgentLoopConfig
from posttrain.rollout.sampling import SamplingParams
from posttrain.tasks import TaskRow

MAX_LEN = 2048

DIGITS_ENV = '''
from posttrain.environment import Environment, StepResult, VerifyResult


class DigitsEnv(Environment):
    """Reward: the share of the reply's characters that are digits."""

    name = "digits"

    def reset(self, task):
        return [dict(m) for m in task["messages"]], []

    def step(self, assistant_message):
        return StepResult(done=True)

    def verify(self, trajectory):
        text = trajectory.final_answer
        score = sum(c.isdigit() for c in text) / max(len(text), 1)
        return VerifyResult(passed=score >= 0.5, score=score)

    def generate_tasks(self, n, seed):
        for i in range(n):
            yield {"id": f"digits-{seed}-{i}", "env": "digits", "tools": [],
                   "messages": [{"role": "user", "content": f"Write some numbers ({seed}.{i})."}]}
'''

ECHO_ENV = '''
import json

from posttrain.environment import Environment, StepResult, VerifyResult


class EchoEnv(Environment):
    """Answers the first two turns with a tool result; the third turn ends the episode."""

    name = "echo"

    def reset(self, task):
        self.turns = 0
        return [dict(m) for m in task["messages"]], []

    def step(self, assistant_message):
        self.turns += 1
        if self.turns >= 3:
            return StepResult(done=True)
        observation = json.dumps({"name": "echo", "result": f"observed-{self.turns}"})
        return StepResult(observations=[{"role": "tool", "content": observation}])

    def verify(self, trajectory):
        return VerifyResult(passed=True, score=1.0)

    def generate_tasks(self, n, seed):
        for i in range(n):
            yield {"id": f"echo-{i}", "env": "echo", "messages": [{"role": "user", "content": "Go."}], "tools": []}
'''


@pytest.fixture(scope="module")
def plugin_envs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("envs")
    (root / "digits_env.py").write_text(DIGITS_ENV)
    (root / "echo_env.py").write_text(ECHO_ENV)
    return {"digits": str(root / "digits_env.py"), "echo": str(root / "echo_env.py")}


@pytest.fixture(scope="module")
def pool(tiny_model_dir):
    from posttrain.rollout.pool import RolloutPool

    pool = RolloutPool(tiny_model_dir, engine="hf", resources={"num_cpus": 1},
                       engine_kwargs={"dtype": "float32", "max_model_len": MAX_LEN})
    yield pool
    pool.shutdown()


def plugin_tasks(env_path: str, n: int, seed: int) -> list[dict]:
    from posttrain.environment import load_env_class

    return [{**t, "env": env_path} for t in load_env_class(env_path)().generate_tasks(n, seed)]


def task_dataset(writer, folder: Path, tasks: list[dict], buckets: list[str] | None = None) -> str:
    rows = [{"env": t["env"], "messages": t["messages"], "tools": json.dumps(t.get("tools") or []),
             "task": json.dumps(t), "bucket": (buckets[i] if buckets else "tasks"), "id": t["id"]}
            for i, t in enumerate(tasks)]
    return str(writer(folder, "task", rows))


def base_config(tiny_model_dir, out: Path, tasks: str, **sections) -> dict:
    config = {
        "model": str(tiny_model_dir), "output_dir": str(out), "tasks": {"dataset": tasks},
        "train": {"max_steps": 2, "prompts_per_step": 4, "num_generations": 2, "learning_rate": 1e-2,
                  "report_to": [], "save_steps": 100},
        "sampling": {"max_tokens": 8}, "agent": {"max_turns": 2}, "verify": {"workers": 1},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------------ rollout_func
def test_rollout_func_gives_engine_tokens_with_environment_tokens_masked(pool, plugin_envs) -> None:
    math_task = next(iter(math_tasks(1, 5)))
    tool_task = next(t for t in tool_tasks(30, 3) if t["kind"] == "multi_turn")  # three scripted user turns
    echo_task = plugin_tasks(plugin_envs["echo"], 1, 0)[0]
    rows = [TaskRow(0, "m", "math", "t", "math", math_task), TaskRow(1, "t", "tools", "t", "tool_calling", tool_task),
            TaskRow(2, "e", "echo", "t", plugin_envs["echo"], echo_task)]
    params = {b: SamplingParams(max_tokens=10) for b in ("math", "tools", "echo")}
    rollout = PoolRollout(pool, rows, params, AgentLoopConfig(max_turns=4), {}, seed=0)
    trainer = SimpleNamespace(rollout_inputs=[{"row": r} for r in (0, 0, 1, 1, 2, 2)],
                              state=SimpleNamespace(global_step=0), num_generations=2)
    out = rollout([None] * 6, trainer)

    episodes, tok = out["episode"], pool.tokenizer
    # TRL's fields, the episodes for the rewards, and the rows actually played (dynamic sampling may replace some)
    assert set(out) == {"prompt_ids", "completion_ids", "logprobs", "env_mask", "episode", "row", "env", "bucket",
                        "policy_version"}
    assert out["row"] == [0, 0, 1, 1, 2, 2] and out["env"] == ["math", "math", "tool_calling", "tool_calling",
                                                                plugin_envs["echo"], plugin_envs["echo"]]
    assert all(len(out[k]) == 6 for k in out) and [ep.task["id"] for ep in episodes[::2]] == [
        math_task["id"], tool_task["id"], echo_task["id"]]
    for i, ep in enumerate(episodes):
        prompt, completion = out["prompt_ids"][i], out["completion_ids"][i]
        mask, logprobs = out["env_mask"][i], out["logprobs"][i]
        assert len(completion) == len(mask) == len(logprobs) and mask[-1] == 1  # ends on the model's last token
        assert prompt + completion == ep.token_ids[:len(prompt) + len(completion)]  # the engine's ids, unchanged
        assert all((lp < 0) if m else (lp == 0.0) for m, lp in zip(mask, logprobs, strict=True))
        assert sum(mask) == sum(ep.mask)  # every model token is in the loss, nothing else
        assert ep.exact and tok.decode(prompt + completion) in tok.decode(ep.token_ids)
    # The two samples of a row are different episodes (different seeds).
    assert out["completion_ids"][0] != out["completion_ids"][1]

    def masked_text(i: int) -> str:
        completion, mask = out["completion_ids"][i], out["env_mask"][i]
        return tok.decode([t for t, m in zip(completion, mask, strict=True) if not m])

    assert all(out["env_mask"][i] == [1] * len(out["env_mask"][i]) for i in (0, 1))  # math: one turn, all the model's
    for i in (2, 3):  # tool_calling: the scripted next user turns sit between model turns, masked out
        assert episodes[i].num_turns == 3 and 0 in out["env_mask"][i]
        assert tool_task["turns"][1]["user"] in masked_text(i) and tool_task["turns"][2]["user"] in masked_text(i)
    for i in (4, 5):  # echo: tool results between the turns, masked out
        assert episodes[i].num_turns == 3
        assert "observed-1" in masked_text(i) and "observed-2" in masked_text(i)
        assert "observed" not in tok.decode([t for t, m in zip(out["completion_ids"][i], out["env_mask"][i],
                                                                   strict=True) if m])


# ----------------------------------------------------------------------------------------------------------- training
def test_a_short_run_writes_model_metrics_manifest_and_keeps_the_workers_on_the_trained_weights(
        pool, plugin_envs, tiny_model_dir, built_dataset_writer, tmp_path) -> None:
    from posttrain.rollout.hf_engine import HFEngine
    from posttrain.stages.rl_logic import run_logic_track

    digits = plugin_envs["digits"]
    train = plugin_tasks(digits, 4, 0) + list(math_tasks(2, 1)) + [
        t for t in tool_tasks(10, 1) if t["kind"] != "multi_turn"][:2]
    heldout = plugin_tasks(digits, 2, 1) + list(math_tasks(1, 2))
    config = base_config(tiny_model_dir, tmp_path / "out", task_dataset(built_dataset_writer, tmp_path / "t", train),
                         heldout={"tasks": {"dataset": task_dataset(built_dataset_writer, tmp_path / "h", heldout)},
                                  "every_steps": 2},
                         train={"report_to": ["tensorboard"]})
    events: list[dict] = []
    manifest = run_logic_track(config, progress=events.append, pool=pool).manifest
    rows = [e for e in events if e["event"] == "log"]

    out = tmp_path / "out"
    metrics = manifest["metrics"]
    assert manifest["stage"] == "rl_logic" and metrics["steps"] == 2 and metrics["tasks"] == 8
    assert [e["step"] for e in metrics["heldout"]] == [0, 2]
    assert metrics["heldout_before"]["step"] == 0 and metrics["heldout_after"]["step"] == 2
    assert set(metrics["heldout_after"]) >= {"heldout/reward", "heldout/accuracy", "heldout/digits/reward",
                                             "heldout/math/accuracy"}
    assert metrics["weight_sync"]["pushes"] == 3  # at the start and after each of the two steps
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists() and (out / "logs").is_dir()
    assert any(str(p).endswith("data.parquet") for p in manifest["inputs"]) or manifest["inputs"]

    logged = read_jsonl(out / "metrics.jsonl")
    # The caller's progress got every logged row (its numbers) as it was logged.
    assert [{k: v for k, v in r.items() if isinstance(v, int | float) and k != "step"} for r in logged] == [
        {k: v for k, v in r["metrics"].items() if k != "step"} for r in rows]
    assert [r["step"] for r in logged] == [r["step"] for r in rows] and all(r["max_steps"] == 2 for r in rows)
    train_rows = [r for r in logged if "reward" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    seen = {k for r in train_rows for k, v in r.items() if v is not None}
    # Every environment's rows were routed to its own reward (the epoch covers all eight tasks).
    assert {"rewards/digits/mean", "rewards/math/mean", "rewards/tool_calling/mean", "rewards/format/mean"} <= seen
    # The sampler's log-probs are used: TRL's importance-sampling correction ran (ratios ~1: same fp32 weights).
    assert all(abs(r["sampling/importance_sampling_ratio/mean"] - 1) < 1e-3 for r in train_rows)

    # The workers hold exactly the trained weights (not the starting ones): greedy log-probs match the saved model.
    prompt = pool.tokenizer.apply_chat_template([{"role": "user", "content": "Write some numbers."}],
                                                add_generation_prompt=True, tokenize=False)
    ids = [pool.tokenizer.encode(prompt, add_special_tokens=False)]
    greedy = SamplingParams(temperature=0.0, max_tokens=6)
    served = pool.generate(ids, greedy)[0][0]
    trained = HFEngine(out, dtype="float32", max_model_len=MAX_LEN).generate(ids, greedy)[0][0]
    start = HFEngine(tiny_model_dir, dtype="float32", max_model_len=MAX_LEN).generate(ids, greedy)[0][0]
    assert served.token_ids == trained.token_ids
    assert max(abs(a - b) for a, b in zip(served.logprobs, trained.logprobs, strict=True)) < 1e-4
    assert max(abs(a - b) for a, b in zip(served.logprobs, start.logprobs, strict=False)) > 1e-3


class _Crash(Exception):
    pass


def test_a_killed_run_resumes_from_its_checkpoint_and_a_finished_one_is_not_rerun(
        pool, plugin_envs, tiny_model_dir, built_dataset_writer, tmp_path) -> None:
    from posttrain.stages.rl_logic import run_logic_track

    digits = plugin_envs["digits"]
    train_tasks = task_dataset(built_dataset_writer, tmp_path / "t", plugin_tasks(digits, 4, 0))
    config = base_config(
        tiny_model_dir, tmp_path / "out", train_tasks,
        heldout={"tasks": {"dataset": task_dataset(built_dataset_writer, tmp_path / "h", plugin_tasks(digits, 2, 1))},
                 "every_steps": 3},
        train={"max_steps": 3, "save_steps": 1, "prompts_per_step": 2})

    def crash_at_step_2(event: dict) -> None:
        if event["step"] == 2 and "loss" in event["metrics"]:  # logged before step 2's checkpoint: like a kill
            raise _Crash

    with pytest.raises(_Crash):
        run_logic_track(config, progress=crash_at_step_2, pool=pool)
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists() and (out / "checkpoints" / "checkpoint-1").is_dir()

    rows: list[dict] = []
    manifest = run_logic_track(config, progress=rows.append, pool=pool).manifest
    assert manifest["metrics"]["steps"] == 3 and [r["step"] for r in rows if "loss" in r["metrics"]] == [2, 3]
    logged = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]  # each step once, none lost
    assert [r["step"] for r in logged if "heldout/reward" in r] == [0, 3]  # the start is not evaluated again
    assert manifest["metrics"]["weight_sync"]["pushes"] == 3  # resumed weights first, then steps 2 and 3

    again: list[dict] = []
    assert run_logic_track(config, progress=again.append, pool=pool).manifest == manifest
    assert [e["event"] for e in again] == ["phase"] and "nothing to do" in again[0]["message"]  # no training


def test_rloo_advantages_are_leave_one_out(pool, plugin_envs, tiny_model_dir, tmp_path) -> None:
    import torch

    from posttrain.config import validate
    from posttrain.models.loading import load_tokenizer
    from posttrain.rl.config import LogicTrackConfig
    from posttrain.rl.rewards import reward_functions
    from posttrain.rl.trainer import LogicGRPOTrainer
    from posttrain.rl.weight_sync import WeightSync
    from posttrain.stages.rl_logic import grpo_arguments, prompt_dataset
    from posttrain.training.model import load_model
    from posttrain.verify_pool import VerifyPool

    digits = plugin_envs["digits"]
    rows = [TaskRow(i, t["id"], "tasks", "t", digits, t) for i, t in enumerate(plugin_tasks(digits, 2, 0))]
    cfg = validate(LogicTrackConfig, base_config(tiny_model_dir, tmp_path / "out", "unused", algorithm="rloo",
                                                 train={"num_generations": 4, "prompts_per_step": 2}), "test")
    with VerifyPool(digits, workers=1) as verifier:
        funcs, weights = reward_functions([digits], {digits: verifier}, cfg.rewards)
        sync = WeightSync(pool)
        trainer = LogicGRPOTrainer(
            model=load_model(tiny_model_dir)[0], reward_funcs=funcs, args=grpo_arguments(cfg, tmp_path, weights),
            train_dataset=prompt_dataset(rows), processing_class=load_tokenizer(tiny_model_dir),
            rollout_func=PoolRollout(pool, rows, {"tasks": cfg.sampling.resolve()}, cfg.agent, {}, 0),
            callbacks=[sync], weight_sync=sync, leave_one_out=True)
        trainer.model.train()
        batch = [dict(trainer.train_dataset[i]) for i in (0, 0, 0, 0, 1, 1, 1, 1)]
        advantages = trainer._generate_and_score_completions(batch)["advantages"]
    assert sync.pushes == 1  # TRL's pre-rollout sync hook pushed the weights before generating
    per_func = torch.tensor([trainer._logs["rewards"][name] for name in trainer.reward_func_names])
    rewards = (torch.nan_to_num(per_func, nan=0.0) * torch.tensor(weights).unsqueeze(1)).sum(0).view(2, 4)
    others = (rewards.sum(1, keepdim=True) - rewards) / 3  # the mean reward of the other three episodes
    assert rewards.std() > 0 and torch.allclose(advantages, (rewards - others).flatten(), atol=1e-5)


def test_reward_rises_on_a_learnable_task(pool, plugin_envs, tiny_model_dir, built_dataset_writer, tmp_path) -> None:
    """Learning, not just running: on the digits task the held-out reward of the tiny model goes from ~0 to most of
    the way to 1 in 20 steps (it takes off after 7-11 steps at lr 3e-2; this fails if the advantages, the masks or
    the weight pushes are wrong). Measured: 79 s of wall time on 2 cores with a load average near 25 (other jobs);
    less on idle cores."""
    from posttrain.stages.rl_logic import run_logic_track

    digits = plugin_envs["digits"]
    train_tasks = task_dataset(built_dataset_writer, tmp_path / "t", plugin_tasks(digits, 16, 0))
    config = base_config(
        tiny_model_dir, tmp_path / "out", train_tasks,
        heldout={"tasks": {"dataset": task_dataset(built_dataset_writer, tmp_path / "h", plugin_tasks(digits, 8, 1))},
                 "every_steps": 10, "samples_per_task": 2, "temperature": 1.0},
        train={"max_steps": 20, "num_generations": 4, "learning_rate": 3e-2},
        rewards={"format_penalty": 0.0})
    metrics = run_logic_track(config, pool=pool).metrics
    before, after = metrics["heldout_before"]["heldout/reward"], metrics["heldout_after"]["heldout/reward"]
    rewards = [r["reward"] for r in read_jsonl(tmp_path / "out" / "metrics.jsonl") if "reward" in r]
    assert before < 0.1 and after > before + 0.4, (before, after, rewards)
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3 and not any(math.isnan(r) for r in rewards)


def test_the_track_runs_inside_a_ray_actor(pool, plugin_envs, tiny_model_dir, built_dataset_writer, tmp_path) -> None:
    """How the parallel runner calls it: in its own actor, with its own rollout workers, reporting progress back."""
    import ray

    @ray.remote(num_cpus=0)
    class Track:
        def run(self, config: dict) -> tuple[dict, list[int]]:
            from posttrain.stages.rl_logic import run_logic_track

            rows: list[dict] = []
            return run_logic_track(config, progress=rows.append).manifest, [r["step"] for r in rows]

    digits = plugin_envs["digits"]
    config = base_config(tiny_model_dir, tmp_path / "out",
                         task_dataset(built_dataset_writer, tmp_path / "t", plugin_tasks(digits, 4, 0)),
                         train={"max_steps": 1, "prompts_per_step": 2},
                         rollout={"engine": "hf", "resources": {"num_cpus": 1},
                                  "engine_kwargs": {"dtype": "float32", "max_model_len": 512}})
    actor = Track.remote()
    try:
        manifest, steps = ray.get(actor.run.remote(config), timeout=600)
    finally:
        ray.kill(actor)
    assert manifest["metrics"]["steps"] == 1 and steps[-1] == 1
    assert (tmp_path / "out" / "model.safetensors").is_file()
