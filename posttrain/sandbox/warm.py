"""Warm sandboxes: one long-lived sandbox runs many jobs, each in a fresh isolated process forked by its zygote.

    pool = WarmPool(get_backend(), {"judge/__init__.py": ...}, "judge.warm", Limits(memory_mb=512))
    result = pool.run(payload_bytes, Limits(wall_s=5, cpu_s=6))   # None: this backend has no warm mode
    result.output, result.exit_code, result.timed_out, result.notes

Start-up (bwrap, the interpreter, the module's imports) is paid once per sandbox instead of once per job; what a
job gets and why jobs cannot see or influence each other is in zygote.py and docs/sandbox.md. A pool hands each
sandbox to one job at a time and discards a sandbox after any job that did not end cleanly.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import struct
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posttrain.sandbox.base import Files, Limits
from posttrain.sandbox.identity import kill_uid
from posttrain.sandbox.process import child_setup, kill_group

if TYPE_CHECKING:
    from posttrain.sandbox.base import SandboxBackend

log = logging.getLogger(__name__)

# The zygote and the primitives it shares with what its jobs run, as they lie in /harness.
INSIDE_FILES = {name: (Path(__file__).parent / name).read_text() for name in ("zygote.py", "inside.py")}
JOB_PROCESSES = 3  # the zygote (two processes) and a job's init count against the sandbox uid's RLIMIT_NPROC
GRACE_S = 2.0  # on top of a job's wall_s, for the zygote's own bookkeeping
START_TIMEOUT_S = 30.0
STDERR_TAIL = 8192


class WarmUnavailable(Exception):
    """A warm sandbox could not be started here (the caller falls back to one sandbox per run)."""


@dataclass
class JobResult:
    """What one job gave back. ``output`` is what ``handle`` returned, None when there is none (``notes`` say why)."""

    output: bytes | None
    exit_code: int | None  # of the job's init: 0 when ``handle`` returned; None when the whole sandbox died
    timed_out: bool = False
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)


# ---- a thread that outlives every caller -------------------------------------------------------------------------

_spawner: tuple[int, queue.SimpleQueue] | None = None
_spawner_lock = threading.Lock()


def _spawner_loop(jobs: queue.SimpleQueue) -> None:
    while True:
        fn, future = jobs.get()
        try:
            future.set_result(fn())
        except BaseException as e:
            future.set_exception(e)


def in_long_lived_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (which starts a process) in a thread that lives as long as this process: PR_SET_PDEATHSIG and
    bwrap's --die-with-parent fire when the *thread* that forked a child exits, and a warm sandbox started from a
    short-lived worker thread must not die with that thread."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():  # none yet, or we are a fork without that thread
            jobs: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_spawner_loop, args=(jobs,), name="posttrain-sandbox-spawner", daemon=True).start()
            _spawner = (os.getpid(), jobs)
        jobs = _spawner[1]
    future: Future = Future()
    jobs.put((fn, future))
    return future.result()


def descendants(root: int) -> dict[int, int]:
    """Live processes in ``root``'s tree (root included), each with its depth below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
            if state != "Z":
                children.setdefault(int(ppid), []).append(int(entry))
    found, frontier, depth = {root: 0}, [root], 0
    while frontier:
        depth += 1
        frontier = [c for p in frontier for c in children.get(p, []) if c not in found]
        found.update((c, depth) for c in frontier)
    return found


# ---- one warm sandbox ----------------------------------------------------------------------------------------------

_live: weakref.WeakSet[WarmSandbox] = weakref.WeakSet()


def resident_pids() -> set[int]:
    """The resident processes of every warm sandbox of this process that is open (for counting leftovers)."""
    return set().union(*(s.resident_pids() for s in list(_live) if s.alive))


