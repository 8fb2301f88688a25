"""Checking a model's tool calls against ground-truth calls, in the manner of BFCL's AST checker.

Ground truth is a list of calls, each ``{"name": ..., "arguments": {arg: [possible values]}}``: every argument lists
the values that are accepted, and ``""`` among them means the argument may be left out. One model call matches one
ground-truth call when

* the function name is the same;
* every argument the tool's schema requires is given, and no argument outside the tool's schema or the ground truth;
* every given argument has the schema's type (an integer is accepted where a number is expected, as in Python);
* every given argument's value is one of the possible values: strings compare case-insensitively with spaces and
  ``,./-_*^`` ignored (BFCL's normalisation), numbers by value, lists element by element, objects key by key (an
  object's possible values may themselves list possible values per key);
* every ground-truth argument without ``""`` among its values is given.

Several calls (parallel calls) match as a set by default (``order: "any"``) or in order (``order: "given"``). The
score is the number of matched ground-truth calls over the larger of the two counts, so extra calls cost as much as
missing ones; ``passed`` needs every call matched and no extra one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from posttrain.tool_calls import ToolCall

OPTIONAL = ""
_IGNORED = re.compile(r"[\s,./\-_*^]")
JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict,
              "null": type(None)}


def normalize_string(text: str) -> str:
    return _IGNORED.sub("", text.lower())


def type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` has the JSON type the schema names (any type when it names none)."""
    kinds = schema.get("type")
    if kinds is None:
        return True
    for kind in [kinds] if isinstance(kinds, str) else list(kinds):
        expected = JSON_TYPES.get(kind)
        if expected is None:
            return True  # a type we do not know: not ours to refuse
        if isinstance(value, bool) and kind in ("integer", "number"):
            continue  # True is an int in Python, not in JSON
        if isinstance(value, expected):
            return True
    return False


def value_matches(value: Any, possible: Any) -> bool:
    """Whether a given value equals one possible value (strings normalised, numbers by value, containers deep)."""
    if isinstance(possible, str):
        return isinstance(value, str) and normalize_string(value) == normalize_string(possible)
    if isinstance(possible, bool) or isinstance(value, bool):
        return type(possible) is type(value) and possible == value
    if isinstance(possible, int | float):
        return isinstance(value, int | float) and float(value) == float(possible)
    if isinstance(possible, list):
        return (isinstance(value, list) and len(value) == len(possible)
                and all(value_matches(v, p) for v, p in zip(value, possible, strict=True)))
    if isinstance(possible, dict):
        if not isinstance(value, dict):
            return False
        for key, options in possible.items():  # {key: [possible values]} (BFCL) or {key: value}
            choices = options if isinstance(options, list) else [options]
            if key not in value:
                if OPTIONAL not in choices:
                    return False
                continue
            if not any(value_matches(value[key], c) for c in choices if c != OPTIONAL or value[key] == OPTIONAL):
                return False
        return set(value) <= set(possible)
    return value == possible


@dataclass
class CallCheck:
    """One model call against one ground-truth call: matched, or why not (reasons name the argument)."""

    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons


def check_call(call: ToolCall, truth: Mapping[str, Any], tool: Mapping[str, Any]) -> CallCheck:
    """Check one call against one ground-truth call; ``tool`` is the OpenAI schema of the function it names."""
    result = CallCheck()
    if call.name != truth["name"]:
        result.reasons.append("wrong_function")
        return result
    params = tool.get("function", tool).get("parameters") or {}
    props: Mapping[str, Any] = params.get("properties") or {}
    expected: Mapping[str, list[Any]] = truth["arguments"]
    for name in params.get("required") or []:
        if name not in call.arguments:
            result.reasons.append(f"missing_argument:{name}")
    for name, value in call.arguments.items():
        if name not in props or name not in expected:
            result.reasons.append(f"unexpected_argument:{name}")
        elif not type_ok(value, props[name]):
            result.reasons.append(f"wrong_type:{name}")
        elif not any(value_matches(value, p) for p in expected[name] if p != OPTIONAL or value == OPTIONAL):
            result.reasons.append(f"wrong_value:{name}")
    for name, options in expected.items():
        if name not in call.arguments and OPTIONAL not in options and f"missing_argument:{name}" not in result.reasons:
            result.reasons.append(f"missing_argument:{name}")
    return result


@dataclass
class MatchResult:
    matched: int
    expected: int
    made: int
    reasons: list[str]
    pairs: list[tuple[int, int]]  # (model call index, ground-truth index)

    @property
    def passed(self) -> bool:
        return self.matched == self.expected == self.made

    @property
    def score(self) -> float:
        most = max(self.expected, self.made)
        return 1.0 if most == 0 else self.matched / most


def match_calls(calls: Sequence[ToolCall], truths: Sequence[Mapping[str, Any]], tools: Mapping[str, Mapping[str, Any]],
                order: str = "any") -> MatchResult:
    """The largest matching of model calls to ground-truth calls (``order``: ``any`` or ``given``)."""
    checks = [[check_call(c, t, tools.get(c.name, {})) for t in truths] for c in calls]
    if order == "given":
        pairs = [(i, i) for i in range(min(len(calls), len(truths))) if checks[i][i].ok]
    else:
        pairs = _largest_matching(checks)
    reasons: list[str] = []
    if len(calls) != len(truths):
        reasons.append("no_call" if not calls else "unexpected_call" if not truths else "wrong_count")
    matched_truth = {t for _, t in pairs}
    matched_calls = {c for c, _ in pairs}
    for t in range(len(truths)):
        if t in matched_truth:
            continue
        # why the nearest unmatched call (the one with the fewest problems) does not fit this ground-truth call
        candidates = [checks[c][t].reasons for c in range(len(calls)) if c not in matched_calls]
        if candidates:
            for reason in min(candidates, key=len):
                if reason not in reasons:
                    reasons.append(reason)
    return MatchResult(len(pairs), len(truths), len(calls), reasons, sorted(pairs))


def _largest_matching(checks: list[list[CallCheck]]) -> list[tuple[int, int]]:
    """Maximum bipartite matching (augmenting paths; there are a handful of calls)."""
    owner: dict[int, int] = {}  # ground-truth index -> model call index

    def place(c: int, seen: set[int]) -> bool:
        for t, check in enumerate(checks[c]):
            if check.ok and t not in seen:
                seen.add(t)
                if t not in owner or place(owner[t], seen):
                    owner[t] = c
                    return True
        return False

    for c in range(len(checks)):
        place(c, set())
    return [(c, t) for t, c in owner.items()]
