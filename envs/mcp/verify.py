"""Verification of an MCP trajectory: fresh servers, the trajectory's calls replayed on them in order, then the
task's checks on the state they leave.

* ``probe`` + ``expected``: read-only calls whose results must equal the expected ones;
* ``probe`` + ``reference_calls``: the expected results are the probes' results after the reference calls on other
  fresh servers (computed once per task and verifier process);
* ``function``: your check, ``check(trajectory, probe) -> bool | float | {"passed", "score", "reasons"}``, where
  ``probe(name, arguments)`` calls a tool on the replayed servers and returns its result;
* ``facts``: spellings the final reply must contain (matched as the tool_calling environment matches them).

It is tested against the same hacks as the tool_calling verifier (enumerated candidates in the reply, facts only in
reasoning, call after failing call, unlimited calls). A server that cannot start, dies or hangs during the replay, a
probe that fails, or a check function that raises is a verification error (``error`` set), never a pass.
"""

from __future__ import annotations

import json
from typing import Any

from envs.mcp.server import McpError, ServerLimits
from envs.mcp.session import McpSession, check_task
from envs.tool_calling.verify import EXTRA_VALUES, FAILED_CALLS, has_fact, shaped_values, value_shape, visible
from posttrain.environment import Message, Task, Trajectory, VerifyResult
from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, parse_tool_calls

REPLY_CHARS, CALL_FACTOR, CALL_SLACK, CALLS_WITHOUT_REFERENCE = 1500, 3, 6, 30
REFERENCE_CACHE: dict[str, Any] = {}  # the probes' results after a task's reference calls, per process
LIMIT_KEYS = ("reply_chars", "extra_values", "failed_calls", "calls")


def _limits(task: Task, reference_calls: int, reference_errors: int) -> dict[str, int]:
    given = task.get("limits") or {}
    where = f"mcp task {task.get('id', '?')}: limits"
    if not isinstance(given, dict) or set(given) - set(LIMIT_KEYS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in given.values()):
        raise UserError(f"{where}: expected an object with non-negative integers for some of {', '.join(LIMIT_KEYS)}")
    calls = CALL_FACTOR * reference_calls + CALL_SLACK if reference_calls else CALLS_WITHOUT_REFERENCE
    return {"reply_chars": given.get("reply_chars", REPLY_CHARS), "extra_values": given.get("extra_values",
                                                                                             EXTRA_VALUES),
            "failed_calls": reference_errors + given.get("failed_calls", FAILED_CALLS), "calls": given.get("calls",
                                                                                                          calls)}


def _expected(task: Task, limits: ServerLimits, cache: dict[str, Any]) -> tuple[list[Any] | None, int, int]:
    """The probes' expected results, and the reference's number of calls and tool errors."""
    check = task["check"]
    if "expected" in check:
        return check["expected"], 0, 0
    if "reference_calls" not in check:
        return None, 0, 0
    key = json.dumps([task["mcp_servers"], check["reference_calls"], check["probe"]], sort_keys=True)
    if key not in cache:
        session = McpSession(task, limits)
        try:
            errors = 0
            for i, c in enumerate(check["reference_calls"]):
                outcome = session.run(ToolCall(c["name"], c.get("arguments") or {}))
                if outcome.status not in ("ok", "tool_error"):
                    raise UserError(f"mcp task {task.get('id', '?')}: check.reference_calls/{i} ({c['name']}) is "
                                    f"{outcome.status}: {outcome.observation['content'][:300]}")
                errors += outcome.status == "tool_error"
            cache[key] = ([session.probe(p["name"], p.get("arguments")) for p in check["probe"]],
                          len(check["reference_calls"]), errors)
        finally:
            session.close()
    return cache[key]


def _run_check(spec: str, trajectory: Trajectory, session: McpSession) -> tuple[bool, float, list[str]]:
    from posttrain.plugins import load_object

    fn = load_object(spec, "mcp check function")
    try:
        verdict = fn(trajectory, session.probe)
    except McpError:
        raise
    except Exception as e:
        raise McpError(f"check function {spec} raised {type(e).__name__}: {e}", "check_error") from None
    if isinstance(verdict, bool):
        return verdict, float(verdict), [] if verdict else ["check_failed"]
    if isinstance(verdict, int | float):
        score = max(0.0, min(1.0, float(verdict)))
        return score == 1.0, score, [] if score == 1.0 else ["check_failed"]
    if isinstance(verdict, dict) and isinstance(verdict.get("passed"), bool):
        passed = verdict["passed"]
        score = float(verdict.get("score", float(passed)))
        reasons = [str(r) for r in verdict.get("reasons") or ([] if passed else ["check_failed"])]
        return passed, max(0.0, min(1.0, score)), reasons
    raise McpError(f"check function {spec} returned {verdict!r}; expected a bool, a score in [0, 1] or "
                   "{'passed': bool, 'score': float, 'reasons': [...]}", "check_error")