class WarmSandbox:
    """A started sandbox whose zygote waits for jobs. Not thread-safe: one job at a time (WarmPool sees to that)."""

    def __init__(self, argv: Sequence[str], *, limits: Limits, env: dict[str, str], user: int | None = None,
                 pass_fds: Sequence[int] = ()) -> None:
        self.limits, self.user = limits, user
        self._stderr = bytearray()
        self._buf = bytearray()
        self._proc = in_long_lived_thread(lambda: subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            pass_fds=tuple(pass_fds), start_new_session=True, close_fds=True,
            user=user, group=user, extra_groups=[] if user is not None else None,
            preexec_fn=lambda: child_setup(limits, nproc=user is not None, cpu=False)))
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            os.set_blocking(stream.fileno(), False)
        # a sandbox nobody closes (its pool dropped) is killed when it is garbage
        self._finalizer = weakref.finalize(self, _terminate, self._proc, user)
        _live.add(self)
        try:
            hello = self._exchange(b"", time.monotonic() + START_TIMEOUT_S)
            self.zygote_pid = int(json.loads(hello)["hello"])
        except (EOFError, TimeoutError, ValueError, KeyError, TypeError) as e:
            self.close()
            raise WarmUnavailable(f"the warm sandbox did not start ({e}): {self.stderr_tail()!r}") from None

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stderr_tail(self) -> str:
        return self._stderr[-2000:].decode("utf-8", errors="replace")

    def run(self, payload: bytes, limits: Limits) -> JobResult:
        """Run one job: ``payload`` goes to the module's ``handle``, its returned bytes come back as ``output``."""
        for name in ("memory_mb", "file_size_mb", "open_files", "tmp_mb"):
            if getattr(limits, name) > getattr(self.limits, name):
                raise ValueError(f"job limit {name}={getattr(limits, name)} exceeds the warm sandbox's "
                                 f"{getattr(self.limits, name)}")
        started = time.monotonic()
        header = {"wall_s": limits.wall_s, "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb,
                  "file_size_mb": limits.file_size_mb, "open_files": limits.open_files, "tmp_mb": limits.tmp_mb,
                  "max_payload": len(payload), "max_result": limits.stdout_bytes}
        data = json.dumps(header).encode()
        message = struct.pack(">I", len(data)) + data + struct.pack(">I", len(payload)) + payload
        try:
            meta = json.loads(self._exchange(message, started + limits.wall_s + GRACE_S))
            size = int(meta["size"])
            if size > limits.stdout_bytes:
                raise ValueError(f"a result of {size} bytes is over the {limits.stdout_bytes}-byte limit")
            output = self._read_exact(size, started + limits.wall_s + GRACE_S)
        except TimeoutError:
            self.close()
            return JobResult(None, None, True, time.monotonic() - started,
                             [f"no result within {limits.wall_s:g}s (+{GRACE_S:g}s); the sandbox was killed"])
        except (EOFError, OSError, ValueError, KeyError, TypeError) as e:
            self.close()
            return JobResult(None, None, False, time.monotonic() - started,
                             [f"the warm sandbox failed ({e}); stderr: {self.stderr_tail()!r}"])
        code, timed_out = int(meta["exit"]), bool(meta["timed_out"])
        notes = []
        if code != 0:
            # a job that did not end cleanly may have left part of its payload unread: start afresh next time
            notes.append(f"the job ended with exit code {code}; stderr: {self.stderr_tail()!r}")
            self.close()
        return JobResult(output if code == 0 else None, code, timed_out, time.monotonic() - started, notes)

    def resident_pids(self) -> set[int]:
        """Host pids of the processes that stay between jobs: bwrap, bwrap's init inside, the zygote's two
        processes, and the next job's init once it is prepared (only one, and childless: it has not read a job yet).
        Anything else in the tree between jobs would be a leftover."""
        tree = descendants(self.pid)
        resident = {p for p, depth in tree.items() if depth <= 3}
        inits = [p for p, depth in tree.items() if depth == 4]
        if len(inits) == 1 and max(tree.values()) == 4:
            resident.add(inits[0])
        return resident

    def close(self) -> None:
        self._finalizer()

    # -- I/O -------------------------------------------------------------------------------------------------------

    def _exchange(self, message: bytes, deadline: float) -> bytes:
        """Write ``message`` and read one frame back, draining stderr meanwhile."""
        pending = memoryview(message)
        while True:
            if len(self._buf) >= 4:
                (size,) = struct.unpack(">I", self._buf[:4])
                if size > 1 << 20:
                    raise ValueError(f"a frame of {size} bytes from the zygote")
                if len(self._buf) >= 4 + size and not pending:
                    frame = bytes(self._buf[4:4 + size])
                    del self._buf[:4 + size]
                    return frame
            pending = self._pump(pending, deadline)

    def _read_exact(self, size: int, deadline: float) -> bytes:
        while len(self._buf) < size:
            self._pump(memoryview(b""), deadline)
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _pump(self, pending: memoryview, deadline: float) -> memoryview:
        """One round of I/O: write what we can of ``pending``, read what is there; raise on EOF or the deadline."""
        out, err, stdin = self._proc.stdout.fileno(), self._proc.stderr.fileno(), self._proc.stdin.fileno()
        if pending:  # most messages fit the pipe: no need to wait for it
            try:
                pending = pending[os.write(stdin, pending[:1 << 16]):]
            except BlockingIOError:
                pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        readable, _, _ = select.select([out, err], [stdin] if pending else [], [], remaining)
        for fd in readable:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if fd == err:
                self._stderr += chunk
                del self._stderr[:-STDERR_TAIL]
            elif not chunk:
                raise EOFError("the warm sandbox exited")
            else:
                self._buf += chunk
        return pending


