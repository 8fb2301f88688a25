"""The ``mcp`` environment: tools served by MCP servers (the ``mcp`` Python SDK, stdio), started for each episode.

A task names its servers and how to check the outcome::

    {"id", "env": "mcp", "messages": [system?, user],
     "mcp_servers": {"notes": {"command": "python", "args": ["servers/notes.py"], "env": {}, "cwd": null,
                               "tool_prefix": ""}},
     "tools": [...],                  # optional: the tools offered (OpenAI schemas); default every tool listed
     "check": {"probe": [{"name": "list_notes", "arguments": {}}],     # read-only calls after the episode
               "expected": [<their results>],                          # ...compared with these, or with
               "reference_calls": [{"name", "arguments"}, ...],        # ...the results after these calls
               "function": "checks.py:notes_check",                    # and/or your own check
               "facts": [["spelling", ...]]},                          # in the final reply
     "max_turns": 8, "limits": {"failed_calls", "calls", "reply_chars", "extra_values"}}

``reset`` starts the servers (each under the sandbox's limits: see :mod:`.server`) and offers their tools; every
``<tool_call>`` runs through them; a reply without calls ends the episode; ``close`` stops them. ``verify`` starts
fresh servers, replays the trajectory's calls on them, runs the probes and checks (see :mod:`.verify`). A server that
cannot start, dies or hangs fails the episode and makes verification an error, never a pass.

``command: python`` (or ``python3``) runs the interpreter posttrain runs on, so the ``mcp`` package is there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from envs.mcp.server import McpError, ServerLimits
from envs.mcp.session import McpSession, check_task
from envs.mcp.verify import REFERENCE_CACHE, verify_trajectory
from posttrain.environment import Environment, Message, StepResult, Task, Trajectory, VerifyResult
from posttrain.errors import UserError
from posttrain.tool_calls import parse_tool_calls

ISOLATION = ("auto", "bwrap", "none")


class McpEnv(Environment):
    """``isolation``: ``bwrap`` (namespaces: no network, read-only file system, private /tmp), ``none`` (resource
    limits only), or ``auto`` (``none`` when ``POSTTRAIN_SANDBOX=rlimit``, else ``bwrap``)."""

    name = "mcp"
    has_generator = False  # its tasks name your own servers: `posttrain envs list` says so
    description = ("Tools served by MCP servers (stdio, started per episode under the sandbox's limits); the outcome "
                   "is checked by read-only probes, reference calls or a check function of yours.")

    def __init__(self, isolation: str = "auto", network: bool = False, memory_mb: int = 2048, cpu_s: int = 120,
                 open_files: int = 256, file_size_mb: int = 64, start_timeout_s: float = 30.0,
                 call_timeout_s: float = 20.0) -> None:
        if isolation not in ISOLATION:
            raise UserError(f"mcp env: isolation must be one of {', '.join(ISOLATION)}, got {isolation!r}")
        if isolation == "auto":
            from posttrain.sandbox import backend_name

            isolation = "none" if backend_name() == "rlimit" else "bwrap"
        self.limits = ServerLimits(isolation=isolation, network=network, memory_mb=memory_mb, cpu_s=cpu_s,
                                   open_files=open_files, file_size_mb=file_size_mb, start_timeout_s=start_timeout_s,
                                   call_timeout_s=call_timeout_s)
        self._session: McpSession | None = None
        self._task: Task | None = None
        self._messages: list[Message] = []
        self._turns = 0
        self._done = True

    def reset(self, task: Task) -> tuple[list[Message], list[dict[str, Any]]]:
        check_task(task)
        self.close()
        self._session = McpSession(task, self.limits)  # the servers start now, in the background
        try:
            # with the task's own tool schemas there is nothing to wait for: the servers finish starting while the
            # model writes its first turn; otherwise their tools are listed now
            tools = [dict(t) for t in task["tools"]] if task.get("tools") else self._session.offered_schemas()
        except (McpError, UserError):
            self.close()
            raise
        self._task, self._turns, self._done = task, 0, False
        self._messages = [dict(m) for m in task["messages"]]
        return [dict(m) for m in task["messages"]], tools

    def step(self, assistant_message: Message) -> StepResult:
        if self._session is None or self._task is None or self._done:
            raise RuntimeError("mcp env: step() called before reset() or after the episode ended")
        self._turns += 1
        content = assistant_message.get("content") or ""
        self._messages.append({"role": "assistant", "content": content})
        parsed = parse_tool_calls(content)
        info: dict[str, Any] = {"format_error": bool(parsed.errors), "calls": []}
        observations: list[Message] = [
            {"role": "tool", "content": json.dumps({"error": f"could not parse tool call: {error}"})}
            for error in parsed.errors]
        if not parsed.calls and not parsed.errors:
            self._done = True
        for call in parsed.calls:
            try:
                outcome = self._session.run(call)
            except McpError as e:  # the server died or hung: the episode is over, and failed
                self._done, info["server_error"], info["server_error_reason"] = True, e.message, e.reason
                observations.append({"role": "tool", "content": json.dumps({"name": call.name, "error": e.message})})
                break
            observations.append(outcome.observation)
            info["calls"].append({"name": call.name, "status": outcome.status})
        if not self._done and self._turns >= self._task.get("max_turns", 10**9):
            self._done, info["truncated"] = True, True
        self._messages += observations
        reward = 0.0
        if self._done:
            if "server_error" in info:
                result = VerifyResult.failure(info["server_error"], info["server_error_reason"])
            else:  # the episode's own servers hold the state its calls made: check them before they stop
                result = verify_trajectory(self._task, self._messages, self.limits, REFERENCE_CACHE, self._session)
            reward, info["verify"] = result.score, result.to_dict()
            self.close()
        return StepResult(observations=observations, reward=reward, done=self._done, info=info)

    def verify(self, trajectory: Trajectory) -> VerifyResult:
        return verify_trajectory(trajectory.task, trajectory.messages, self.limits, REFERENCE_CACHE)

    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        raise UserError("the mcp environment has no task generator: its tasks name your own MCP servers; write them "
                        "as a task file (docs/environments.md, 'Your MCP servers')")

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
