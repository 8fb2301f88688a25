"""The ``tool_call_match`` environment: static tool-call data (xLAM, Glaive, ToolACE, BFCL single-turn) verified by
comparing the model's calls with the ground-truth calls (see :mod:`envs.tool_call_match.checker`).

Nothing runs: the tools are schemas only. The episode is one assistant turn; its ``<tool_call>`` blocks are the
answer. A task whose ground truth is empty asks for no call at all (relevance detection: the tools cannot help).

Task record::

    {"id", "env": "tool_call_match", "messages": [...], "tools": [OpenAI function schemas],
     "ground_truth": [{"name": "get_weather", "arguments": {"city": ["Paris", "paris, france"], "unit": ["c", ""]}}],
     "order": "any" | "given"}
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema

from envs.tool_call_match.checker import OPTIONAL, match_calls
from posttrain.environment import Environment, Message, StepResult, Task, Trajectory, VerifyResult
from posttrain.errors import UserError
from posttrain.tool_calls import check_tool_schema, format_assistant_message, parse_tool_calls, tool_name

ORDERS = ("any", "given")
TASK_SCHEMA = {
    "type": "object",
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role", "content"]}},
        "tools": {"type": "array", "items": {"type": "object"}},
        "ground_truth": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1},
                           "arguments": {"type": "object", "additionalProperties": {"type": "array"}}},
            "required": ["name", "arguments"], "additionalProperties": False}},
        "order": {"enum": list(ORDERS)},
    },
    "required": ["messages", "tools", "ground_truth"],
}
_VALIDATOR = jsonschema.Draft202012Validator(TASK_SCHEMA)


def check_task(task: Any) -> dict[str, dict[str, Any]]:
    """The task's tools by name, after checking the task (UserError naming the task and the place)."""
    where = f"tool_call_match task {task.get('id', '?') if isinstance(task, dict) else '?'}"
    for err in _VALIDATOR.iter_errors(task):
        at = "/".join(str(p) for p in err.absolute_path) or "(top)"
        raise UserError(f"{where}: {at}: {err.message}")
    tools: dict[str, dict[str, Any]] = {}
    for i, schema in enumerate(task["tools"]):
        try:
            check_tool_schema(schema)
        except UserError as e:
            raise UserError(f"{where}: tools/{i}: {e.message}") from None
        tools[tool_name(schema)] = schema
    for i, truth in enumerate(task["ground_truth"]):
        schema = tools.get(truth["name"])
        if schema is None:
            raise UserError(f"{where}: ground_truth/{i}: calls {truth['name']!r}, which is not among its tools "
                            f"({', '.join(tools) or 'none'})")
        params = schema.get("function", schema).get("parameters") or {}
        props = set(params.get("properties") or {})
        extra = sorted(set(truth["arguments"]) - props)
        if extra:  # a model call with them would be refused as unexpected arguments: the task could never pass
            raise UserError(f"{where}: ground_truth/{i} ({truth['name']}): arguments {extra} are not in the tool's "
                            "parameters")
        missing = sorted(set(params.get("required") or []) - set(truth["arguments"]))
        if missing:
            raise UserError(f"{where}: ground_truth/{i} ({truth['name']}): required arguments {missing} have no "
                            "possible values")
        for name, options in truth["arguments"].items():
            if not options:
                raise UserError(f"{where}: ground_truth/{i} ({truth['name']}): argument {name!r} lists no possible "
                                "value (give at least one; \"\" marks it as optional)")
    return tools


def reference_calls(task: Task) -> list[dict[str, Any]]:
    """The first possible value of every argument (optional ones left out)."""
    return [{"name": t["name"], "arguments": {k: v[0] for k, v in t["arguments"].items() if v[0] != OPTIONAL}}
            for t in task["ground_truth"]]


class ToolCallMatchEnv(Environment):
    name = "tool_call_match"
    description = ("Static tool-call data (xLAM, BFCL, OpenAI tool_calls): the model's calls are checked against "
                   "ground-truth calls (name, arguments, types, allowed values, order).")

    def __init__(self) -> None:
        self._task: Task | None = None
        self._done = True

    def reset(self, task: Task) -> tuple[list[Message], list[dict[str, Any]]]:
        check_task(task)
        self._task, self._done = task, False
        return copy.deepcopy(task["messages"]), copy.deepcopy(task["tools"])

    def step(self, assistant_message: Message) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError("tool_call_match env: step() needs a reset() first and takes one assistant turn")
        self._done = True
        reply = {"role": "assistant", "content": assistant_message.get("content") or ""}
        result = self.verify(Trajectory(self._task, [*self._task["messages"], reply]))
        return StepResult(observations=[], reward=result.score, done=True, info={"verify": result.to_dict()})

    def verify(self, trajectory: Trajectory) -> VerifyResult:
        task = trajectory.task
        try:
            tools = check_task(task)
        except UserError as e:
            return VerifyResult.failure(e.message, "bad_task")
        prompt = task["messages"]
        answers = trajectory.messages[len(prompt):]
        if [(m.get("role"), m.get("content")) for m in trajectory.messages[:len(prompt)]] != \
                [(m.get("role"), m.get("content")) for m in prompt]:
            return VerifyResult(passed=False, score=0.0, reasons=["conversation_mismatch"])
        replies = [m for m in answers if m.get("role") == "assistant"]
        if not replies:
            return VerifyResult(passed=False, score=0.0, reasons=["no_answer"])
        if len(answers) != 1:  # one assistant turn is the answer; anything after it is not this env's episode
            return VerifyResult(passed=False, score=0.0, reasons=["turn_limit"])
        parsed = parse_tool_calls(replies[0].get("content") or "")
        result = match_calls(parsed.calls, task["ground_truth"], tools, task.get("order", "any"))
        reasons = list(result.reasons)
        if parsed.errors:
            reasons.insert(0, "format_error")
        unknown = sorted({c.name for c in parsed.calls} - set(tools))
        if unknown:
            reasons.insert(0, "unknown_tool")
        passed = result.passed and not parsed.errors
        score = result.score if not parsed.errors else result.score * 0.5  # a broken block costs half the credit
        details = {"expected_calls": result.expected, "calls": result.made, "matched": result.matched,
                   "pairs": result.pairs, "parse_errors": parsed.errors[:5]}
        return VerifyResult(passed=passed, score=score if not passed else 1.0, reasons=reasons, details=details)

    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        from envs.tool_call_match.samples import generate_tasks

        return generate_tasks(n, seed)

    def reference_trajectory(self, task: Task) -> list[Message]:
        check_task(task)
        return [*copy.deepcopy(task["messages"]),
                {"role": "assistant", "content": format_assistant_message("", reference_calls(task))}]