def _terminate(proc: subprocess.Popen, user: int | None) -> None:
    if proc.poll() is None:
        kill_group(proc.pid)  # bwrap's outer process; --die-with-parent takes the sandbox's pid namespace along
        if user is not None:
            kill_uid(user)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass


# ---- a pool of them --------------------------------------------------------------------------------------------------

class WarmPool:
    """Warm sandboxes running one module, shared by a process's threads (each job gets a sandbox to itself)."""

    def __init__(self, backend: SandboxBackend, readonly_files: Files, module: str, limits: Limits) -> None:
        self.backend, self.readonly_files, self.module, self.limits = backend, dict(readonly_files), module, limits
        self._idle: list[WarmSandbox] = []
        self._all: set[WarmSandbox] = set()
        self._lock = threading.Lock()
        self.unavailable: str | None = None  # why this pool falls back to one sandbox per run

    def run(self, payload: bytes, limits: Limits) -> JobResult | None:
        """One job in a warm sandbox; None when the backend has no warm mode (the caller runs it cold instead)."""
        sandbox = self._take()
        if sandbox is None:
            return None
        result = sandbox.run(payload, limits)
        with self._lock:
            if sandbox.alive:
                self._idle.append(sandbox)
            else:
                self._all.discard(sandbox)
        return result

    def _take(self) -> WarmSandbox | None:
        with self._lock:
            while self._idle:
                sandbox = self._idle.pop()
                if sandbox.alive:
                    return sandbox
                self._all.discard(sandbox)
            if self.unavailable is not None:
                return None
        try:
            sandbox = self.backend.start_warm(self.readonly_files, self.module, self.limits)
        except WarmUnavailable as e:
            with self._lock:
                if self.unavailable is None:
                    log.warning("warm sandboxes unavailable, using one sandbox per run (slower, same isolation): %s",
                                e)
                self.unavailable = str(e)
            return None
        if sandbox is None:
            with self._lock:
                self.unavailable = f"the {self.backend.name} backend has no warm mode"
            return None
        with self._lock:
            self._all.add(sandbox)
        return sandbox

    def resident_pids(self) -> set[int]:
        with self._lock:
            sandboxes = list(self._all)
        return set().union(*(s.resident_pids() for s in sandboxes if s.alive))

    def close(self) -> None:
        with self._lock:
            sandboxes, self._all, self._idle = list(self._all), set(), []
        for sandbox in sandboxes:
            sandbox.close()
