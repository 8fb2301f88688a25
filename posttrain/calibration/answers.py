"""The model's answers to task rows, graded by each row's environment: the raw material of calibration.

Every row is played through the multi-turn agent loop (rollout pool or engine) and the episode is verified by the
environment's verifier in a :class:`~posttrain.verify_pool.VerifyPool`. With verbalized elicitation the prompt carries
the confidence instruction and the ``<confidence>`` tags are removed from the answer before it is verified, so a
confidence such as 0.8 is never read as the answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.calibration.elicit import strip_confidence, with_instruction
from posttrain.environment import Trajectory, VerifyResult
from posttrain.rollout.agent_loop import AgentLoopConfig, Episode, run_episodes
from posttrain.rollout.sampling import SamplingParams
from posttrain.tasks import TaskRow

Message = dict[str, Any]


@dataclass
class GradedAnswer:
    """One episode of one task row and its verdict."""

    row: TaskRow
    sample_index: int
    messages: list[Message]  # the conversation as the model saw and wrote it (prompt included)
    tools: list[dict[str, Any]]
    logprobs: list[float]  # the sampler's log-prob of every token the model wrote
    passed: bool
    reasons: list[str]
    error: str | None
    truncated: bool  # the last model turn hit its token limit

    @property
    def answer_text(self) -> str:
        """The final answer of the last model turn (without its reasoning)."""
        from posttrain.models.chat import strip_reasoning

        return strip_reasoning(next((m.get("content") or "" for m in reversed(self.messages)
                                     if m.get("role") == "assistant"), ""))

    @property
    def answered(self) -> bool:
        """The model wrote at least one turn (an environment that failed at reset leaves nothing to elicit on)."""
        return any(m.get("role") == "assistant" for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.row.id, "task_id": self.row.task.get("id"), "env": self.row.env, "bucket": self.row.bucket,
                "sample_index": self.sample_index, "answer": self.answer_text, "passed": self.passed,
                "reasons": self.reasons, "error": self.error, "truncated": self.truncated,
                "answer_tokens": len(self.logprobs)}


def sample_and_grade(generator: Any, rows: Sequence[TaskRow], sampling: Sequence[SamplingParams],
                     verifiers: Mapping[str, Any], *, agent: AgentLoopConfig,
                     env_kwargs: Mapping[str, dict[str, Any]], instruction: str | None = None,
                     chat: Any = None) -> list[GradedAnswer]:
    """Play ``sampling[i].n`` episodes of each row and verify them; answers in row order, samples in order.

    ``instruction``: appended to each task's last user message (verbalized confidence); tags are stripped before
    verification. ``chat``: the model's chat format (default: the generator tokenizer's own)."""
    by_env: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        by_env.setdefault(row.env, []).append(position)
    graded: dict[int, list[GradedAnswer]] = {}
    for env, positions in by_env.items():  # one agent loop and one verifier per environment
        tasks = [_task_for(rows[p].task, instruction) for p in positions]
        episodes = run_episodes(generator, env, tasks, [sampling[p] for p in positions], max_turns=agent.max_turns,
                                max_episode_tokens=agent.max_episode_tokens, env_kwargs=env_kwargs.get(env),
                                chat=chat)
        owners = [p for p in positions for _ in range(sampling[p].n)]
        playable = [i for i, ep in enumerate(episodes) if ep.end_reason != "env_error"]
        verdicts: dict[int, VerifyResult] = {}
        trajectories = (_for_verification(episodes[i], rows[owners[i]].task, instruction) for i in playable)
        for j, result in verifiers[env].verify_many(trajectories):
            verdicts[playable[j]] = result
        for i, ep in enumerate(episodes):
            verdict = verdicts.get(i) or VerifyResult.failure(ep.error or "the episode did not run", reason="env_error")
            graded.setdefault(owners[i], []).append(_graded(rows[owners[i]], ep, verdict))
    return [answer for p in range(len(rows)) for answer in graded.get(p, [])]


def _task_for(task: dict[str, Any], instruction: str | None) -> dict[str, Any]:
    if instruction is None:
        return task
    return {**task, "messages": with_instruction(task.get("messages") or [], instruction)}


def _for_verification(ep: Episode, task: dict[str, Any], instruction: str | None) -> Trajectory:
    """The episode as the verifier should judge it: the original task, final answers (no reasoning), and without
    confidence tags."""
    judged = ep.trajectory.messages
    if instruction is None:
        return Trajectory(task, judged)
    messages = [{**m, "content": strip_confidence(m.get("content") or "")} if m.get("role") == "assistant" else m
                for m in judged]
    return Trajectory(task, messages)


def _graded(row: TaskRow, ep: Episode, verdict: VerifyResult) -> GradedAnswer:
    model_logprobs = [lp for row in ep.rows for lp, m in zip(row.logprobs, row.mask, strict=True) if m]
    return GradedAnswer(
        row=row, sample_index=ep.sample_index, messages=[dict(m) for m in ep.messages], tools=list(ep.tools),
        logprobs=model_logprobs, passed=bool(verdict.passed), reasons=list(verdict.reasons), error=verdict.error,
        truncated=bool(ep.finish_reasons) and ep.finish_reasons[-1] == "length",
    )


def write_answers(path: Path, answers: Sequence[GradedAnswer],
                  columns: Mapping[str, Sequence[float]] | None = None) -> None:
    """One JSON object per answer (what was asked, answered and judged), plus ``columns`` (e.g. confidences)."""
    columns = dict(columns or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, answer in enumerate(answers):
        record = {**answer.to_dict(), **{name: float(values[i]) for name, values in columns.items()}}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)
