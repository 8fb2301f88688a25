"""Hermes tool-call parsing, formatting and argument validation."""

from __future__ import annotations

import pytest

from posttrain.errors import UserError
from posttrain.tool_calls import (
    ToolCall,
    check_tool_schema,
    format_assistant_message,
    format_tool_call,
    parse_tool_calls,
    tool_name,
    validate_arguments,
)

TRANSFER = {
    "type": "function",
    "function": {
        "name": "transfer",
        "description": "Move money between accounts.",
        "parameters": {
            "type": "object",
            "properties": {
                "source": {"type": "string"},
                "target": {"type": "string"},
                "amount": {"type": "number", "exclusiveMinimum": 0},
            },
            "required": ["source", "target", "amount"],
            "additionalProperties": False,
        },
    },
}


def test_single_call_with_surrounding_text():
    text = 'Let me check.\n<tool_call>\n{"name": "get_balance", "arguments": {"account": "checking"}}\n</tool_call>'
    parsed = parse_tool_calls(text)
    assert parsed.ok
    assert parsed.calls == [ToolCall("get_balance", {"account": "checking"})]
    assert parsed.content == "Let me check."


def test_several_calls_and_whitespace_variants():
    text = ('<tool_call>{"name":"a","arguments":{}}</tool_call>   text between '
            '<tool_call>\n\n  {"name": "b", "arguments": {"x": [1, 2]}}  \n\t</tool_call>\n'
            '<tool_call>{"name": "c"}</tool_call>')
    parsed = parse_tool_calls(text)
    assert parsed.errors == []
    assert [c.name for c in parsed.calls] == ["a", "b", "c"]
    assert parsed.calls[1].arguments == {"x": [1, 2]}
    assert parsed.calls[2].arguments == {}  # no arguments key: a call without arguments
    assert parsed.content == "text between"


def test_arguments_given_as_json_string():
    parsed = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"n\\": 3}"}</tool_call>')
    assert parsed.ok and parsed.calls == [ToolCall("f", {"n": 3})]


def test_no_calls_is_plain_content():
    parsed = parse_tool_calls("The answer is 42.")
    assert parsed.calls == [] and parsed.errors == [] and parsed.content == "The answer is 42."
    assert parse_tool_calls(None).content == ""


@pytest.mark.parametrize("body, fragment", [
    ('{"name": "f", "arguments": {"a": 1}', "malformed JSON"),
    ("not json at all", "malformed JSON"),
    ('["f", {}]', "expected a JSON object"),
    ('{"arguments": {}}', "'name' must be a non-empty string"),
    ('{"name": 3, "arguments": {}}', "'name' must be a non-empty string"),
    ('{"name": "f", "arguments": [1]}', "'arguments' must be a JSON object"),
    ('{"name": "f", "arguments": "{broken"}', "not valid JSON"),
    ('{"name": "f", "arguments": "[1, 2]"}', "'arguments' must be a JSON object"),
    ('{"name": "f", "arguments": {"x": NaN}}', "malformed JSON"),
    ('{"name": "f", "arguments": {}, "id": 7}', "unexpected keys"),
])
def test_bad_blocks_are_errors_not_exceptions(body, fragment):
    parsed = parse_tool_calls(f"before <tool_call>{body}</tool_call> after")
    assert parsed.calls == []
    assert len(parsed.errors) == 1 and fragment in parsed.errors[0], parsed.errors
    assert parsed.content == "before  after"


def test_bad_block_does_not_hide_good_ones():
    text = '<tool_call>{oops}</tool_call><tool_call>{"name": "ok", "arguments": {}}</tool_call>'
    parsed = parse_tool_calls(text)
    assert [c.name for c in parsed.calls] == ["ok"]
    assert parsed.errors[0].startswith("tool call 1: malformed JSON")


def test_unclosed_blocks():
    parsed = parse_tool_calls('Sure. <tool_call>{"name": "f", "arguments": {}}')
    assert parsed.calls == [] and "unclosed" in parsed.errors[0] and parsed.content == "Sure."
    # An opening tag inside an open block: the first block is unclosed, the second still parses.
    parsed = parse_tool_calls('<tool_call>{"name": "a"<tool_call>{"name": "b", "arguments": {}}</tool_call>')
    assert [c.name for c in parsed.calls] == ["b"]
    assert parsed.errors == ["tool call 1: unclosed <tool_call> block"]


