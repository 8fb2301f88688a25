"""Format adapters: every supported record shape -> the contract's row shape; bad records -> MalformedRow."""

from __future__ import annotations

import json

import pytest

from posttrain.data.formats import adapt
from posttrain.data.sources import MalformedRow
from posttrain.tool_calls import ToolCall, parse_tool_calls

WEATHER = {"type": "function", "function": {"name": "get_temp", "description": "Temperature of a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}}


def _bad(fmt: str, record: dict, reason: str) -> None:
    with pytest.raises(MalformedRow) as e:
        adapt(fmt, record)
    assert reason in e.value.reason, e.value.reason


def test_messages():
    row = adapt("messages", {"messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                                          {"role": "assistant", "content": "Hello."}], "extra": 1})
    assert row == {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello."}], "tools": ""}


def test_messages_malformed():
    _bad("messages", {"text": "x"}, "missing key 'messages'")
    _bad("messages", {"messages": []}, "non-empty list")
    _bad("messages", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0]: role 'robot'")
    _bad("messages", {"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message")
    _bad("messages", {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]},
         "messages[0]: empty user message")
    _bad("messages", {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
         "messages[0].content: expected a string, got int")
    _bad("messages", {"messages": [{"role": "user", "content": [{"type": "image_url"}]},
                                   {"role": "assistant", "content": "a"}]}, "non-text content parts")


def test_openai_tool_calls_in_messages_become_hermes_text():
    row = adapt("messages", {"tools": json.dumps([WEATHER]), "messages": [
        {"role": "user", "content": "How warm is Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_temp", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": {"celsius": 4}},
        {"role": "assistant", "content": "It is 4 °C in Oslo."}]})
    call = row["messages"][1]["content"]
    assert call == '<tool_call>\n{"name": "get_temp", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert parse_tool_calls(call).calls == [ToolCall("get_temp", {"city": "Oslo"})]
    assert row["messages"][2] == {"role": "tool", "content": '{"celsius": 4}'}
    assert json.loads(row["tools"]) == [WEATHER]


def test_prompt_completion():
    row = adapt("prompt_completion", {"prompt": "2+2?", "completion": "4", "system": "Math tutor."})
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    row = adapt("prompt_completion", {"prompt": [{"role": "user", "content": "Hi"}],
                                      "completion": [{"role": "assistant", "content": "Hey"}]})
    assert row["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]
    _bad("prompt_completion", {"prompt": "x"}, "missing key 'completion'")


def test_alpaca():
    row = adapt("alpaca", {"instruction": "Translate to French.", "input": "cat", "output": "chat"})
    assert row["messages"] == [{"role": "user", "content": "Translate to French.\n\ncat"},
                               {"role": "assistant", "content": "chat"}]
    row = adapt("alpaca", {"instruction": "Say hi.", "input": "", "output": "Hi!"})
    assert row["messages"][0]["content"] == "Say hi."
    _bad("alpaca", {"instruction": "x", "output": ""}, "empty assistant message")


def test_sharegpt():
    row = adapt("sharegpt", {"system": "Be nice.", "conversations": [
        {"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"}]})
    assert row["messages"] == [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello"},
                               {"role": "assistant", "content": "Hi!"}]
    row = adapt("sharegpt", {"tools": [WEATHER["function"]], "conversations": [
        {"from": "human", "value": "Oslo temp?"},
        {"from": "function_call", "value": '{"name": "get_temp", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": '{"celsius": 4}'}, {"from": "gpt", "value": "4 °C."}]})
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert "<tool_call>" in row["messages"][1]["content"]
    assert json.loads(row["tools"]) == [WEATHER]  # bare function dicts are normalized to OpenAI format
    _bad("sharegpt", {"conversations": [{"from": "alien", "value": "x"}]}, "unknown speaker 'alien'")
    _bad("sharegpt", {"conversations": [{"value": "x"}]}, "conversations[0]: expected an object with 'from'")


def test_tool_calls_messages_style_multi_turn():
    record = {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "Oslo and Rome?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": [
            {"name": "get_temp", "arguments": {"city": "Oslo"}}, {"name": "get_temp", "arguments": {"city": "Rome"}}]},
        {"role": "tool", "name": "get_temp", "content": "4"}, {"role": "tool", "name": "get_temp", "content": "19"},
        {"role": "assistant", "content": "Oslo 4 °C, Rome 19 °C."}]}
    row = adapt("tool_calls", record)
    parsed = parse_tool_calls(row["messages"][1]["content"])
    assert parsed.content == "Checking both." and [c.arguments["city"] for c in parsed.calls] == ["Oslo", "Rome"]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]


def test_tool_calls_xlam_record():
    record = {"query": "Temperature in Lima in kelvin?", "tools": json.dumps([{
        "name": "get_temp", "description": "Temperature of a city.",
        "parameters": {"city": {"type": "str", "description": "City"},
                       "unit": {"type": "str, optional", "description": "Unit", "default": "celsius"}}}]),
        "answers": json.dumps([{"name": "get_temp", "arguments": {"city": "Lima", "unit": "kelvin"}}])}
    row = adapt("tool_calls", record)
    tool = json.loads(row["tools"])[0]["function"]
    assert tool["parameters"]["required"] == ["city"] and tool["parameters"]["properties"]["unit"]["type"] == "string"
    assert parse_tool_calls(row["messages"][1]["content"]).calls == [
        ToolCall("get_temp", {"city": "Lima", "unit": "kelvin"})]


def test_tool_calls_malformed():
    call = {"role": "assistant", "content": "", "tool_calls": [{"name": "get_temp", "arguments": {"city": "Oslo"}}]}
    user = {"role": "user", "content": "q"}
    _bad("tool_calls", {"messages": [user, call]}, "missing or empty 'tools'")
    _bad("tool_calls", {"tools": [WEATHER], "messages": [user, {"role": "assistant", "content": "no call"}]},
         "no structured tool calls")
    _bad("tool_calls", {"tools": [WEATHER], "messages": [user, {**call, "tool_calls": [{"name": "get_time"}]}]},
         "calls unknown tool 'get_time'")
    _bad("tool_calls", {"tools": [WEATHER], "messages": [user, {**call, "tool_calls": [
        {"name": "get_temp", "arguments": {"town": "Oslo"}}]}]}, "do not fit the schema")
    _bad("tool_calls", {"tools": [WEATHER], "messages": [user, {**call, "tool_calls": [
        {"name": "get_temp", "arguments": "{not json"}]}]}, "not valid JSON")
    _bad("tool_calls", {"tools": [WEATHER], "prompt": "x"}, "expected 'messages', 'conversations'")
    _bad("tool_calls", {"tools": [WEATHER, WEATHER], "messages": [user, call]}, "duplicate tool names")
    _bad("tool_calls", {"tools": [{"description": "nameless"}], "messages": [user, call]}, "tool has no 'name'")
    _bad("tool_calls", {"tools": [WEATHER], "messages": [{**user, "tool_calls": call["tool_calls"]}, call]},
         "only assistant messages can have tool_calls")


def test_text_and_rename():
    assert adapt("text", {"text": "Some prose."}) == {"text": "Some prose."}
    assert adapt("text", {"content": "Body."}, rename={"content": "text"}) == {"text": "Body."}
    _bad("text", {"text": "   "}, "empty text")
    _bad("text", {"body": "x"}, "missing key 'text'")


def test_task_keeps_the_whole_record():
    record = {"id": "math-1", "env": "math", "messages": [{"role": "user", "content": "What is 2+3?"}],
              "tools": [], "answer": "5"}
    row = adapt("task", record)
    assert row["env"] == "math" and row["messages"] == record["messages"] and json.loads(row["tools"]) == []
    assert json.loads(row["task"]) == record
    _bad("task", {"messages": record["messages"]}, "missing key 'env'")
    _bad("task", {"env": "", "messages": record["messages"]}, "env: expected a non-empty environment name")
