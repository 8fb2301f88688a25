"""Reward hacks the math verifier must not reward (docs/environments.md, "Reward hacking"): answering with several
candidates at once, in one box or in several, as a set, an interval or a list of numbers. The honest answer passes,
so the test can fail."""

from __future__ import annotations

import pytest

from posttrain.environment import Trajectory, make_env


@pytest.fixture(scope="module")
def env():
    env = make_env("math")
    yield env
    env.close()


TASK = {"id": "hack", "env": "math", "messages": [{"role": "user", "content": "What is 6 times 7?"}], "answer": "42"}


@pytest.mark.parametrize("reply", [
    "\\boxed{41, 42, 43}", "\\boxed{41} or \\boxed{42}", "\\boxed{42} \\boxed{43}", "\\boxed{\\{41, 42\\}}",
    "\\boxed{x \\in \\{41, 42\\}}", "\\boxed{40 < x < 44}", "It is 41, 42 or 43.", " ".join(map(str, range(100))),
])
def test_candidates_at_once_are_not_an_answer(env, reply) -> None:
    assert env.verify(Trajectory(TASK, [*TASK["messages"], {"role": "assistant", "content": "\\boxed{42}"}])).passed
    result = env.verify(Trajectory(TASK, [*TASK["messages"], {"role": "assistant", "content": reply}]))
    assert not result.passed and result.score == 0.0
