"""The live domains of one task and the one way to run a model's tool call against them.

Both the episode (``ToolCallingEnv.step``) and verification (replaying a trajectory on a fresh world) call
:meth:`World.run`, so an episode and its replay behave identically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs.tool_calling.domain import Domain, ToolError
from envs.tool_calling.registry import BUILTIN_DOMAINS, task_domains
from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, tool_name, validate_arguments

DOMAINS: dict[str, type[Domain]] = BUILTIN_DOMAINS


@dataclass
class CallOutcome:
    """``status``: ok, tool_error (the tool refused), unknown_tool, invalid_arguments, internal_error (a bug)."""

    status: str
    observation: dict[str, Any]  # the ``tool`` message the model sees


def tool_observation(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    # Only role and content, like every chat message in a dataset; the tool's name is inside the JSON.
    return {"role": "tool", "content": json.dumps({"name": name, **payload}, ensure_ascii=False)}


def result_observation(name: str, result: Any) -> CallOutcome:
    """A tool's return value as the model sees it; a value that is not JSON data (a set, an object, NaN, a cycle) is
    an ``internal_error`` outcome (a bug in the domain), not an exception in the episode or its verification."""
    try:
        return CallOutcome("ok", {"role": "tool", "content": json.dumps({"name": name, "result": result},
                                                                        ensure_ascii=False, allow_nan=False)})
    except (TypeError, ValueError, RecursionError) as e:
        return CallOutcome("internal_error", tool_observation(
            name, {"error": f"internal error: the tool returned a value that is not JSON data ({type(e).__name__}: "
                            f"{str(e)[:200]})"}))


class World:
    """Fresh domain instances built from a task's initial states, and the allow-list of the task's tools.

    ``domains``: the classes available by name (default: the built-in ones); the task's own ``domain_modules`` are
    added to them (see :mod:`envs.tool_calling.registry`).
    """

    def __init__(self, task: dict[str, Any], domains: Mapping[str, type[Domain]] | None = None) -> None:
        where = f"tool_calling task {task.get('id', '?')}"
        classes = task_domains(task, DOMAINS if domains is None else domains)
        states = task["domains"]
        self.domains = {}
        for name, state in states.items():
            try:
                self.domains[name] = classes[name](state)
            except UserError:
                raise
            except Exception as e:  # a user's domain that cannot take this state: the task's problem, said so
                raise UserError(f"{where}: domain {name!r} could not be built from its state: {type(e).__name__}: "
                                f"{e}") from None
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
        return result_observation(call.name, result)

    def snapshot(self) -> dict[str, Any]:
        return {name: domain.snapshot() for name, domain in sorted(self.domains.items())}

    def tool_schemas(self) -> list[dict[str, Any]]:
        """Every tool the domains offer (whether or not the task offers it)."""
        return list(self.schemas.values())
