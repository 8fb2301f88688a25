"""The ``instruction_following`` environment: a writing request with verifiable instructions (IFEval's: length in
words, sentences or paragraphs, required and forbidden keywords, case, JSON and markdown formats, start and end
phrases, bullets, sections, highlights, placeholders, a postscript, ...), each checked by its own verifier.

Single turn. The score is the fraction of instructions the last assistant message follows (IFEval's instruction-level
accuracy); ``passed`` needs all of them (prompt-level). ``loose=True`` uses IFEval's loose mode (the first or last line
and markdown ``*`` may be dropped before checking). The checkers are ``if-verifiable``'s IFEval registry, repaired
where it would download data or count an undetectable language as followed (see :mod:`.checks`).

Task record (IFEval's own fields, so IFEval-shaped data is used as it is)::

    {"id", "env": "instruction_following", "messages": [{"role": "user", "content": prompt}], "tools": [],
     "prompt": prompt, "instruction_id_list": ["punctuation:no_comma", ...], "kwargs": [{}, ...]}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from envs.instruction_following.checks import Instruction, build, check
from envs.instruction_following.generator import generate_tasks
from posttrain.environment import Environment, Message, StepResult, Task, Trajectory, VerifyResult
from posttrain.errors import UserError

THINK_OPEN = "<think>"


def task_instructions(task: Task) -> list[Instruction]:
    """The task's instructions, each checked (UserError naming the task otherwise)."""
    where = f"instruction_following task {task.get('id', '?')}"
    ids, kwargs = task.get("instruction_id_list"), task.get("kwargs")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise UserError(f"{where}: 'instruction_id_list' must be a non-empty list of instruction ids")
    if kwargs is None:
        kwargs = [{}] * len(ids)
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict | type(None))
                                                                          for k in kwargs):
        raise UserError(f"{where}: 'kwargs' must be a list of objects, one per instruction ({len(ids)})")
    prompt = task_prompt(task)
    return [build(i, k, prompt, f"{where}: instruction {n}") for n, (i, k) in enumerate(zip(ids, kwargs, strict=True))]


def task_prompt(task: Task) -> str:
    if isinstance(task.get("prompt"), str):
        return task["prompt"]
    users = [m.get("content") for m in task.get("messages") or [] if m.get("role") == "user"]
    if not users or not isinstance(users[-1], str):
        raise UserError(f"instruction_following task {task.get('id', '?')}: no 'prompt' and no user message")
    return users[-1]


def echoed(response: str, instructions: list[Instruction]) -> bool:
    """Whether the response copies an instruction's own wording: pasting the prompt back would otherwise satisfy
    keyword instructions (the instruction text names the keywords)."""
    text = " ".join(response.lower().split())
    return any(len(i.description) > 24 and " ".join(i.description.lower().split()) in text for i in instructions)


class InstructionFollowingEnv(Environment):
    name = "instruction_following"
    description = ("Writing requests with verifiable instructions (IFEval: length, keywords, case, JSON/markdown "
                   "format, start/end phrases, bullets, ...); score = fraction of instructions followed.")

    def __init__(self, loose: bool = False) -> None:
        self.loose = loose
        self._task: Task | None = None
        self._done = True

    def reset(self, task: Task) -> tuple[list[Message], list[dict[str, Any]]]:
        task_instructions(task)
        messages = task.get("messages")
        if not isinstance(messages, list) or not messages:
            raise UserError(f"instruction_following task {task.get('id', '?')}: 'messages' must be a non-empty list")
        self._task, self._done = task, False
        return [dict(m) for m in messages], []

    def step(self, assistant_message: Message) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError("instruction_following env: step() needs a reset() first and takes one assistant turn")
        self._done = True
        reply = {"role": "assistant", "content": assistant_message.get("content") or ""}
        result = self.verify(Trajectory(self._task, [*self._task["messages"], reply]))
        return StepResult(reward=result.score, done=True, info={"verify": result.to_dict()})

    def verify(self, trajectory: Trajectory) -> VerifyResult:
        task = trajectory.task
        try:
            instructions = task_instructions(task)
        except UserError as e:
            return VerifyResult.failure(e.message, "bad_task")
        response = trajectory.final_answer
        if not response.strip() or (THINK_OPEN in response and "</think>" not in response):
            return VerifyResult(passed=False, score=0.0, reasons=["no_answer"],
                                details={"instructions": [i.id for i in instructions]})
        wanted = "loose" if self.loose else "strict"
        verdicts = check(response, instructions, task_prompt(task))
        followed = [getattr(v, wanted) for v in verdicts]
        reasons = [f"not_followed:{v.id}" for v, ok in zip(verdicts, followed, strict=True) if not ok]
        score = sum(followed) / len(followed)
        if echoed(response, instructions):
            reasons.insert(0, "echoes_instructions")
            score = 0.0
        details = {"mode": wanted, "instructions": [{"id": v.id, "strict": v.strict, "loose": v.loose}
                                                    for v in verdicts]}
        return VerifyResult(passed=not reasons, score=score, reasons=reasons, details=details)

    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        return generate_tasks(n, seed)

    def reference_trajectory(self, task: Task) -> list[Message]:
        if not isinstance(task.get("reference_response"), str):
            raise UserError(f"instruction_following task {task.get('id', '?')}: no 'reference_response'")
        return [*[dict(m) for m in task["messages"]], {"role": "assistant", "content": task["reference_response"]}]
