"""The ``math`` environment: one question, one answer, checked with math-verify.

Single turn: ``step`` takes the assistant's reply and ends the episode with reward 1.0 if the final answer
(``\\boxed{...}``, "The answer is ...", "#### 42", ...) is mathematically equal to the task's ``answer``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

from envs.math.checker import MathChecker
from envs.math.tasks import generate_tasks, reference_trajectory
from posttrain.environment import Environment, Message, StepResult, Task, Trajectory, VerifyResult
from posttrain.errors import UserError

THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)  # reasoning is not the answer; unclosed runs to the end

_shared: dict[tuple[float, int], MathChecker] = {}
_shared_lock = threading.Lock()


def shared_checker(timeout: float, memory_mb: int) -> MathChecker:
    """The process's checker for these settings. Rollouts make one MathEnv per episode, and a math-verify worker takes
    1-2 s to start (it imports sympy), so environments share one worker per process: the checker serialises requests
    and its worker dies with the process."""
    with _shared_lock:
        checker = _shared.get((timeout, memory_mb))
        if checker is None:
            checker = _shared[(timeout, memory_mb)] = MathChecker(timeout=timeout, memory_mb=memory_mb)
        return checker


class MathEnv(Environment):
    name = "math"
    description = "Math word problems and calculations; the final answer is checked with math-verify."

    def __init__(self, timeout: float = 5.0, memory_mb: int = 2048) -> None:
        self.checker = shared_checker(timeout, memory_mb)
        self._task: Task | None = None
        self._messages: list[Message] = []
        self._done = True

    def reset(self, task: Task) -> tuple[list[Message], list[dict[str, Any]]]:
        messages = task.get("messages")
        if not isinstance(messages, list) or not messages:
            raise UserError(f"math task {task.get('id', '?')}: 'messages' must be a non-empty list of chat messages")
        self._task, self._messages, self._done = task, [dict(m) for m in messages], False
        return [dict(m) for m in messages], []

    def step(self, assistant_message: Message) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError("math env: step() called before reset() or after the episode ended")
        self._messages.append({"role": "assistant", "content": assistant_message.get("content") or ""})
        self._done = True
        result = self.verify(Trajectory(self._task, self._messages))
        return StepResult(observations=[], reward=result.score, done=True, info={"verify": result.to_dict()})

    def verify(self, trajectory: Trajectory) -> VerifyResult:
        task = trajectory.task
        gold = task.get("answer")
        if not isinstance(gold, str) or not gold.strip():
            return VerifyResult.failure(f"math task {task.get('id', '?')}: no 'answer' string", "gold_unparseable")
        answer = THINK_BLOCK.sub("", trajectory.final_answer).strip()
        check = self.checker.check(gold, answer)
        details = {"gold": gold, "gold_parsed": check.gold_parsed, "answer_parsed": check.answer_parsed,
                   "seconds": round(check.seconds, 4)}
        if check.status == "ok":
            passed = check.passed
            return VerifyResult(passed=passed, score=float(passed), reasons=[] if passed else ["wrong_answer"],
                                details=details)
        if check.status == "no_answer":
            return VerifyResult(passed=False, score=0.0, reasons=["no_answer"], details=details)
        reason = {"gold_unparseable": "gold_unparseable", "timeout": "timeout"}.get(check.status, "verification_error")
        return VerifyResult(passed=False, score=0.0, reasons=[reason], details=details,
                            error=check.error or check.status)

    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        return generate_tasks(n, seed)

    def reference_trajectory(self, task: Task) -> list[Message]:
        return reference_trajectory(task)

    def close(self) -> None:
        if _shared.get((self.checker.timeout, self.checker.memory_mb)) is not self.checker:  # e.g. an unpickled copy
            self.checker.close()
