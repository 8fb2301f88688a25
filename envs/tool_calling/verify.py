"""Verification of a tool-calling trajectory, from the task and the messages alone.

Two fresh worlds are built from the task: one replays the task's reference calls, the other replays the calls the
model made in the trajectory. The trajectory passes when the two end states are equal, every required fact appears
in the assistant's text for its turn, no call was made in a turn that cannot be done, every tool call parsed and was
valid, every user turn got a reply, and the turn limit held.

It is also tested against reward hacks (docs/environments.md, "Reward hacking"):

* enumeration: a reply that lists many candidates (1,000 ids, every amount it saw) to be sure to contain the fact.
  A turn's text may be at most ``reply_chars`` long (default: 3 x the reference reply + 300 characters), and may
  state at most ``extra_values`` (default 3) more distinct values shaped like a required fact (``tx-123``,
  ``500.50``, ``2025-03-04``) than the reference reply does;
* failing calls: trying call after call until one works. At most ``failed_calls`` (default 2) more refused calls
  (tool errors) than the reference needs, and at most ``calls`` in all (default 3 x the reference's + 6);
* hidden text: facts count only outside ``<think>...</think>`` (the user never reads the reasoning).

A task may set any of these in ``"limits": {"reply_chars", "extra_values", "failed_calls", "calls"}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs.tool_calling.domain import Domain
from envs.tool_calling.tasks import task_turns
from envs.tool_calling.world import World
from posttrain.environment import Message, Task, VerifyResult
from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, parse_tool_calls

DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3})")
THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)  # an unclosed block hides everything after it
EDGE_PUNCTUATION = "\"'`.,;:!?()[]{}<>*$"
LIMIT_KEYS = ("reply_chars", "extra_values", "failed_calls", "calls")
EXTRA_VALUES, FAILED_CALLS = 3, 2
REPLY_FACTOR, REPLY_SLACK = 3, 300
CALL_FACTOR, CALL_SLACK = 3, 6


def normalize(text: str) -> str:
    """Lower case, thousands separators dropped, whitespace collapsed."""
    return " ".join(DIGIT_COMMA.sub("", text.lower()).split())


def visible(text: str) -> str:
    """The text a user reads: reasoning blocks removed."""
    return THINK_BLOCK.sub(" ", text)


def has_fact(text: str, spellings: list[str]) -> bool:
    """Whether any spelling occurs as a whole token: "12" is not found in "123", "0.5" or "12.50"."""
    haystack = normalize(text)
    for spelling in spellings:
        pattern = r"(?<![\w.])" + re.escape(normalize(spelling)) + r"(?!\w|\.\d)"
        if re.search(pattern, haystack):
            return True
    return False


def value_shape(spelling: str) -> re.Pattern[str] | None:
    r"""For a one-token fact with a digit in it (an id, an amount, a date, a time), a pattern for every token of the
    same shape: ``tx-1234`` -> ``[a-z]+-\d+``. None for words and phrases (the length limit covers those)."""
    text = normalize(spelling).strip(EDGE_PUNCTUATION)
    if not text or " " in text or not any(c.isdigit() for c in text):
        return None
    parts = []
    for run in re.finditer(r"\d+|[^\W\d_]+|.", text):
        piece = run.group()
        parts.append(r"\d+" if piece.isdigit() else r"[^\W\d_]+" if piece.isalpha() else re.escape(piece))
    return re.compile("".join(parts))


def shaped_values(text: str, shape: re.Pattern[str]) -> set[str]:
    """The distinct tokens of ``text`` (punctuation at their edges removed) that have ``shape``."""
    tokens = (t.strip(EDGE_PUNCTUATION) for t in normalize(text).split())
    return {t for t in tokens if t and shape.fullmatch(t)}


@dataclass
class Replay:
    """A world after a sequence of calls, and how the calls went."""

    world: World
    calls: int = 0
    tool_errors: int = 0


def reference_world(task: Task, turns: list[dict[str, Any]], domains: Mapping[str, type[Domain]] | None = None
                    ) -> Replay:
    replay = Replay(World(task, domains))
    for i, turn in enumerate(turns):
        for step in turn["steps"]:
            for c in step:
                outcome = replay.world.run(ToolCall(c["name"], c["arguments"]))
                replay.calls += 1
                replay.tool_errors += outcome.status == "tool_error"
                if outcome.status not in ("ok", "tool_error"):  # a reference may show recovery from a refusal
                    raise UserError(f"tool_calling task {task.get('id', '?')}: reference call {c['name']} in turn "
                                    f"{i} is {outcome.status}: {outcome.observation['content']}")
    return replay


def task_limits(task: Task, turns: list[dict[str, Any]], reference: Replay) -> dict[str, Any]:
    """The hack limits of this task: its own ``limits`` over the defaults derived from the reference."""
    given = task.get("limits") or {}
    where = f"tool_calling task {task.get('id', '?')}: limits"
    if not isinstance(given, dict):
        raise UserError(f"{where}: expected an object with some of {', '.join(LIMIT_KEYS)}")
    unknown = sorted(set(given) - set(LIMIT_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown}; expected some of {', '.join(LIMIT_KEYS)}")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{where}.{key}: expected a non-negative integer, got {value!r}")
    return {
        "reply_chars": given.get("reply_chars", [REPLY_FACTOR * len(t["reply"]) + REPLY_SLACK for t in turns]),
        "extra_values": given.get("extra_values", EXTRA_VALUES),
        "failed_calls": reference.tool_errors + given.get("failed_calls", FAILED_CALLS),
        "calls": given.get("calls", CALL_FACTOR * reference.calls + CALL_SLACK),
    }


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)


def verify_trajectory(task: Task, messages: list[Message],
                      domains: Mapping[str, type[Domain]] | None = None) -> VerifyResult:
    """``domains``: the domain classes available by name (default: the built-in ones; the task's own
    ``domain_modules`` are always added)."""
    try:
        turns = task_turns(task)
        reference = reference_world(task, turns, domains)
        expected = reference.world.snapshot()
        world = World(task, domains)
        limits = task_limits(task, turns, reference)
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
        texts[turn].append(visible(parsed.content))
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
    calls = sum(statuses.values())
    if statuses.get("tool_error", 0) > limits["failed_calls"]:
        _add(reasons, "too_many_failed_calls")
    if calls > limits["calls"]:
        _add(reasons, "too_many_calls")
    try:
        actual = world.snapshot()
    except Exception as e:  # a user's domain whose snapshot fails: the verifier could not decide
        return VerifyResult.failure(f"snapshot of the replayed world failed: {type(e).__name__}: {e}")
    if actual != expected:
        _add(reasons, "state_mismatch")
    reply_chars = limits["reply_chars"]
    for i, turn_spec in enumerate(turns):
        said = " ".join(texts[i])
        cap = reply_chars[i] if isinstance(reply_chars, list) else reply_chars
        if len(said) > cap:
            _add(reasons, "reply_too_long")
        for spellings in turn_spec["facts"]:
            if not has_fact(said, spellings):
                _add(reasons, f"missing_fact:{spellings[0]}")
                continue
            shape = value_shape(spellings[0])
            if shape is not None:
                allowed = len(shaped_values(turn_spec["reply"], shape)) + limits["extra_values"]
                if len(shaped_values(said, shape)) > allowed:
                    _add(reasons, f"enumeration:{spellings[0]}")

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
