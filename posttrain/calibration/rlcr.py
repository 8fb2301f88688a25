"""The RLCR reward (Damani et al. 2025, "Beyond binary rewards: training LMs to reason about their uncertainty"):
reinforcement learning on verifiable tasks where the reward also scores the confidence the model states.

    reward = correct − (confidence − correct)²          correct ∈ {0, 1}, confidence ∈ [0, 1]

The second term is the Brier score of the verbalized confidence, a proper scoring rule: for a given answer the expected
reward is highest when the stated confidence equals the true probability that the answer is right, so the model
gains nothing by over- or under-stating it, while the first term still rewards being right. A missing or unparseable
``<confidence>`` tag scores the worst Brier term (1), so leaving it out never pays.

Correctness comes from each row's own environment verifier, run on the conversation with the confidence tags removed
(a stated 0.8 must not be read as the answer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.calibration.elicit import parse_verbalized, strip_confidence
from posttrain.environment import Trajectory
from posttrain.tasks import TaskRow

MISSING_BRIER = 1.0  # the Brier term of an answer without a usable confidence: the worst possible


def rlcr_reward(correct: bool, confidence: float | None) -> float:
    """``correct − (confidence − correct)²``; a missing confidence costs the worst Brier term."""
    y = 1.0 if correct else 0.0
    brier = MISSING_BRIER if confidence is None else (confidence - y) ** 2
    return y - brier


def without_confidence(trajectory: Trajectory) -> Trajectory:
    """The trajectory as the verifier should judge it: assistant turns without their confidence tags."""
    messages = [{**m, "content": strip_confidence(m.get("content") or "")} if m.get("role") == "assistant" else m
                for m in trajectory.messages]
    return Trajectory(trajectory.task, messages)


class CalibrationReward:
    """A TRL reward function for the Logic track's GRPO: the RLCR reward of every episode, verified by its row's
    environment. Logs accuracy, mean stated confidence, Brier score and the share of unparseable confidences."""

    __name__ = "rlcr"  # TRL logs rewards/rlcr/mean

    def __init__(self, verifiers: dict[str, Any]) -> None:
        self.verifiers = verifiers

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], env: Sequence[str],
                 episode: Sequence[Any], log_metric: Callable[[str, float], None] | None = None,
                 **_: Any) -> list[float]:
        passed: list[bool] = [False] * len(episode)
        for name in dict.fromkeys(env):
            mine = [i for i, e in enumerate(env) if e == name]
            results = self.verifiers[name].verify_all(without_confidence(episode[i].trajectory) for i in mine)
            for i, result in zip(mine, results, strict=True):
                passed[i] = bool(result.passed)
        confidences = [parse_verbalized(ep.trajectory.final_answer) for ep in episode]
        rewards = [rlcr_reward(p, c) for p, c in zip(passed, confidences, strict=True)]
        if log_metric is not None and episode:
            stated = [c for c in confidences if c is not None]
            log_metric("rlcr/accuracy", sum(passed) / len(passed))
            log_metric("rlcr/unparseable", 1 - len(stated) / len(confidences))
            log_metric("rlcr/brier", sum(p - r for p, r in zip(passed, rewards, strict=True)) / len(rewards))
            if stated:
                log_metric("rlcr/confidence", sum(stated) / len(stated))
        return rewards


def rlcr_rewards(verifiers: dict[str, Any]) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """The Logic track's reward functions and weights for RLCR: the calibration reward alone."""
    return [CalibrationReward(verifiers)], [1.0]


def write_track_tasks(folder: Path, rows: Sequence[TaskRow], instruction: str) -> Path:
    """The rows as a task recipe the Logic track can build (one JSONL per bucket, nothing filtered out), each prompt
    carrying the confidence instruction. Returns the recipe's path."""
    import yaml

    from posttrain.calibration.elicit import with_instruction

    folder.mkdir(parents=True, exist_ok=True)
    by_bucket: dict[str, list[str]] = {}
    for row in rows:
        task = {**row.task, "id": row.id, "env": row.env,
                "messages": with_instruction(row.task.get("messages") or [], instruction)}
        by_bucket.setdefault(row.bucket, []).append(json.dumps(task, ensure_ascii=False))
    buckets = {}
    for i, (bucket, lines) in enumerate(by_bucket.items()):
        (folder / f"tasks_{i}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # an exact count per bucket: weight shares would down-sample buckets to equal proportions
        buckets[bucket] = {"sources": [{"path": f"tasks_{i}.jsonl"}], "share": {"count": len(lines)}}
    recipe = {"kind": "task", "description": "calibrate (rlcr): the fit split with the confidence instruction",
              "defaults": {"filters": {"dedupe": False}}, "buckets": buckets}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path
