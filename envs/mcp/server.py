"""One MCP server over stdio, started for one episode (or one verification), driven from synchronous code.

The ``mcp`` SDK is asynchronous and its client must be entered and left in one task, so each server gets a private
event loop in a thread; :meth:`McpServer.call` hands that loop a request and waits for its answer with a timeout.
The server process is started through ``launch.py`` (resource limits, killed with its parent), inside bubblewrap when
isolated (no network, a read-only view of the file system, a private ``/tmp``, no capabilities), and always stopped:
:meth:`McpServer.close` ends the session (the SDK closes stdin, then terminates and kills the process group), and as
a last resort kills the process group itself. A server that dies, hangs or cannot start raises :class:`McpError`;
the environment turns that into a failed episode or a verification error, never a pass and never a hung run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("launch.py")
PYTHONS = ("python", "python3")


class McpError(Exception):
    """The server could not start, died, or did not answer in time."""

    def __init__(self, message: str, reason: str = "server_error") -> None:
        super().__init__(message)
        self.message, self.reason = message, reason


@dataclass(frozen=True)
class ServerLimits:
    """How a server runs: isolation (``bwrap``: namespaces; ``none``: limits only), resources, timeouts."""

    isolation: str = "bwrap"
    network: bool = False
    memory_mb: int = 2048
    cpu_s: int = 120
    open_files: int = 256
    file_size_mb: int = 64
    start_timeout_s: float = 30.0
    call_timeout_s: float = 20.0


@dataclass
class ToolResult:
    ok: bool
    value: Any  # the result (structured data or text) when ok, the error text otherwise


@dataclass
class ServerSpec:
    """A task's ``mcp_servers`` entry: ``{"command", "args", "env", "cwd", "tool_prefix"}``."""

    name: str
    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    tool_prefix: str = ""


def _argv(spec: ServerSpec, limits: ServerLimits) -> tuple[list[str], str]:
    """The command line that starts the server under its limits, and the folder it runs in."""
    cwd = str(Path(spec.cwd or os.getcwd()).resolve())
    command = sys.executable if spec.command in PYTHONS else spec.command
    rlimits = {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s, "open_files": limits.open_files,
               "file_size_mb": limits.file_size_mb}
    inner = [sys.executable, "-I", str(LAUNCHER), json.dumps(rlimits), command, *spec.args]
    if limits.isolation == "none":
        return inner, cwd
    from posttrain.sandbox import get_backend

    bwrap = get_backend("bwrap").bwrap  # its start-up check runs once: a UserError names what is missing
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if limits.network:
        argv.append("--share-net")
    # A private /tmp hides whatever lives under the host's /tmp: the server's own files are bound back, read-only.
    for path in _own_paths(spec, cwd):
        argv += ["--ro-bind", path, path]
    return [*argv, "--chdir", cwd, "--", *inner], cwd


def _own_paths(spec: ServerSpec, cwd: str) -> list[str]:
    found = [cwd, str(LAUNCHER.parent)]
    for arg in [spec.command, *spec.args, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]:
        if not arg or arg.startswith("-"):
            continue
        path = Path(arg) if Path(arg).is_absolute() else Path(cwd) / arg
        if path.exists():
            found.append(str(path.resolve().parent if path.is_file() else path.resolve()))
    return [p for p in dict.fromkeys(found) if p == "/tmp" or p.startswith("/tmp/")]


