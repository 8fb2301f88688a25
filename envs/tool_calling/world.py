"""The live domains of one task and the one way to run a model's tool call against them.

Both the episode (``ToolCallingEnv.step``) and verification (replaying a trajectory on a fresh world) call
:meth:`World.run`, so an episode and its replay behave identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from envs.tool_calling.banking import Bank
from envs.tool_calling.domain import Domain, ToolError
from envs.tool_calling.filesystem import FileSystem
from envs.tool_calling.messaging import Messaging
from envs.tool_calling.scheduling import Calendar
from envs.tool_calling.shop import Shop
from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, tool_name, validate_arguments

DOMAINS: dict[str, type[Domain]] = {cls.name: cls for cls in (FileSystem, Calendar, Bank, Messaging, Shop)}


@dataclass
class CallOutcome:
    """``status``: ok, tool_error (the tool refused), unknown_tool, invalid_arguments, internal_error (a bug)."""

    status: str
    observation: dict[str, Any]  # the ``tool`` message the model sees


def tool_observation(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    # Only role and content, like every chat message in a dataset; the tool's name is inside the JSON.
    return {"role": "tool", "content": json.dumps({"name": name, **payload}, ensure_ascii=False)}


class World:
    """Fresh domain instances built from a task's initial states, and the allow-list of the task's tools."""

    def __init__(self, task: dict[str, Any]) -> None:
        where = f"tool_calling task {task.get('id', '?')}"
        states = task.get("domains")
        if not isinstance(states, dict) or not states:
            raise UserError(f"{where}: 'domains' must map domain names ({', '.join(DOMAINS)}) to initial states")
        unknown = sorted(set(states) - set(DOMAINS))
        if unknown:
            raise UserError(f"{where}: unknown domains {unknown}; known: {', '.join(DOMAINS)}")
        self.domains = {name: DOMAINS[name](state) for name, state in states.items()}
        every: dict[str, Any] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        for domain in self.domains.values():
            every.update(domain.tool_table())
            self.schemas.update({tool_name(s): s for s in domain.tool_schemas()})
        offered = [tool_name(s) for s in task.get("tools") or []]
        missing = sorted(set(offered) - set(every))
        if missing:
            raise UserError(f"{where}: tools {missing} are not provided by its domains {sorted(states)}")
        self.tools = {name: every[name] for name in offered}  # only what the task offers is callable

    def run(self, call: ToolCall) -> CallOutcome:
        fn = self.tools.get(call.name)
        if fn is None:
            return CallOutcome("unknown_tool", tool_observation(
                call.name, {"error": f"unknown tool {call.name!r}; available: {', '.join(sorted(self.tools))}"}))
        problems = validate_arguments(self.schemas[call.name], call.arguments)
        if problems:
            return CallOutcome("invalid_arguments", tool_observation(
                call.name, {"error": "invalid arguments: " + "; ".join(problems)}))
        try:
            result = fn(**call.arguments)
        except ToolError as e:
            return CallOutcome("tool_error", tool_observation(call.name, {"error": str(e)}))
        except Exception as e:  # a bug in a simulated API must not crash a rollout; verification reports it
            return CallOutcome("internal_error", tool_observation(
                call.name, {"error": f"internal error: {type(e).__name__}: {e}"}))
        return CallOutcome("ok", tool_observation(call.name, {"result": result}))

    def snapshot(self) -> dict[str, Any]:
        return {name: domain.snapshot() for name, domain in sorted(self.domains.items())}
