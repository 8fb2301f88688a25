"""Recipe formats (kind ``task``) that turn static tool-call data into ``tool_call_match`` tasks.

* ``xlam``: ``tools`` (OpenAI schemas or xLAM's ``{name: {type, description, default?}}`` parameters), ``query``,
  ``answers`` (the calls; JSON strings are decoded). An argument the tool does not require whose answer equals the
  schema's ``default`` may also be left out.
* ``openai_tool_calls``: ``tools`` and OpenAI ``messages`` whose last assistant message holds ``tool_calls`` (the ground
  truth; the messages before it are the prompt). A last assistant message without calls makes a task whose answer
  is to call nothing.
* ``bfcl``: BFCL single-turn rows with their possible answers merged in: ``question``, ``function`` (BFCL's
  function docs: ``dict``/``float``/``tuple`` types), ``ground_truth`` (``[{func: {arg: [possible values]}}]``).

Every row may set ``order`` (``any``, the default: parallel calls match as a set; ``given``: in order). A row that does
not fit raises :class:`MalformedRow` with the reason; the build counts it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from envs.tool_call_match import ORDERS, check_task
from envs.tool_call_match.checker import OPTIONAL
from envs.tool_call_match.samples import SYSTEM
from posttrain.data.formats import chat_messages, json_value, normalize_tool, record_call, record_tools
from posttrain.data.sources import MalformedRow
from posttrain.errors import UserError
from posttrain.tool_calls import validate_arguments

BFCL_TYPES = {"dict": "object", "float": "number", "double": "number", "int": "integer", "tuple": "array",
              "list": "array", "str": "string", "bool": "boolean"}


def _task(source: str, record: dict[str, Any], messages: list[dict[str, str]], tools: list[dict[str, Any]],
          truth: list[dict[str, Any]]) -> dict[str, Any]:
    order = record.get("order", "any")
    if order not in ORDERS:
        raise MalformedRow(f"order: expected one of {', '.join(ORDERS)}, got {order!r}")
    given = record.get("id")
    digest = hashlib.sha1(json.dumps([messages, truth], sort_keys=True, default=str).encode()).hexdigest()[:12]
    task = {"id": f"{source}-{given}" if isinstance(given, str | int) and str(given).strip() else f"{source}-{digest}",
            "env": "tool_call_match", "source": source, "messages": messages, "tools": tools, "ground_truth": truth,
            "order": order}
    try:
        check_task(task)
    except UserError as e:
        raise MalformedRow(e.message.split(": ", 1)[-1]) from None
    return task


def _possible(call: dict[str, Any], tools: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    """One concrete call as ground truth: each argument's one value (or leaving it out, when that means its
    default)."""
    tool = tools.get(call["name"])
    if tool is None:
        raise MalformedRow(f"{what} calls unknown tool {call['name']!r}; tools: {', '.join(tools)}")
    problems = validate_arguments(tool, call["arguments"])
    if problems:
        raise MalformedRow(f"{what} arguments do not fit the tool's schema: {problems[0]}")
    params = tool["function"]["parameters"]
    required = set(params.get("required") or [])
    props = params.get("properties") or {}
    arguments = {}
    for name, value in call["arguments"].items():
        default = props.get(name, {}).get("default", object())
        arguments[name] = [value, OPTIONAL] if name not in required and value == default else [value]
    return {"name": call["name"], "arguments": arguments}


def from_xlam(record: dict[str, Any]) -> dict[str, Any]:
    tools = record_tools(record, required=True)
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise MalformedRow("query: expected the user's request as a non-empty string")
    answers = json_value(record.get("answers"), "answers")
    if not isinstance(answers, list):
        raise MalformedRow("answers: expected a list of calls ([] when no tool should be called)")
    by_name = {t["function"]["name"]: t for t in tools}
    truth = [_possible(record_call(a, f"answers[{i}]"), by_name, f"answers[{i}]") for i, a in enumerate(answers)]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": query}]
    return _task("xlam", record, messages, tools, truth)


def from_openai_tool_calls(record: dict[str, Any]) -> dict[str, Any]:
    tools = record_tools(record, required=True)
    raw = json_value(record.get("messages"), "messages")
    if not isinstance(raw, list) or not raw:
        raise MalformedRow("messages: expected a non-empty list of OpenAI chat messages")
    last = max((i for i, m in enumerate(raw) if isinstance(m, dict) and m.get("role") == "assistant"), default=None)
    if last is None:
        raise MalformedRow("messages: no assistant message (its tool_calls are the ground truth)")
    calls = json_value(raw[last].get("tool_calls"), f"messages[{last}].tool_calls") or []
    if not isinstance(calls, list):
        calls = [calls]
    by_name = {t["function"]["name"]: t for t in tools}
    truth = [_possible(record_call(c, f"messages[{last}].tool_calls[{j}]"), by_name,
                       f"messages[{last}].tool_calls[{j}]") for j, c in enumerate(calls)]
    prompt, _ = chat_messages(raw[:last], need_assistant=False) if last else ([], [])
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise MalformedRow(f"messages[:{last}]: the prompt must end with a user (or tool) message")
    if prompt[0]["role"] != "system":
        prompt.insert(0, {"role": "system", "content": SYSTEM})
    return _task("openai", record, prompt, tools, truth)


def _bfcl_schema(schema: Any, what: str) -> Any:
    """BFCL's Python-flavoured types as JSON schema types, recursively."""
    if isinstance(schema, list):
        return [_bfcl_schema(s, what) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            if value == "any":
                continue
            out[key] = BFCL_TYPES.get(value, value)
        elif key in ("properties",) and isinstance(value, dict):
            out[key] = {k: _bfcl_schema(v, what) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _bfcl_schema(value, what)
        else:
            out[key] = value
    return out


def from_bfcl(record: dict[str, Any]) -> dict[str, Any]:
    functions = json_value(record.get("function"), "function")
    if isinstance(functions, dict):
        functions = [functions]
    if not isinstance(functions, list) or not functions:
        raise MalformedRow("function: expected the list of BFCL function docs")
    tools = [normalize_tool({**f, "parameters": _bfcl_schema(f.get("parameters"), "function")}
                            if isinstance(f, dict) else f, f"function[{i}]") for i, f in enumerate(functions)]
    question = record.get("question")
    if isinstance(question, str) and question.strip().startswith("["):  # a JSON export of the message lists
        question = json_value(question, "question")
    if isinstance(question, str):
        question = [{"role": "user", "content": question}]
    if isinstance(question, list) and question and isinstance(question[0], list):
        if len(question) != 1:
            raise MalformedRow(f"question: {len(question)} turns; only single-turn BFCL rows are static tool calls")
        question = question[0]
    prompt, _ = chat_messages(question, need_assistant=False)
    if prompt[-1]["role"] != "user":
        raise MalformedRow("question: must end with a user message")
    if prompt[0]["role"] != "system":
        prompt.insert(0, {"role": "system", "content": SYSTEM})
    answers = json_value(record.get("ground_truth"), "ground_truth")
    if not isinstance(answers, list):
        raise MalformedRow("ground_truth: expected BFCL's possible answers, [{function_name: {arg: [values]}}]")
    truth = []
    for i, answer in enumerate(answers):
        if not isinstance(answer, dict) or len(answer) != 1:
            raise MalformedRow(f"ground_truth[{i}]: expected {{function_name: {{arg: [possible values]}}}}")
        (name, arguments), = answer.items()
        if not isinstance(arguments, dict) or not all(isinstance(v, list) for v in arguments.values()):
            raise MalformedRow(f"ground_truth[{i}] ({name}): every argument needs a list of possible values")
        truth.append({"name": name, "arguments": arguments})
    return _task("bfcl", record, prompt, tools, truth)
