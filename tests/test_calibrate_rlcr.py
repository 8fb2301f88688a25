"""RLCR: the reward by hand, the reward function on episodes verified by the real math verifier, and the prompts
handed to the Logic track (the stage running it end to end is in test_calibrate.py, next to its fixtures)."""

from __future__ import annotations

import json

import pytest

from posttrain.calibration.rlcr import CalibrationReward, rlcr_reward, without_confidence, write_track_tasks
from posttrain.environment import Trajectory
from posttrain.rollout.agent_loop import Episode


@pytest.mark.parametrize(("correct", "confidence", "reward"), [
    (True, 1.0, 1.0), (True, 0.5, 0.75), (True, 0.0, 0.0),
    (False, 0.0, 0.0), (False, 0.2, -0.04), (False, 1.0, -1.0),
    (True, None, 0.0), (False, None, -1.0),  # no usable confidence: the worst Brier term
])
def test_rlcr_reward_by_hand(correct, confidence, reward) -> None:
    assert rlcr_reward(correct, confidence) == pytest.approx(reward)


def test_the_reward_is_proper_in_the_stated_confidence() -> None:
    """For an answer that is right with probability q, the expected reward peaks at confidence q."""
    for q in (0.1, 0.5, 0.8):
        grid = [i / 100 for i in range(101)]
        expected = [q * rlcr_reward(True, c) + (1 - q) * rlcr_reward(False, c) for c in grid]
        assert grid[expected.index(max(expected))] == pytest.approx(q)


def test_calibration_reward_on_verified_episodes() -> None:
    from posttrain.verify_pool import VerifyPool

    task = {"id": "t", "env": "math", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4"}
    answers = ["\\boxed{4} <confidence>0.9</confidence>", "\\boxed{5} <confidence>0.9</confidence>", "\\boxed{4}",
               "\\boxed{5} <confidence>10%</confidence>"]
    episodes = [Episode(task=task, sample_index=i, messages=[*task["messages"], {"role": "assistant", "content": a}])
                for i, a in enumerate(answers)]
    logged: dict[str, float] = {}
    with VerifyPool("math", workers=1) as verifier:
        rewards = CalibrationReward({"math": verifier})([None] * 4, [None] * 4, ["math"] * 4, episodes,
                                                        log_metric=logged.__setitem__)
    assert rewards == pytest.approx([1 - 0.01, -0.81, 0.0, -0.01])
    assert logged["rlcr/accuracy"] == 0.5 and logged["rlcr/unparseable"] == 0.25
    assert logged["rlcr/confidence"] == pytest.approx((0.9 + 0.9 + 0.1) / 3)
    stripped = without_confidence(Trajectory(task, episodes[0].messages))
    assert stripped.final_answer == "\\boxed{4}" and episodes[0].messages[-1]["content"].endswith("</confidence>")


def test_track_tasks_carry_the_instruction(tmp_path) -> None:
    from posttrain.data import build_dataset, load_built
    from posttrain.tasks import TaskRow

    rows = [TaskRow(index=i, id=f"r{i}", bucket=b, source="s", env="math",
                    task={"id": f"t{i}", "messages": [{"role": "user", "content": f"q{i}"}], "answer": "1"})
            for i, b in enumerate(["a", "b", "a"])]
    recipe = write_track_tasks(tmp_path / "tasks", rows, "State your confidence.")
    build_dataset(recipe, tmp_path / "built")
    built = load_built(tmp_path / "built")
    assert sorted(built["bucket"]) == ["a", "a", "b"]
    tasks = [json.loads(t) for t in built["task"]]
    assert {t["id"] for t in tasks} == {"r0", "r1", "r2"}
    assert all(t["messages"][-1]["content"].endswith("\n\nState your confidence.") for t in tasks)
