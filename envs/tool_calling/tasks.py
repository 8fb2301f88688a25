"""Tool-calling task records: the seeded generator and the check of a task's shape.

A task (one JSON object; see docs/environments.md)::

    {"id", "env": "tool_calling", "messages": [system, first user turn], "tools": [OpenAI schemas],
     "domains": {"bank": <initial state>, ...},
     "turns": [{"user", "steps": [[{"name", "arguments"}, ...], ...], "reply", "facts": [[spelling, ...]],
                "possible": bool}, ...],
     "kind": "single_call"|"multi_call"|"multi_turn"|"impossible", "max_turns": int}
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jsonschema

from envs.tool_calling import banking, cross, filesystem, messaging, scheduling, shop
from envs.tool_calling.scenario import Scenario, opener
from envs.tool_calling.world import DOMAINS
from posttrain.errors import UserError
from posttrain.tool_calls import tool_name

SYSTEM_PROMPT = (
    "You act for the user through the tools you are given. To use a tool, write a <tool_call> block; its result "
    "comes back to you. When the request is done, answer the user in plain text and include the key results "
    "(amounts, ids, names, dates) exactly as the tools gave them. If the tools cannot do what the user asks, or a "
    "detail you need is missing, do not call any tool: say what is missing or impossible."
)
SCENARIO_GROUPS = [filesystem.SCENARIOS, scheduling.SCENARIOS, banking.SCENARIOS, messaging.SCENARIOS,
                   shop.SCENARIOS, cross.SCENARIOS]
MAX_DRAWS = 200

TURNS_SCHEMA = {
    "type": "array", "minItems": 1,
    "items": {
        "type": "object",
        "properties": {
            "user": {"type": "string", "minLength": 1},
            "steps": {"type": "array", "items": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}},
                "required": ["name", "arguments"], "additionalProperties": False}}},
            "reply": {"type": "string"},
            "facts": {"type": "array", "items": {"type": "array", "minItems": 1, "items": {"type": "string",
                                                                                       "minLength": 1}}},
            "possible": {"type": "boolean"},
        },
        "required": ["user", "steps", "reply", "facts", "possible"],
        "additionalProperties": False,
    },
}
TURNS_VALIDATOR = jsonschema.Draft202012Validator(TURNS_SCHEMA)


def task_turns(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's turns, checked (UserError naming the task and the place otherwise)."""
    turns = task.get("turns")
    for err in TURNS_VALIDATOR.iter_errors(turns):
        where = "/".join(str(p) for p in err.absolute_path)
        raise UserError(f"tool_calling task {task.get('id', '?')}: turns/{where}: {err.message}")
    for i, turn in enumerate(turns):
        if not turn["possible"] and turn["steps"]:
            raise UserError(f"tool_calling task {task.get('id', '?')}: turns/{i} is impossible but has steps")
    messages = task.get("messages")
    if not isinstance(messages, list) or not messages or messages[-1].get("content") != turns[0]["user"]:
        raise UserError(f"tool_calling task {task.get('id', '?')}: 'messages' must end with the first user turn")
    if not isinstance(task.get("max_turns", 1), int) or task.get("max_turns", 1) < 1:
        raise UserError(f"tool_calling task {task.get('id', '?')}: 'max_turns' must be a positive integer")
    return turns


def make_task(scenario: Scenario, domains: Mapping[str, Any] = DOMAINS, env: str = "tool_calling",
              domain_modules: Sequence[str] | None = None) -> dict[str, Any]:
    """The task record of a scenario. ``domains``: the classes by name (your own included); ``env``: the environment
    that plays it (a plugin's name or path); ``domain_modules``: recorded in the task so that any process can load
    the domains it uses."""
    tools = [schema for name in scenario.domains for schema in domains[name].tool_schemas()
             if tool_name(schema) not in scenario.withheld_tools]
    turns = [t.to_dict() for t in scenario.turns]
    identity = {"domains": scenario.domains, "turns": [t["user"] for t in turns], "withheld": scenario.withheld_tools}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    extra = {"domain_modules": list(domain_modules)} if domain_modules else {}
    return {
        "id": f"tc-{'+'.join(sorted(scenario.domains))}-{scenario.kind}-{digest}",
        "env": env,
        **extra,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": turns[0]["user"]}],
        "tools": tools,
        "domains": scenario.domains,
        "turns": turns,
        "kind": scenario.kind,
        "max_turns": sum(len(t["steps"]) + 1 for t in turns) + 4,  # room to recover from a tool error or two
    }


def generate_tasks(n: int, seed: int, scenario_groups: Sequence[Sequence[Callable[[random.Random], Scenario]]]
                   = SCENARIO_GROUPS, **task_options: Any) -> Iterator[dict[str, Any]]:
    """``n`` distinct tasks across all domains and kinds, the same ones for the same ``seed``. Your own domains'
    generator can reuse it with its scenario templates (``scenario_groups``) and :func:`make_task`'s options."""
    if n < 0:
        raise UserError(f"number of tasks must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()  # first user messages: two tasks never start with the same prompt
    for made in range(n):
        for _ in range(MAX_DRAWS):
            scenario = rng.choice(rng.choice(scenario_groups))(rng)
            scenario.turns[0].user = opener(rng) + scenario.turns[0].user
            if scenario.turns[0].user not in seen:
                break
        else:
            raise UserError(f"tool_calling generator: could only make {made} distinct tasks, {n} were asked for")
        seen.add(scenario.turns[0].user)
        yield make_task(scenario, **task_options)
