"""Hermes-style tool calls in model text: parse them, write them, check their arguments against a tool's schema.

A call is a JSON object inside ``<tool_call>...</tool_call>``::

    <tool_call>
    {"name": "get_balance", "arguments": {"account": "checking"}}
    </tool_call>

Model output is untrusted: nothing here raises on bad text. An unclosed block, malformed JSON or a wrong shape
becomes an entry in ``ParsedCalls.errors`` (and the call is left out), so callers can turn it into an error
observation and a format failure.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from posttrain.errors import UserError

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class ParsedCalls:
    """Calls found in one message, parse errors (one string per bad block), and the text outside the blocks.
    ``invalid``: the raw text of calls that did not parse, where a format keeps it (:mod:`posttrain.tool_formats`)."""

    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    content: str = ""
    invalid: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; they are not JSON and no schema expects them.
    raise ValueError(f"{name} is not valid JSON")


def _parse_block(body: str, index: int) -> ToolCall | str:
    """One block's body -> a ToolCall, or an error string naming the block (1-based)."""
    where = f"tool call {index}"
    try:
        obj = json.loads(body, parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError is a ValueError
        return f"{where}: malformed JSON ({e})"
    except RecursionError:  # nesting deeper than the decoder's stack: untrusted text must not crash the caller
        return f"{where}: malformed JSON (nested too deeply)"
    if not isinstance(obj, dict):
        return f"{where}: expected a JSON object with 'name' and 'arguments', got {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"{where}: 'name' must be a non-empty string"
    extra = sorted(set(obj) - {"name", "arguments"})
    if extra:
        return f"{where}: unexpected keys {extra} (expected only 'name' and 'arguments')"
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some chat templates serialise arguments as a JSON string
        try:
            args = json.loads(args, parse_constant=_reject_constant) if args.strip() else {}
        except (ValueError, RecursionError) as e:
            return f"{where} ({name}): 'arguments' is a string that is not valid JSON ({e})"
    if not isinstance(args, dict):
        return f"{where} ({name}): 'arguments' must be a JSON object, got {type(args).__name__}"
    try:  # JSON escapes can smuggle in lone surrogates, which break every UTF-8 writer downstream
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        json.dumps(args, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return f"{where} ({name}): contains invalid unicode (a lone surrogate escape)"
    return ToolCall(name=name.strip(), arguments=args)


def parse_tool_calls(text: str | None) -> ParsedCalls:
    """Find every ``<tool_call>`` block in ``text``. Never raises."""
    text = text or ""
    result = ParsedCalls()
    outside: list[str] = []
    pos = 0
    index = 0
    # The next closing tag, found once and reused by every block that opens before it: searching again from each
    # unclosed block made parsing quadratic (1 MB of unclosed tags took 11 s). -1: there is none after this point.
    close = -2
    while True:
        start = text.find(OPEN_TAG, pos)
        if start < 0:
            tail = text[pos:]
            if CLOSE_TAG in tail:
                result.errors.append(f"stray {CLOSE_TAG} without a matching {OPEN_TAG}")
                tail = tail.replace(CLOSE_TAG, "")
            outside.append(tail)
            break
        before = text[pos:start]
        if CLOSE_TAG in before:
            result.errors.append(f"stray {CLOSE_TAG} without a matching {OPEN_TAG}")
            before = before.replace(CLOSE_TAG, "")
        outside.append(before)
        index += 1
        body_start = start + len(OPEN_TAG)
        if close != -1 and close < body_start:
            close = text.find(CLOSE_TAG, body_start)
        end = close
        next_open = text.find(OPEN_TAG, body_start)
        if end < 0 or (0 <= next_open < end):
            # Unclosed: the block runs to the next opening tag (or the end); its text is not content.
            result.errors.append(f"tool call {index}: unclosed {OPEN_TAG} block")
            pos = next_open if next_open >= 0 else len(text)
            continue
        parsed = _parse_block(text[body_start:end].strip(), index)
        if isinstance(parsed, ToolCall):
            result.calls.append(parsed)
        else:
            result.errors.append(parsed)
        pos = end + len(CLOSE_TAG)
    result.content = "".join(outside).strip()
    return result


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """One call as Hermes text (the inverse of :func:`parse_tool_calls`)."""
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{OPEN_TAG}\n{payload}\n{CLOSE_TAG}"


def format_assistant_message(content: str, calls: list[ToolCall] | list[dict[str, Any]]) -> str:
    """Assistant text: optional prose followed by its calls, one block per call."""
    pairs = [(c.name, c.arguments) if isinstance(c, ToolCall) else (c["name"], c["arguments"]) for c in calls]
    blocks = [format_tool_call(name, args) for name, args in pairs]
    return "\n".join([p for p in [content.strip(), *blocks] if p])


def _function_part(tool_schema: dict[str, Any]) -> dict[str, Any]:
    """Accept an OpenAI tool (``{"type": "function", "function": {...}}``) or its bare function dict."""
    fn = tool_schema.get("function", tool_schema) if isinstance(tool_schema, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise UserError(f"tool schema {str(tool_schema)[:200]}: expected OpenAI function format "
                        "{'type': 'function', 'function': {'name', 'description', 'parameters'}}")
    return fn


def tool_name(tool_schema: dict[str, Any]) -> str:
    return _function_part(tool_schema)["name"]


@functools.lru_cache(maxsize=1024)
def _validator(name: str, params_json: str) -> jsonschema.protocols.Validator:
    # Checking a schema costs milliseconds; a rollout validates the same few schemas thousands of times.
    params = json.loads(params_json)
    cls = jsonschema.validators.validator_for(params)
    try:
        cls.check_schema(params)
    except jsonschema.SchemaError as e:
        raise UserError(f"tool {name!r}: 'parameters' is not a valid JSON schema: {e.message}") from None
    return cls(params)


def _parameters_validator(tool_schema: dict[str, Any]) -> tuple[str, jsonschema.protocols.Validator]:
    fn = _function_part(tool_schema)
    params = fn.get("parameters", {"type": "object", "properties": {}})
    return fn["name"], _validator(fn["name"], json.dumps(params, sort_keys=True))


def check_tool_schema(tool_schema: dict[str, Any]) -> None:
    """Raise UserError if a tool schema (which users write) is not a usable OpenAI function schema."""
    _parameters_validator(tool_schema)


def validate_arguments(tool_schema: dict[str, Any], arguments: Any) -> list[str]:
    """Problems with ``arguments`` for this tool, one readable line each (empty list: valid)."""
    name, validator = _parameters_validator(tool_schema)
    problems = []
    for err in sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        where = "/".join(str(p) for p in err.absolute_path)
        problems.append(f"{name}: {where + ': ' if where else ''}{err.message}")
    return problems
