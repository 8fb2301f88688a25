"""Format adapters: one source record -> one row of the recipe's kind (see docs/CONTRACTS.md, "Built datasets").

Chat rows are ``{"messages": [{"role", "content"}...], "tools": "<JSON list>" or ""}``. Structured assistant tool calls
are rendered as Hermes ``<tool_call>`` text and tool results become ``tool`` messages, so every chat row has the same
flat shape whatever the source looked like. An adapter raises :class:`MalformedRow` with a reason a person can act on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from posttrain.data.sources import MalformedRow
from posttrain.errors import UserError
from posttrain.jsonrows import NESTED, check_decoded
from posttrain.tool_calls import check_tool_schema, format_assistant_message, validate_arguments

Row = dict[str, Any]
ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"function": "tool", "ipython": "tool"}
# ShareGPT speaker names (LLaMA-Factory / FastChat conventions).
SHAREGPT_ROLES = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "tool": "tool", "observation": "tool",
    "function_response": "tool", "function_call": "function_call",
}


def _require(record: Row, key: str) -> Any:
    if key not in record or record[key] is None:
        raise MalformedRow(f"missing key {key!r} (keys present: {', '.join(sorted(map(str, record))) or 'none'})")
    return record[key]


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        # OpenAI content parts: only text parts can be represented in a text-only chat row.
        kinds = {p.get("type") for p in value}
        if kinds <= {"text"}:
            return "".join(str(p.get("text", "")) for p in value)
        raise MalformedRow(f"{what}: non-text content parts {sorted(map(str, kinds - {'text'}))}")
    raise MalformedRow(f"{what}: expected a string, got {type(value).__name__}")


def _json_value(value: Any, what: str) -> Any:
    """Tools, calls and arguments are often stored as JSON strings (xLAM, parquet exports): decode them."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        decoded = json.loads(value)
        check_decoded(value, decoded)  # "\ud800" inside the string would break every UTF-8 writer later
    except json.JSONDecodeError as e:
        raise MalformedRow(f"{what}: string is not valid JSON ({e.msg})") from None
    except RecursionError:
        raise MalformedRow(f"{what}: string is not valid JSON ({NESTED})") from None
    except ValueError as e:  # BadRow (a lone surrogate), or a number too long to read
        raise MalformedRow(f"{what}: string is not usable JSON ({e})") from None
    return decoded


# ---- tools and calls ---------------------------------------------------------------------------------------------

def normalize_tool(tool: Any, what: str) -> dict[str, Any]:
    """OpenAI function format from OpenAI format, a bare function dict, or an xLAM tool (parameters as name->spec)."""
    if not isinstance(tool, dict):
        raise MalformedRow(f"{what}: expected a tool object, got {type(tool).__name__}")
    fn = tool.get("function", tool)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise MalformedRow(f"{what}: tool has no 'name'")
    params = _json_value(fn.get("parameters"), f"{what} ({fn['name']}).parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise MalformedRow(f"{what} ({fn['name']}).parameters: expected an object")
    if "properties" not in params and params.get("type") != "object":
        params = _xlam_parameters(params)
    out = {"type": "function", "function": {"name": fn["name"], "description": str(fn.get("description", "")),
                                            "parameters": params}}
    try:
        check_tool_schema(out)
    except UserError as e:
        raise MalformedRow(f"{what}: {e.message}") from None
    return out


def _xlam_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """xLAM lists parameters as ``{name: {"type", "description", "default"?}}``; no default means required."""
    props, required = {}, []
    for name, spec in params.items():
        spec = dict(spec) if isinstance(spec, dict) else {"description": str(spec)}
        ptype = str(spec.get("type", "string")).split(",")[0].strip()  # "str, optional" -> "str"
        spec["type"] = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                        "list": "array", "dict": "object"}.get(ptype.split("[")[0].lower(), ptype)
        if spec["type"] not in ("string", "integer", "number", "boolean", "array", "object", "null"):
            spec.pop("type")
        if "default" not in spec:
            required.append(name)
        props[name] = spec
    return {"type": "object", "properties": props, "required": required}


