"""Verification as Ray actors (``verify.ray``): the same verdicts as the process pool, a timeout and a crash are that
item's failure (never a pass) with the actor replaced, and a stage runs its verification there. A local Ray started
inside the test stands in for a cluster's CPU nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.math.tasks import generate_tasks as math_tasks
from posttrain.environment import Trajectory

SLOW_ENV = '''
import os, time
from posttrain.environment import Environment, StepResult, VerifyResult


class SlowEnv(Environment):
    name = "slow"

    def reset(self, task):
        return [dict(m) for m in task["messages"]], []

    def step(self, assistant_message):
        return StepResult(done=True)

    def verify(self, trajectory):
        answer = trajectory.final_answer
        if answer == "sleep":
            time.sleep(60)
        if answer == "die":
            os._exit(3)
        return VerifyResult(passed=answer == "ok", score=float(answer == "ok"))

    def generate_tasks(self, n, seed):
        for i in range(n):
            yield {"id": f"slow-{i}", "env": "slow", "tools": [], "messages": [{"role": "user", "content": "hi"}]}
'''


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from posttrain.rollout.workers import start_ray

    started = not ray.is_initialized()
    start_ray()
    yield
    if started:
        ray.shutdown()


def _answers(task: dict, answer: str) -> Trajectory:
    return Trajectory(task, [*task["messages"], {"role": "assistant", "content": answer}])


def test_ray_actors_give_the_process_pools_verdicts(ray_local) -> None:
    from posttrain.tasks.ray_verify import RayVerifyPool
    from posttrain.verify_pool import VerifyPool

    tasks = list(math_tasks(6, 3))
    items = [_answers(t, f"The answer is \\boxed{{{t['answer']}}}") for t in tasks[:3]] + [
        _answers(t, "The answer is \\boxed{123456789}") for t in tasks[3:]]
    with VerifyPool("math", workers=1) as local, RayVerifyPool("math", workers=2, timeout_s=30) as remote:
        expected = [(r.passed, r.score) for r in local.verify_all(items)]
        got = [(r.passed, r.score) for r in remote.verify_all(items)]
    assert got == expected and [p for p, _ in got] == [True] * 3 + [False] * 3


def test_a_hung_or_dying_verifier_fails_its_item_only(ray_local, tmp_path: Path) -> None:
    from posttrain.tasks.ray_verify import RayVerifyPool

    env = tmp_path / "slow_env.py"
    env.write_text(SLOW_ENV)
    task = {"id": "t", "env": str(env), "messages": [{"role": "user", "content": "hi"}], "tools": []}
    answers = ["ok", "sleep", "no", "die", "ok"]
    with RayVerifyPool(str(env), workers=2, timeout_s=3, placement=None) as pool:
        results = pool.verify_all(_answers(task, a) for a in answers)
    assert [r.passed for r in results] == [True, False, False, False, True]
    assert results[1].reasons == ["timeout"] and results[3].reasons == ["crash"]


def test_a_stage_verifies_on_ray_actors(ray_local, tiny_model_dir, tmp_path: Path) -> None:
    from test_sample import base_overrides, write_parity_tasks

    from posttrain.config import load_config
    from posttrain.stages.sample import SampleConfig, run_sample

    recipe = write_parity_tasks(tmp_path / "tasks", 4, seed=2)
    overrides = base_overrides(tiny_model_dir, tmp_path / "out", recipe, "hf")
    on_ray = run_sample(load_config(SampleConfig, None, [*overrides, "verify.ray={num_cpus: 0.25}"])).metrics
    local = run_sample(load_config(SampleConfig, None, [*base_overrides(tiny_model_dir, tmp_path / "out2", recipe,
                                                                        "hf")])).metrics
    assert on_ray["total"]["samples"] == 12 and on_ray["total"]["passed"] == local["total"]["passed"]