def verify_trajectory(task: Task, messages: list[Message], limits: ServerLimits, cache: dict[str, Any],
                      session: McpSession | None = None) -> VerifyResult:
    """Verify by replaying on fresh servers (or, with ``session``, on the episode's own servers after it)."""
    try:
        check_task(task)
    except UserError as e:
        return VerifyResult.failure(e.message, "bad_task")
    prompt = task["messages"]
    reasons: list[str] = []
    if [(m.get("role"), m.get("content")) for m in messages[:len(prompt)]] != \
            [(m.get("role"), m.get("content")) for m in prompt]:
        reasons.append("conversation_mismatch")
    calls: list[ToolCall] = []
    replies: list[str] = []
    texts: list[str] = []
    assistant = [m for m in messages[len(prompt):] if m.get("role") == "assistant"]
    for m in assistant:
        parsed = parse_tool_calls(m.get("content") or "")
        calls += parsed.calls
        texts.append(visible(parsed.content))
        if parsed.errors and "format_error" not in reasons:
            reasons.append("format_error")
        if not parsed.calls and not parsed.errors:
            replies.append(visible(parsed.content))
    if not assistant or not replies or parse_tool_calls(assistant[-1].get("content") or "").calls:
        reasons.append("incomplete")
    if len(assistant) > task.get("max_turns", len(assistant)):
        reasons.append("turn_limit")

    own = session is None
    score_from_check: float | None = None
    check_reasons: list[str] = []
    try:
        expected, reference_calls, reference_errors = _expected(task, limits, cache)
        hack_limits = _limits(task, reference_calls, reference_errors)
        if own:
            session = McpSession(task, limits)
            for c in calls:
                session.run(c)
        assert session is not None
        statuses = dict(session.statuses)
        for status in ("unknown_tool", "invalid_arguments"):
            if statuses.get(status):
                reasons.append(status)
        if statuses.get("tool_error", 0) > hack_limits["failed_calls"]:
            reasons.append("too_many_failed_calls")
        if sum(statuses.values()) > hack_limits["calls"]:
            reasons.append("too_many_calls")
        check = task["check"]
        if expected is not None:
            actual = [session.probe(p["name"], p.get("arguments")) for p in check["probe"]]
            if actual != expected:
                reasons.append("state_mismatch")
        if "function" in check:
            passed, score_from_check, check_reasons = _run_check(check["function"], Trajectory(task, messages),
                                                                 session)
            reasons += [r for r in check_reasons if r not in reasons]
    except McpError as e:
        return VerifyResult.failure(e.message, e.reason)
    except UserError as e:
        return VerifyResult.failure(e.message, "bad_task")
    finally:
        if own and session is not None:
            session.close()

    said = " ".join(texts)
    if len(said) > hack_limits["reply_chars"]:
        reasons.append("reply_too_long")
    facts = task["check"].get("facts") or []
    for spellings in facts:
        if not has_fact(said, spellings):
            reasons.append(f"missing_fact:{spellings[0]}")
            continue
        shape = value_shape(spellings[0])
        same_shape = sum(value_shape(f[0]) is not None and value_shape(f[0]).pattern == shape.pattern
                         for f in facts) if shape is not None else 0
        if shape is not None and len(shaped_values(said, shape)) > same_shape + hack_limits["extra_values"]:
            reasons.append(f"enumeration:{spellings[0]}")
    passed = not reasons
    # a check function's partial score counts when it is the only thing that failed
    only_check = score_from_check is not None and set(reasons) <= set(check_reasons)
    score = 1.0 if passed else (score_from_check if only_check else 0.0)
    return VerifyResult(passed=passed, score=score, reasons=reasons,
                        details={"calls": statuses, "assistant_messages": len(assistant), "replayed": own})