def _tools(record: Row, required: bool) -> list[dict[str, Any]]:
    raw = _json_value(record.get("tools"), "tools")
    if raw is None or raw == []:
        if required:
            raise MalformedRow("missing or empty 'tools' (a tool-calling record needs the tool schemas)")
        return []
    if not isinstance(raw, list):
        raise MalformedRow(f"tools: expected a list of tool schemas, got {type(raw).__name__}")
    tools = [normalize_tool(t, f"tools[{i}]") for i, t in enumerate(raw)]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise MalformedRow(f"tools: duplicate tool names in {names}")
    return tools


def _call(call: Any, what: str) -> dict[str, Any]:
    call = _json_value(call, what)
    if not isinstance(call, dict):
        raise MalformedRow(f"{what}: expected a call object, got {type(call).__name__}")
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise MalformedRow(f"{what}: call has no 'name'")
    args = _json_value(fn.get("arguments", {}), f"{what} ({fn['name']}).arguments")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise MalformedRow(f"{what} ({fn['name']}).arguments: expected an object, got {type(args).__name__}")
    return {"name": fn["name"], "arguments": args}


def _check_calls(calls: list[list[dict[str, Any]]], tools: list[dict[str, Any]]) -> None:
    """Every structured call names a listed tool and has arguments that fit its schema."""
    by_name = {t["function"]["name"]: t for t in tools}
    for i, msg_calls in enumerate(calls):
        for call in msg_calls:
            tool = by_name.get(call["name"])
            if tool is None:
                raise MalformedRow(f"messages[{i}] calls unknown tool {call['name']!r}; tools: {', '.join(by_name)}")
            problems = validate_arguments(tool, call["arguments"])
            if problems:
                raise MalformedRow(f"messages[{i}] call arguments do not fit the schema: {problems[0]}")


# ---- messages ----------------------------------------------------------------------------------------------------

def _messages(raw: Any, need_assistant: bool) -> tuple[list[dict[str, str]], list[list[dict[str, Any]]]]:
    """Validate and flatten chat messages; returns the messages and the structured calls found per message."""
    raw = _json_value(raw, "messages")
    if not isinstance(raw, list) or not raw:
        raise MalformedRow("messages: expected a non-empty list of {role, content} objects")
    out: list[dict[str, str]] = []
    calls: list[list[dict[str, Any]]] = []
    for i, m in enumerate(raw):
        what = f"messages[{i}]"
        if not isinstance(m, dict):
            raise MalformedRow(f"{what}: expected an object, got {type(m).__name__}")
        role = ROLE_ALIASES.get(str(m.get("role")), m.get("role"))
        if role not in ROLES:
            raise MalformedRow(f"{what}: role {m.get('role')!r}; expected one of: {', '.join(ROLES)}")
        raw_calls = _json_value(m.get("tool_calls"), f"{what}.tool_calls") or []
        if raw_calls and role != "assistant":
            raise MalformedRow(f"{what}: only assistant messages can have tool_calls (role is {role!r})")
        if not isinstance(raw_calls, list):
            raw_calls = [raw_calls]
        msg_calls = [_call(c, f"{what}.tool_calls[{j}]") for j, c in enumerate(raw_calls)]
        content = m.get("content")
        if content is None and (msg_calls or role in ("system", "tool")):
            content = ""
        if role == "tool" and isinstance(content, dict | list):
            content = json.dumps(content, ensure_ascii=False)  # structured tool results travel as JSON text
        content = _text(content, f"{what}.content")
        if msg_calls:
            content = format_assistant_message(content, msg_calls)
        if role in ("user", "assistant") and not content.strip():
            raise MalformedRow(f"{what}: empty {role} message")
        out.append({"role": role, "content": content})
        calls.append(msg_calls)
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise MalformedRow("no assistant message (nothing to train on)")
    return out, calls


def _chat_row(messages: list[dict[str, str]], tools: list[dict[str, Any]]) -> Row:
    return {"messages": messages, "tools": json.dumps(tools, ensure_ascii=False) if tools else ""}


