"""Verification of a tool-calling trajectory, from the task and the messages alone.

Two fresh worlds are built from the task: one replays the task's reference calls, the other replays the calls the
model made in the trajectory. The trajectory passes when the two end states are equal, every required fact appears
in the assistant's text for its turn, no call was made in a turn that cannot be done, every tool call parsed and was
valid, every user turn got a reply, and the turn limit held.
"""

from __future__ import annotations

import re
from typing import Any

from envs.tool_calling.tasks import task_turns
from envs.tool_calling.world import World
from posttrain.environment import Message, Task, VerifyResult
from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, parse_tool_calls

DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3})")


def normalize(text: str) -> str:
    """Lower case, thousands separators dropped, whitespace collapsed."""
    return " ".join(DIGIT_COMMA.sub("", text.lower()).split())


def has_fact(text: str, spellings: list[str]) -> bool:
    """Whether any spelling occurs as a whole token: "12" is not found in "123", "0.5" or "12.50"."""
    haystack = normalize(text)
    for spelling in spellings:
        pattern = r"(?<![\w.])" + re.escape(normalize(spelling)) + r"(?!\w|\.\d)"
        if re.search(pattern, haystack):
            return True
    return False


def reference_world(task: Task, turns: list[dict[str, Any]]) -> World:
    world = World(task)
    for i, turn in enumerate(turns):
        for step in turn["steps"]:
            for c in step:
                outcome = world.run(ToolCall(c["name"], c["arguments"]))
                if outcome.status not in ("ok", "tool_error"):  # a reference may show recovery from a refusal
                    raise UserError(f"tool_calling task {task.get('id', '?')}: reference call {c['name']} in turn "
                                    f"{i} is {outcome.status}: {outcome.observation['content']}")
    return world


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)


def verify_trajectory(task: Task, messages: list[Message]) -> VerifyResult:
    try:
        turns = task_turns(task)
        expected = reference_world(task, turns).snapshot()
        world = World(task)
    except UserError as e:
        return VerifyResult.failure(e.message, "bad_task")

    reasons: list[str] = []
    errors: list[str] = []
    prompt = task["messages"]
    if [(m.get("role"), m.get("content")) for m in messages[:len(prompt)]] != \
            [(m.get("role"), m.get("content")) for m in prompt]:
        _add(reasons, "conversation_mismatch")
    turn, replied, assistant_count = 0, [False] * len(turns), 0
    texts: list[list[str]] = [[] for _ in turns]
    statuses: dict[str, int] = {}
    for m in messages[len(prompt):]:
        if m.get("role") == "user":
            turn += 1
            if turn >= len(turns) or m.get("content") != turns[turn]["user"]:
                _add(reasons, "conversation_mismatch")
                break
            continue
        if m.get("role") != "assistant":
            continue  # tool results are the environment's; the replay recomputes them
        assistant_count += 1
        parsed = parse_tool_calls(m.get("content") or "")
        texts[turn].append(parsed.content)
        if parsed.errors:
            _add(reasons, "format_error")
        if not parsed.calls and not parsed.errors:
            replied[turn] = True
        for c in parsed.calls:
            if not turns[turn]["possible"]:
                _add(reasons, "unexpected_call")
            outcome = world.run(c)
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
            if outcome.status in ("unknown_tool", "invalid_arguments"):
                _add(reasons, outcome.status)
            elif outcome.status == "internal_error":
                errors.append(outcome.observation["content"])

    limit = task.get("max_turns", assistant_count + 1)
    if assistant_count > limit or (assistant_count == limit and not all(replied)):  # over, or ran out unfinished
        _add(reasons, "turn_limit")
    if not all(replied):
        _add(reasons, "incomplete")
    actual = world.snapshot()
    if actual != expected:
        _add(reasons, "state_mismatch")
    for i, turn_spec in enumerate(turns):
        for spellings in turn_spec["facts"]:
            if not has_fact(" ".join(texts[i]), spellings):
                _add(reasons, f"missing_fact:{spellings[0]}")

    details = {
        "calls": statuses,
        "assistant_messages": assistant_count,
        "turns_replied": sum(replied),
        "turns": len(turns),
        "state_differs_in": sorted(k for k in expected if expected[k] != actual.get(k)),
    }
    passed = not reasons
    return VerifyResult(passed=passed, score=float(passed), reasons=reasons, details=details,
                        error="; ".join(errors) if errors else None)
