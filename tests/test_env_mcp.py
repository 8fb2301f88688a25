"""The mcp environment with real MCP servers over stdio (the ``mcp`` SDK's MCPServer, written here and in examples/):
episodes list the servers' tools and run the model's calls through them; verification replays the calls on fresh
servers and checks probes against expected results, reference calls, a check function or facts; servers run under
bubblewrap and resource limits and are always stopped; a server that cannot start, dies or hangs fails the episode
and makes verification an error, never a pass; bad tasks are clear errors; the reward hacks of tool_calling fail here
too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from envs.mcp import McpEnv
from posttrain.environment import Trajectory, make_env
from posttrain.errors import UserError
from posttrain.tool_calls import format_assistant_message, format_tool_call

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "mcp"

TEST_SERVER = '''
import json, os, socket, sys
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("counter")
STATE = {"value": int(sys.argv[1]) if len(sys.argv) > 1 else 0}


@app.tool()
def add(amount: int) -> dict:
    """Add to the counter (1 to 10)."""
    if not 1 <= amount <= 10:
        raise ToolError("amount must be between 1 and 10")
    STATE["value"] += amount
    return {"value": STATE["value"]}


@app.tool()
def read() -> int:
    """The counter."""
    return STATE["value"]


@app.tool()
def hang() -> str:
    """Never answers."""
    while True:
        pass


@app.tool()
def die() -> str:
    """The server exits."""
    os._exit(3)


@app.tool()
def escape() -> dict:
    """Tries what a sandboxed server must not be able to do."""
    out = {}
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2)
        out["network"] = "open"
    except OSError as e:
        out["network"] = f"blocked: {e}"
    try:
        with open(os.environ["PROBE_FILE"], "w") as f:
            f.write("escaped")
        out["write"] = "written"
    except OSError as e:
        out["write"] = f"blocked: {e}"
    try:
        bytearray(3 << 30)
        out["memory"] = "allocated"
    except MemoryError:
        out["memory"] = "limited"
    out["pid"] = os.getpid()
    return out


if __name__ == "__main__":
    app.run()
'''


CHECKS = '''
def is_eight(trajectory, probe):
    value = probe("read", {})
    return {"passed": value == 8, "score": 0.5 if value != 8 else 1.0,
            "reasons": [] if value == 8 else ["counter_is_not_8"]}
'''


@pytest.fixture(scope="module")
def server_file(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("mcp")
    (folder / "counter_server.py").write_text(TEST_SERVER)
    (folder / "mcp_checks.py").write_text(CHECKS)
    return str(folder / "counter_server.py")


def counter_task(server_file: str, check: dict, start: int = 5, **extra) -> dict:
    return {"id": f"counter-{start}", "env": "mcp", "max_turns": 6,
            "mcp_servers": {"counter": {"command": "python", "args": [server_file, str(start)]}},
            "messages": [{"role": "system", "content": "Use the tools."},
                         {"role": "user", "content": "Add 3 to the counter, then tell me its value."}],
            "check": check, **extra}


def conversation(task: dict, *turns: str) -> list[dict]:
    return [*task["messages"], *({"role": "assistant", "content": t} for t in turns)]


ADD_3 = format_tool_call("add", {"amount": 3})


def test_an_episode_runs_the_calls_through_the_server_and_stops_it(server_file) -> None:
    task = counter_task(server_file, {"probe": [{"name": "read"}], "expected": [8], "facts": [["8"]]})
    env = make_env("mcp", isolation="none")
    messages, tools = env.reset(task)
    assert messages == task["messages"] and {t["function"]["name"] for t in tools} == {"add", "read", "hang", "die",
                                                                                         "escape"}
    assert tools[0]["function"]["parameters"]["required"] == ["amount"]
    step = env.step({"role": "assistant", "content": ADD_3})
    assert not step.done and json.loads(step.observations[0]["content"]) == {"name": "add", "result": {"value": 8}}
    refused = env.step({"role": "assistant", "content": format_tool_call("add", {"amount": 50})})
    assert "between 1 and 10" in json.loads(refused.observations[0]["content"])["error"]
    pids = [s._pid for s in env._session.servers]
    last = env.step({"role": "assistant", "content": "The counter is now 8."})
    assert last.done and last.reward == 1.0 and last.info["verify"]["passed"]
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)  # stopped with the episode


def test_verification_replays_on_fresh_servers_with_each_kind_of_check(server_file) -> None:
    env = McpEnv(isolation="none")
    expected = counter_task(server_file, {"probe": [{"name": "read"}], "expected": [8]})
    reference = counter_task(server_file, {"probe": [{"name": "read"}], "reference_calls": [
        {"name": "add", "arguments": {"amount": 3}}]}, start=6)
    checks = Path(server_file).with_name("mcp_checks.py")
    function = counter_task(server_file, {"function": f"{checks}:is_eight"})
    good, wrong = (ADD_3, "Done: 8."), (format_tool_call("add", {"amount": 2}), "Done: 8.")
    for task in (expected, reference):
        assert env.verify(Trajectory(task, conversation(task, *good))).passed
        result = env.verify(Trajectory(task, conversation(task, *wrong)))
        assert not result.passed and result.reasons == ["state_mismatch"] and result.error is None
    assert env.verify(Trajectory(function, conversation(function, *good))).passed
    half = env.verify(Trajectory(function, conversation(function, *wrong)))
    assert not half.passed and half.reasons == ["counter_is_not_8"] and half.score == 0.5
    facts = counter_task(server_file, {"facts": [["8"]]})
    assert env.verify(Trajectory(facts, conversation(facts, ADD_3, "It is 8."))).passed
    assert env.verify(Trajectory(facts, conversation(facts, ADD_3, "Done."))).reasons == ["missing_fact:8"]
    unfinished = env.verify(Trajectory(expected, conversation(expected, ADD_3)))
    assert unfinished.reasons == ["incomplete"]


def test_the_shipped_notes_example(tmp_path) -> None:
    from posttrain.verify_pool import VerifyPool

    tasks = [json.loads(line) for line in (EXAMPLES / "notes_tasks.jsonl").read_text().splitlines()]
    answers = {
        "mcp-notes-add": [format_tool_call("write_note", {"title": "dentist", "text": "Tuesday 10:30"}), "Saved."],
        "mcp-notes-delete": [format_tool_call("delete_note", {"title": "ideas"}), "Deleted."],
        "mcp-notes-bread": [format_tool_call("write_note", {"title": "groceries", "text": "milk, eggs, bread"}),
                            "Added bread."],
        "mcp-notes-read": [format_tool_call("read_note", {"title": "groceries"}), "You need milk and eggs."],
    }
    trajectories = [Trajectory(t, conversation(t, *answers[t["id"]])) for t in tasks]
    with VerifyPool("mcp", workers=2, timeout_s=120) as pool:  # spawned workers start their own servers
        results = pool.verify_all(trajectories)
    assert [r.passed for r in results] == [True] * 4, [r.to_dict() for r in results]


def test_a_server_that_dies_hangs_or_cannot_start_is_a_failure_never_a_pass(server_file) -> None:
    env = McpEnv(isolation="none", call_timeout_s=3, start_timeout_s=20)
    task = counter_task(server_file, {"probe": [{"name": "read"}], "expected": [8]})
    for tool, reason in (("die", "server_error"), ("hang", "server_timeout")):
        env.reset(task)
        step = env.step({"role": "assistant", "content": format_tool_call(tool, {})})
        assert step.done and step.reward == 0.0 and step.info["verify"]["reasons"] == [reason]
        result = env.verify(Trajectory(task, conversation(task, format_tool_call(tool, {}), ADD_3, "It is 8.")))
        assert not result.passed and result.reasons == [reason] and result.error
    broken = {**task, "mcp_servers": {"counter": {"command": "python", "args": ["-c", "import sys; "
                                                                               "sys.stderr.write('no config'); "
                                                                               "sys.exit(2)"]}}}
    from envs.mcp.server import McpError

    with pytest.raises(McpError, match="could not start.*no config"):
        env.reset(broken)
    result = env.verify(Trajectory(broken, conversation(broken, ADD_3, "It is 8.")))
    assert not result.passed and result.error and "could not start" in result.error


def test_servers_run_in_the_sandbox_under_limits(server_file) -> None:
    probe_file = Path(server_file).with_name("escaped.txt")  # next to the server's own file, which it can read
    task = counter_task(server_file, {"facts": [["x"]]})
    task["mcp_servers"]["counter"]["env"] = {"PROBE_FILE": str(probe_file)}
    env = McpEnv(isolation="bwrap", memory_mb=1024)
    env.reset(task)
    step = env.step({"role": "assistant", "content": format_tool_call("escape", {})})
    result = json.loads(step.observations[0]["content"])["result"]
    assert result["network"].startswith("blocked") and "Read-only file system" in result["write"]
    assert result["memory"] == "limited" and result["pid"] != os.getpid()
    assert not probe_file.exists()
    env.close()
    assert McpEnv(isolation="auto").limits.isolation == "bwrap"
    with pytest.raises(UserError, match="isolation must be one of"):
        McpEnv(isolation="docker")


def test_reward_hacks_fail(server_file) -> None:
    env = McpEnv(isolation="none")
    task = counter_task(server_file, {"probe": [{"name": "read"}], "expected": [8], "facts": [["8"]]})
    spray = ", ".join(str(n) for n in range(100))
    assert "enumeration:8" in env.verify(Trajectory(task, conversation(task, ADD_3, f"It is one of {spray}."))
                                         ).reasons
    failing = [format_tool_call("add", {"amount": 99})] * 3
    assert env.verify(Trajectory(task, conversation(task, *failing, ADD_3, "It is 8."))).reasons == \
        ["too_many_failed_calls"]
    reads = format_assistant_message("", [{"name": "read", "arguments": {}}] * 31)
    assert env.verify(Trajectory(task, conversation(task, reads, ADD_3, "It is 8."))).reasons == ["too_many_calls"]
    hidden = env.verify(Trajectory(task, conversation(task, ADD_3, "<think>it is 8</think>Done.")))
    assert hidden.reasons == ["missing_fact:8"]


def test_bad_tasks_are_clear_errors(server_file) -> None:
    env = McpEnv(isolation="none")
    base = counter_task(server_file, {"probe": [{"name": "read"}], "expected": [8]})
    for changes, match in [({"mcp_servers": {}}, "mcp_servers"), ({"check": {}}, "check"),
                           ({"check": {"expected": [1]}}, "need 'probe'"),
                           ({"check": {"probe": [{"name": "read"}]}}, "give 'expected'"),
                           ({"check": {"probe": [{"name": "read"}], "expected": [1, 2]}}, "2 results for 1 probes"),
                           ({"messages": [{"role": "system", "content": "x"}]}, "must end with the user")]:
        with pytest.raises(UserError, match=match):
            env.reset({**base, **changes})
        result = env.verify(Trajectory({**base, **changes}, conversation(base, "hi")))
        assert result.reasons == ["bad_task"] and result.error
    offered = {**base, "tools": [{"type": "function", "function": {"name": "fly", "parameters": {"type": "object"}}}]}
    env.reset(offered)  # the task's own schemas are offered at once; the servers are checked at the first call
    with pytest.raises(UserError, match=r"tools \['fly'\] are not offered by its servers"):
        env.step({"role": "assistant", "content": format_tool_call("fly", {})})
    env.close()
    twice = {**base, "mcp_servers": {"a": base["mcp_servers"]["counter"], "b": base["mcp_servers"]["counter"]}}
    assert "give one of them a tool_prefix" in env.verify(Trajectory(twice, conversation(base, ADD_3, "8"))).error
    prefixed = {**twice, "mcp_servers": {**twice["mcp_servers"], "b": {**twice["mcp_servers"]["b"],
                                                                     "tool_prefix": "b_"}}}
    assert env.verify(Trajectory(prefixed, conversation(base, ADD_3, "It is 8."))).passed
    with pytest.raises(UserError, match="no task generator"):
        list(env.generate_tasks(1, 0))