def adapt_messages(record: Row) -> Row:
    messages, _ = _messages(_require(record, "messages"), need_assistant=True)
    return _chat_row(messages, _tools(record, required=False))


def adapt_prompt_completion(record: Row) -> Row:
    """TRL's prompt/completion: each side a string or a list of messages; optional ``system`` string."""
    prompt, completion = _require(record, "prompt"), _require(record, "completion")
    raw: list[Any] = []
    if record.get("system"):
        raw.append({"role": "system", "content": record["system"]})
    raw += prompt if isinstance(prompt, list) else [{"role": "user", "content": _text(prompt, "prompt")}]
    raw += completion if isinstance(completion, list) else [
        {"role": "assistant", "content": _text(completion, "completion")}]
    messages, _ = _messages(raw, need_assistant=True)
    return _chat_row(messages, _tools(record, required=False))


def adapt_alpaca(record: Row) -> Row:
    """Alpaca: ``instruction``, optional ``input`` (appended after a blank line), ``output``; optional ``system``."""
    instruction = _text(_require(record, "instruction"), "instruction").strip()
    extra = _text(record.get("input") or "", "input").strip()
    output = _text(_require(record, "output"), "output")
    raw = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    raw += [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction},
            {"role": "assistant", "content": output}]
    messages, _ = _messages(raw, need_assistant=True)
    return _chat_row(messages, [])


def _sharegpt_messages(conversations: Any, system: Any) -> list[dict[str, Any]]:
    conversations = _json_value(conversations, "conversations")
    if not isinstance(conversations, list) or not conversations:
        raise MalformedRow("conversations: expected a non-empty list of {from, value} objects")
    raw: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise MalformedRow(f"conversations[{i}]: expected an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise MalformedRow(f"conversations[{i}]: unknown speaker {turn['from']!r}; expected one of: "
                               f"{', '.join(SHAREGPT_ROLES)}")
        if role == "function_call":  # a structured call made by the assistant (LLaMA-Factory style)
            call = _json_value(turn["value"], f"conversations[{i}].value")
            raw.append({"role": "assistant", "content": "", "tool_calls": call if isinstance(call, list) else [call]})
        else:
            raw.append({"role": role, "content": turn["value"]})
    return raw


def adapt_sharegpt(record: Row) -> Row:
    raw = _sharegpt_messages(_require(record, "conversations"), record.get("system"))
    tools = _tools(record, required=False)
    messages, calls = _messages(raw, need_assistant=True)
    if tools:
        _check_calls(calls, tools)
    return _chat_row(messages, tools)


def adapt_tool_calls(record: Row) -> Row:
    """Hermes/xLAM tool-calling records.

    * ``messages`` (OpenAI style: assistant ``tool_calls`` with name/arguments, ``tool`` messages with results), or
    * ``conversations`` (ShareGPT with ``function_call``/``observation`` turns), or
    * xLAM single turn: ``query`` and ``answers`` (the list of calls).

    ``tools`` is required; every call must name a listed tool with arguments that fit its JSON schema.
    """
    tools = _tools(record, required=True)
    if "messages" in record:
        raw = _json_value(record["messages"], "messages")
    elif "conversations" in record:
        raw = _sharegpt_messages(record["conversations"], record.get("system"))
    elif "query" in record and "answers" in record:
        answers = _json_value(record["answers"], "answers")
        if not isinstance(answers, list) or not answers:
            raise MalformedRow("answers: expected a non-empty list of calls")
        raw = [{"role": "user", "content": record["query"]},
               {"role": "assistant", "content": "", "tool_calls": answers}]
    else:
        raise MalformedRow("expected 'messages', 'conversations', or xLAM 'query' + 'answers'")
    messages, calls = _messages(raw, need_assistant=True)
    if not any(calls):
        raise MalformedRow("no structured tool calls in any assistant message")
    _check_calls(calls, tools)
    return _chat_row(messages, tools)


def adapt_text(record: Row) -> Row:
    text = _text(_require(record, "text"), "text")
    if not text.strip():
        raise MalformedRow("empty text")
    return {"text": text}