def _environment(spec: ServerSpec) -> dict[str, str]:
    env = {"PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": "/tmp"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the project's modules, as the episode's own process sees them
    return {**env, **spec.env}


def wraps_result(output_schema: dict[str, Any] | None) -> bool:
    """Whether a tool's structured output is ``{"result": value}`` around a plain value (how ``MCPServer``/FastMCP
    returns a function's non-object return value)."""
    props = (output_schema or {}).get("properties")
    return isinstance(props, dict) and set(props) == {"result"} and (output_schema or {}).get("required") == ["result"]


def convert_result(result: Any, output_schema: dict[str, Any] | None = None) -> ToolResult:
    """A ``CallToolResult`` as JSON data: structured content when the server gives it (a ``{"result": value}``
    wrapper unwrapped), else its text (parsed when it is JSON); other content (images, audio) is named, not passed
    on."""
    texts = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        texts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')} omitted]")
    text = "\n".join(texts)
    if result.is_error:
        return ToolResult(False, text or "the tool reported an error")
    if result.structured_content is not None:
        structured = result.structured_content
        if wraps_result(output_schema) and isinstance(structured, dict) and set(structured) == {"result"}:
            structured = structured["result"]
        return ToolResult(True, structured)
    try:
        return ToolResult(True, json.loads(text)) if len(texts) == 1 else ToolResult(True, text)
    except ValueError:
        return ToolResult(True, text)


class McpServer:
    """A running server and its session. ``tools``: the server's tools as the SDK lists them."""

    def __init__(self, spec: ServerSpec, limits: ServerLimits) -> None:
        self.spec, self.limits = spec, limits
        self.tools: list[Any] = []
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue | None = None
        self._ready: concurrent.futures.Future = concurrent.futures.Future()
        self._pid: int | None = None
        self._tid: int | None = None
        self._closed = False
        self._finished = threading.Event()
        self._log = tempfile.TemporaryFile()
        self._thread = threading.Thread(target=self._run_loop, daemon=True, name=f"mcp-{spec.name}")
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self._main.add_done_callback(lambda _: self._finished.set())  # also when cancelled before it began

    # -- the loop thread -----------------------------------------------------------------------------------------

    def _run_loop(self) -> None:
        self._tid = threading.get_native_id()  # the server is this thread's child (see close)
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _serve(self) -> None:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        self._queue = asyncio.Queue()
        argv, cwd = _argv(self.spec, self.limits)
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=_environment(self.spec), cwd=cwd)
        try:
            # the server's own log goes to a file of ours: its tail explains a server that dies
            async with Client(stdio_client(params, errlog=self._log), read_timeout_seconds=self.limits.call_timeout_s
                              ) as client:
                self._pid = _child_of(self._tid)
                self.tools = await _list_tools(client)
                self._ready.set_result(None)
                while True:
                    item = await self._queue.get()
                    if item is None:
                        break
                    request, answer = item
                    try:
                        answer.set_result(await request(client))
                    except Exception as e:  # the call's own failure; the session may go on
                        answer.set_exception(e)
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e)
            raise
        finally:
            self._finished.set()

    def log_tail(self, chars: int = 400) -> str:
        """The end of what the server wrote to stderr."""
        try:
            self._log.seek(0)
            return self._log.read().decode("utf-8", "replace")[-chars:].strip()
        except (OSError, ValueError):
            return ""

    # -- the caller's side ---------------------------------------------------------------------------------------

    def wait_ready(self) -> None:
        """Wait for the session to be up (McpError if the server does not start in ``start_timeout_s``)."""
        try:
            self._ready.result(timeout=self.limits.start_timeout_s)
        except concurrent.futures.TimeoutError:
            self.close()
            raise McpError(f"MCP server {self.spec.name!r} did not start within {self.limits.start_timeout_s:g}s",
                           "server_timeout") from None
        except Exception as e:
            tail = self.log_tail()
            self.close()
            raise McpError(f"MCP server {self.spec.name!r} could not start: {_describe(e)}"
                           + (f"; its stderr ends: {tail}" if tail else "")) from None

    def _request(self, request: Any, timeout: float) -> Any:
        self.wait_ready()
        answer: concurrent.futures.Future = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (request, answer))  # type: ignore[union-attr]
        done, _ = concurrent.futures.wait([answer, self._main], timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        if answer in done:
            return answer.result()
        if self._main in done:
            tail = self.log_tail()
            raise McpError(f"MCP server {self.spec.name!r} stopped: {_describe(self._main.exception())}"
                           + (f"; its stderr ends: {tail}" if tail else ""))
        raise McpError(f"MCP server {self.spec.name!r} did not answer within {timeout:g}s", "server_timeout")

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Run one tool. A tool's own error is a ``ToolResult(ok=False)``; a dead or hung server is McpError."""
        from mcp.shared.exceptions import MCPError
        from mcp_types.jsonrpc import CONNECTION_CLOSED, REQUEST_TIMEOUT

        async def request(client: Any) -> Any:
            return await client.call_tool(name, arguments)

        try:
            result = self._request(request, self.limits.call_timeout_s + 5)
        except MCPError as e:  # a protocol-level error (unknown tool, invalid params): an answer, not a crash
            if e.code == REQUEST_TIMEOUT:
                raise McpError(f"MCP server {self.spec.name!r}: {name} took longer than "
                               f"{self.limits.call_timeout_s:g}s", "server_timeout") from None
            if e.code == CONNECTION_CLOSED:
                tail = self.log_tail()
                raise McpError(f"MCP server {self.spec.name!r} stopped during {name}"
                               + (f"; its stderr ends: {tail}" if tail else "")) from None
            return ToolResult(False, e.error.message)
        except McpError:
            raise
        except Exception as e:
            if isinstance(e, TimeoutError):
                raise McpError(f"MCP server {self.spec.name!r}: {name} took longer than "
                               f"{self.limits.call_timeout_s:g}s", "server_timeout") from None
            raise McpError(f"MCP server {self.spec.name!r}: {name} failed: {_describe(e)}") from None
        schema = next((t.output_schema for t in self.tools if t.name == name), None)
        return convert_result(result, schema)

    def close(self) -> None:
        """Stop the server and the session (idempotent, fast: the server's state belongs to the episode, so it is
        killed rather than asked to finish; the SDK's own shutdown then finds it gone)."""
        if self._closed:
            return
        self._closed = True
        pid = self._pid or (_child_of(self._tid) if self._tid is not None else None)
        if pid is not None:  # its own session and process group (the SDK starts it so), bwrap's sandbox included
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._main.done():
            if self._ready.done() and self._queue is not None:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
            else:
                self._main.cancel()
        if not self._finished.wait(timeout=10):  # the SDK's shutdown is bounded; this is the bound's bound
            self._loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(self._loop)])
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        self._log.close()


async def _list_tools(client: Any) -> list[Any]:
    tools, cursor = [], None
    for _ in range(100):  # a paginator that never ends must not hang the episode
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _child_of(thread_id: int) -> int | None:
    """The process this thread started last (the server, or bwrap around it), from /proc."""
    try:
        children = Path(f"/proc/self/task/{thread_id}/children").read_text().split()
    except OSError:
        return None
    return int(children[-1]) if children else None


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "the session ended"
    group = getattr(error, "exceptions", None)  # an ExceptionGroup from the SDK's task groups
    if isinstance(group, tuple | list) and group:
        return "; ".join(_describe(e) for e in group)
    return f"{type(error).__name__}: {error}"[:500]