def test_stray_closing_tag_is_reported():
    parsed = parse_tool_calls('done </tool_call> <tool_call>{"name": "a", "arguments": {}}</tool_call> </tool_call>')
    assert [c.name for c in parsed.calls] == ["a"]
    assert len(parsed.errors) == 2 and all("stray" in e for e in parsed.errors)
    assert "</tool_call>" not in parsed.content


def test_format_round_trip():
    args = {"path": "/notes/é.txt", "lines": [1, 2], "opts": {"force": True}}
    text = format_tool_call("write", args)
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
    assert parse_tool_calls(text).calls == [ToolCall("write", args)]
    message = format_assistant_message("Doing both.", [ToolCall("a", {}), {"name": "b", "arguments": {"k": 1}}])
    parsed = parse_tool_calls(message)
    assert parsed.content == "Doing both." and [c.to_dict() for c in parsed.calls] == [
        {"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 1}}]


def test_validate_arguments():
    assert validate_arguments(TRANSFER, {"source": "a", "target": "b", "amount": 5}) == []
    assert validate_arguments(TRANSFER["function"], {"source": "a", "target": "b", "amount": 5.5}) == []
    problems = validate_arguments(TRANSFER, {"source": 1, "amount": "5"})
    assert any("'target' is a required property" in p for p in problems)
    assert any(p.startswith("transfer: source: 1 is not of type 'string'") for p in problems)
    assert any(p.startswith("transfer: amount: '5' is not of type 'number'") for p in problems)
    assert validate_arguments(TRANSFER, {"source": "a", "target": "b", "amount": 0})  # exclusiveMinimum
    assert validate_arguments(TRANSFER, {"source": "a", "target": "b", "amount": 1, "memo": "x"})  # no extras


def test_bad_tool_schemas_are_user_errors():
    assert tool_name(TRANSFER) == "transfer"
    check_tool_schema(TRANSFER)
    with pytest.raises(UserError, match="OpenAI function format"):
        tool_name({"type": "function"})
    with pytest.raises(UserError, match="not a valid JSON schema"):
        validate_arguments({"name": "f", "parameters": {"type": "objekt"}}, {})


def test_lone_surrogate_escapes_are_rejected():
    parsed = parse_tool_calls('<tool_call>{"name": "w", "arguments": {"text": "a\\ud800b"}}</tool_call>')
    assert parsed.calls == [] and "invalid unicode" in parsed.errors[0]
    ok = parse_tool_calls('<tool_call>{"name": "w", "arguments": {"text": "\\u00e9\\ud83d\\ude00"}}</tool_call>')
    assert ok.calls[0].arguments == {"text": "é😀"}  # a proper surrogate pair is fine


class _CountingText(str):
    """A str that counts how many characters its ``find`` calls scan (the parser's inner loop)."""

    scanned = 0

    def find(self, sub: str, start: int = 0, *args: int) -> int:  # type: ignore[override]
        found = super().find(sub, start, *args)
        _CountingText.scanned += (found if found >= 0 else len(self)) - start + len(sub)
        return found


@pytest.mark.parametrize("unit", ["<tool_call>", "<tool_call>{\"name\": \"f\"}", "x</tool_call><tool_call>",
                                  "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> and "])
def test_parsing_is_linear_in_the_text_even_with_unclosed_blocks(unit):
    # Every character is scanned a bounded number of times. Searching for the closing tag again from every unclosed
    # block scanned ~n^2/2 characters: 1 MB of unclosed tags took 11 s.
    text = _CountingText(unit * (1_000_000 // len(unit)))
    _CountingText.scanned = 0
    parsed = parse_tool_calls(text)
    assert _CountingText.scanned <= 4 * len(text), _CountingText.scanned / len(text)
    assert parsed.errors or len(parsed.calls) == len(text) // len(unit)  # every block is still reported