def adapt_task(record: Row) -> Row:
    """An env task record (``posttrain envs generate``): keep env, prompt messages, tools, and the whole record."""
    env = _require(record, "env")
    if not isinstance(env, str) or not env.strip():
        raise MalformedRow("env: expected a non-empty environment name")
    messages, _ = _messages(_require(record, "messages"), need_assistant=False)
    tools = _tools(record, required=False)
    return {"env": env, "messages": messages, "tools": json.dumps(tools, ensure_ascii=False),
            "task": json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)}


def _answer(value: Any, what: str) -> list[dict[str, str]]:
    """One side of a preference pair: a string (one assistant message) or messages that start with the assistant."""
    if isinstance(value, str):
        value = [{"role": "assistant", "content": value}]
    try:
        messages, _ = _messages(value, need_assistant=True)
    except MalformedRow as e:
        raise MalformedRow(f"{what}: {e.reason}") from None
    if messages[0]["role"] != "assistant":
        raise MalformedRow(f"{what}: must start with an assistant message, got role {messages[0]['role']!r}")
    return messages


def adapt_preference(record: Row) -> Row:
    """TRL's preference format: ``prompt`` + ``chosen`` + ``rejected`` (explicit prompt; each a string or messages;
    optional ``system``), or only ``chosen`` and ``rejected`` as whole conversations whose shared leading messages are
    the prompt (implicit prompt). The prompt must end with a user (or tool) message."""
    chosen_raw, rejected_raw = _require(record, "chosen"), _require(record, "rejected")
    if record.get("prompt") is not None:
        raw = record["prompt"]
        if isinstance(raw, str):
            raw = [{"role": "user", "content": _text(raw, "prompt")}]
        if record.get("system") and isinstance(raw, list):
            raw = [{"role": "system", "content": record["system"]}, *raw]
        try:
            prompt, _ = _messages(raw, need_assistant=False)
        except MalformedRow as e:
            raise MalformedRow(f"prompt: {e.reason}") from None
        chosen, rejected = _answer(chosen_raw, "chosen"), _answer(rejected_raw, "rejected")
    else:
        if isinstance(chosen_raw, str) or isinstance(rejected_raw, str):
            raise MalformedRow("no 'prompt': chosen and rejected must then be whole conversations (lists of messages)")
        whole_chosen, _ = _messages(chosen_raw, need_assistant=True)
        whole_rejected, _ = _messages(rejected_raw, need_assistant=True)
        shared = 0
        while (shared < min(len(whole_chosen), len(whole_rejected))
               and whole_chosen[shared] == whole_rejected[shared]):
            shared += 1
        prompt = whole_chosen[:shared]
        chosen = _answer(whole_chosen[shared:] or [{"role": "assistant", "content": ""}], "chosen")
        rejected = _answer(whole_rejected[shared:] or [{"role": "assistant", "content": ""}], "rejected")
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise MalformedRow("prompt: must end with a user (or tool) message that the answers reply to")
    if chosen == rejected:
        raise MalformedRow("chosen and rejected are identical (no preference to learn)")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


ADAPTERS: dict[str, Callable[[Row], Row]] = {
    "messages": adapt_messages,
    "prompt_completion": adapt_prompt_completion,
    "alpaca": adapt_alpaca,
    "sharegpt": adapt_sharegpt,
    "tool_calls": adapt_tool_calls,
    "text": adapt_text,
    "task": adapt_task,
    "preference": adapt_preference,
}


def adapt(fmt: str, record: Row, rename: dict[str, str] | None = None) -> Row:
    """Apply column renames, then the named adapter."""
    if rename:
        record = dict(record)
        for old, new in rename.items():
            if old in record:
                record[new] = record.pop(old)
    if fmt not in ADAPTERS:  # a task in a well-known shape (GSM8K, MBPP, xLAM, IFEval, ...): data/task_formats.py
        from posttrain.data.task_formats import adapt_shape

        return adapt_shape(fmt, record)
    return ADAPTERS[fmt](record)


# Public pieces for the task formats that live with their environments (envs/*/formats.py, data/task_formats.py).
json_value, record_tools, record_call, chat_messages = _json_value, _tools, _call, _messages
