"""The ``tool_calling`` environment: multi-turn conversations with stateful simulated APIs.

Domains (file system, calendar, bank, messaging, shop) hold state and expose tools with JSON schemas. The model calls
them with Hermes ``<tool_call>`` blocks; each call is parsed, its arguments validated against the tool's schema, and
dispatched through the allow-list of the task's tools. An assistant message without calls is a reply to the user:
the next scripted user turn follows, or the episode ends after the last one.

Your own domains (stateful API classes) plug in without editing this package: see :mod:`envs.tool_calling.registry`
and docs/environments.md, "Your tools".
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from envs.tool_calling.domain import Domain, ToolError, check_domain, tool
from envs.tool_calling.registry import BUILTIN_DOMAINS, combine, load_domains
from envs.tool_calling.tasks import generate_tasks, task_turns
from envs.tool_calling.verify import verify_trajectory
from envs.tool_calling.world import World
from posttrain.environment import Environment, Message, StepResult, Task, Trajectory, VerifyResult
from posttrain.tool_calls import format_assistant_message, parse_tool_calls

__all__ = ["Domain", "ToolCallingEnv", "ToolError", "check_domain", "reference_trajectory", "tool"]


class ToolCallingEnv(Environment):
    """``domains``: your own domain modules or ``.py`` files (``["mypkg.library", "tools/bank2.py:Bank2"]``), added to
    the built-in ones for every task this environment plays or verifies. A subclass adds classes with ``DOMAINS``."""

    name = "tool_calling"
    description = ("Multi-turn tool use against stateful simulated APIs (files, calendar, bank, messaging, shop, and "
                   "your own domains).")
    DOMAINS: ClassVar[Sequence[type[Domain]]] = ()

    def __init__(self, domains: Sequence[str] | None = None) -> None:
        own = list(self.DOMAINS)
        for cls in own:
            check_domain(cls, f"{type(self).__name__}.DOMAINS")
        self.domain_specs = list(domains or [])
        self.domains = combine(BUILTIN_DOMAINS, own, load_domains(self.domain_specs, f"{self.name}: domains"),
                               where=f"{self.name}: domains")
        self._task: Task | None = None
        self._world: World | None = None
        self._turns: list[dict[str, Any]] = []
        self._messages: list[Message] = []
        self._turn = 0
        self._assistant_count = 0
        self._done = True

    def reset(self, task: Task) -> tuple[list[Message], list[dict[str, Any]]]:
        self._turns = task_turns(task)  # UserError for a malformed task
        self._world = World(task, self.domains)
        self._task, self._turn, self._assistant_count, self._done = task, 0, 0, False
        self._messages = copy.deepcopy(task["messages"])
        return copy.deepcopy(task["messages"]), copy.deepcopy(task.get("tools") or [])

    def step(self, assistant_message: Message) -> StepResult:
        if self._world is None or self._done:
            raise RuntimeError("tool_calling env: step() called before reset() or after the episode ended")
        content = assistant_message.get("content") or ""
        self._messages.append({"role": "assistant", "content": content})
        self._assistant_count += 1
        parsed = parse_tool_calls(content)
        info: dict[str, Any] = {"format_error": bool(parsed.errors), "calls": []}
        observations: list[Message] = []
        if parsed.calls or parsed.errors:
            for error in parsed.errors:  # shown to the model so it can fix its format
                observations.append({"role": "tool",
                                     "content": json.dumps({"error": f"could not parse tool call: {error}"})})
            for c in parsed.calls:
                outcome = self._world.run(c)
                observations.append(outcome.observation)
                info["calls"].append({"name": c.name, "status": outcome.status})
        else:
            self._turn += 1
            if self._turn < len(self._turns):
                observations.append({"role": "user", "content": self._turns[self._turn]["user"]})
            else:
                self._done = True
        if not self._done and self._assistant_count >= self._task.get("max_turns", 10**9):
            self._done, info["truncated"] = True, True
        self._messages.extend(observations)
        reward = 0.0
        if self._done:
            result = self.verify(Trajectory(self._task, self._messages))
            reward, info["verify"] = result.score, result.to_dict()
        return StepResult(observations=observations, reward=reward, done=self._done, info=info)

    def verify(self, trajectory: Trajectory) -> VerifyResult:
        return verify_trajectory(trajectory.task, trajectory.messages, self.domains)

    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        return generate_tasks(n, seed)

    def reference_trajectory(self, task: Task) -> list[Message]:
        return reference_trajectory(task, self)


def reference_trajectory(task: Task, env: ToolCallingEnv | None = None) -> list[Message]:
    """The conversation the task's reference calls and replies produce, with real tool results from a fresh world
    (played by ``env``, or a plain :class:`ToolCallingEnv`; a task with domains of its own names them)."""
    env = copy.copy(env) if env is not None else ToolCallingEnv()  # reset() starts a fresh episode on the copy
    messages, _ = env.reset(task)
    for turn in task_turns(task):
        for step in turn["steps"]:
            text = format_assistant_message("", step)
            messages.append({"role": "assistant", "content": text})
            messages.extend(env.step({"role": "assistant", "content": text}).observations)
        messages.append({"role": "assistant", "content": turn["reply"]})
        messages.extend(env.step({"role": "assistant", "content": turn["reply"]}).observations)
    return messages
