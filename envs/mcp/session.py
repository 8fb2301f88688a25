"""A task's MCP servers, started together, and the one way a model's call runs through them (used by the episode and
by verification's replay alike).

The allow-list is the task's ``tools`` (by name) when it gives them, else every tool the servers list; a server's
``tool_prefix`` is put before its tool names (two servers offering one name without prefixes is a task error).
Arguments are checked against the tool's input schema before the call, as for the built-in tools; the server's own
refusal (``isError``) is a tool error the model sees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from envs.mcp.server import McpServer, ServerLimits, ServerSpec
from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, check_tool_schema, tool_name, validate_arguments

CALL = {"type": "object", "properties": {"name": {"type": "string", "minLength": 1},
                                         "arguments": {"type": "object"}},
        "required": ["name"], "additionalProperties": False}
TASK_SCHEMA = {
    "type": "object",
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role", "content"]}},
        "tools": {"type": "array", "items": {"type": "object"}},
        "mcp_servers": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object",
            "properties": {"command": {"type": "string", "minLength": 1},
                           "args": {"type": "array", "items": {"type": "string"}},
                           "env": {"type": "object", "additionalProperties": {"type": "string"}},
                           "cwd": {"type": ["string", "null"]}, "tool_prefix": {"type": "string"}},
            "required": ["command"], "additionalProperties": False}},
        "check": {"type": "object", "properties": {
            "probe": {"type": "array", "items": CALL}, "expected": {"type": "array"},
            "reference_calls": {"type": "array", "items": CALL}, "function": {"type": "string", "minLength": 1},
            "facts": {"type": "array", "items": {"type": "array", "minItems": 1,
                                                  "items": {"type": "string", "minLength": 1}}}},
            "additionalProperties": False, "minProperties": 1},
        "max_turns": {"type": "integer", "minimum": 1},
    },
    "required": ["messages", "mcp_servers", "check"],
}
_VALIDATOR = jsonschema.Draft202012Validator(TASK_SCHEMA)


def check_task(task: Any) -> None:
    """UserError naming the task and the place for a task that cannot be played or checked."""
    where = f"mcp task {task.get('id', '?') if isinstance(task, dict) else '?'}"
    for err in _VALIDATOR.iter_errors(task):
        at = "/".join(str(p) for p in err.absolute_path) or "(top)"
        raise UserError(f"{where}: {at}: {err.message}")
    check = task["check"]
    probes = check.get("probe")
    if ("expected" in check or "reference_calls" in check) and not probes:
        raise UserError(f"{where}: check: 'expected' and 'reference_calls' need 'probe' (the read-only calls whose "
                        "results they give)")
    if probes and "expected" not in check and "reference_calls" not in check and "function" not in check:
        raise UserError(f"{where}: check.probe: give 'expected' (the probes' results), 'reference_calls' (calls "
                        "that produce them) or a check 'function'")
    if "expected" in check and len(check["expected"]) != len(probes):
        raise UserError(f"{where}: check.expected: {len(check['expected'])} results for {len(probes)} probes")
    if "expected" in check and "reference_calls" in check:
        raise UserError(f"{where}: check: give 'expected' or 'reference_calls', not both")
    for i, schema in enumerate(task.get("tools") or []):
        try:
            check_tool_schema(schema)
        except UserError as e:
            raise UserError(f"{where}: tools/{i}: {e.message}") from None
    if task["messages"][-1].get("role") != "user":
        raise UserError(f"{where}: messages must end with the user's request")


def server_specs(task: dict[str, Any]) -> list[ServerSpec]:
    return [ServerSpec(name=name, command=s["command"], args=list(s.get("args") or []), env=dict(s.get("env") or {}),
                       cwd=s.get("cwd"), tool_prefix=s.get("tool_prefix", ""))
            for name, s in task["mcp_servers"].items()]


def observation(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A ``tool`` message in the project's format; a result that is not JSON data becomes its text."""
    try:
        content = json.dumps({"name": name, **payload}, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        content = json.dumps({"name": name, **{k: str(v) for k, v in payload.items()}}, ensure_ascii=False)
    return {"role": "tool", "content": content}


@dataclass
class Outcome:
    status: str  # ok, tool_error, unknown_tool, invalid_arguments
    observation: dict[str, Any]
    value: Any = None


@dataclass
class McpSession:
    """The task's servers for one episode (or one replay). Starting is in the background; the first use waits."""

    task: dict[str, Any]
    limits: ServerLimits
    servers: list[McpServer] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.servers = [McpServer(spec, self.limits) for spec in server_specs(self.task)]  # all start at once
        self._table: dict[str, tuple[McpServer, str, dict[str, Any]]] | None = None

    def _tools(self) -> dict[str, tuple[McpServer, str, dict[str, Any]]]:
        """Offered name -> (server, the server's own tool name, OpenAI schema)."""
        if self._table is not None:
            return self._table
        where = f"mcp task {self.task.get('id', '?')}"
        every: dict[str, tuple[McpServer, str, dict[str, Any]]] = {}
        for server in self.servers:
            server.wait_ready()
            for t in server.tools:
                name = server.spec.tool_prefix + t.name
                if name in every:
                    raise UserError(f"{where}: servers {every[name][0].spec.name!r} and {server.spec.name!r} both "
                                    f"offer a tool {name!r}; give one of them a tool_prefix")
                schema = {"type": "function", "function": {
                    "name": name, "description": t.description or "",
                    "parameters": t.input_schema or {"type": "object", "properties": {}}}}
                every[name] = (server, t.name, schema)
        wanted = [tool_name(s) for s in self.task.get("tools") or []]
        missing = sorted(set(wanted) - set(every))
        if missing:
            raise UserError(f"{where}: tools {missing} are not offered by its servers (they offer: "
                            f"{', '.join(sorted(every)) or 'nothing'})")
        self._table = {n: every[n] for n in wanted} if wanted else every
        return self._table

    def offered_schemas(self) -> list[dict[str, Any]]:
        return [schema for _, _, schema in self._tools().values()]

    def run(self, call: ToolCall) -> Outcome:
        outcome = self._run(call)
        self.statuses[outcome.status] = self.statuses.get(outcome.status, 0) + 1
        return outcome

    def _run(self, call: ToolCall) -> Outcome:
        tools = self._tools()
        entry = tools.get(call.name)
        if entry is None:
            return Outcome("unknown_tool", observation(
                call.name, {"error": f"unknown tool {call.name!r}; available: {', '.join(sorted(tools))}"}))
        server, own_name, schema = entry
        problems = validate_arguments(schema, call.arguments)
        if problems:
            return Outcome("invalid_arguments", observation(call.name, {"error": "invalid arguments: "
                                                                          + "; ".join(problems)}))
        result = server.call(own_name, call.arguments)  # McpError (a dead or hung server) goes to the caller
        if not result.ok:
            return Outcome("tool_error", observation(call.name, {"error": str(result.value)}))
        return Outcome("ok", observation(call.name, {"result": result.value}), result.value)

    def probe(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """A read-only call's result for checking. A refusal by the tool is part of the state (``{"error":
        message}``: e.g. no such note after the model failed to write it); a probe the servers cannot take (no such
        tool, arguments that break its schema) is the task's error."""
        outcome = self._run(ToolCall(name, arguments or {}))
        if outcome.status == "tool_error":
            return {"error": json.loads(outcome.observation["content"])["error"]}
        if outcome.status != "ok":
            raise UserError(f"mcp task {self.task.get('id', '?')}: check probe {name} is {outcome.status}: "
                            f"{outcome.observation['content'][:300]}")
        return outcome.value

    def close(self) -> None:
        for server in self.servers:
            server.close()
