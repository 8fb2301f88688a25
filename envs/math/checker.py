"""Answer checking with math-verify in a persistent worker process, with a timeout that works from any thread.

math-verify's built-in timeout uses ``signal.alarm``, which only works in the main thread, and sympy can spin for
ever on inputs like ``9^{9^{9^{9}}}``. So one child process per :class:`MathChecker` does the parsing and comparing;
a request that takes longer than ``timeout`` gets the child killed (and a fresh one is started on the next request).
A request costs a pipe round trip (about a millisecond), not a process start.

On Linux the worker gets SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so it never outlives a killed trainer,
even while stuck inside sympy.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")


@dataclass
class CheckResult:
    """``status``: ok (compared; see ``passed``), gold_unparseable, no_answer, timeout, crash."""

    status: str
    passed: bool = False
    gold_parsed: str | None = None
    answer_parsed: str | None = None
    error: str | None = None
    seconds: float = 0.0


class _Spawner:
    """Starts worker processes from one long-lived daemon thread.

    Linux sends the parent-death signal when the *thread* that started a child ends, not the process: a worker
    started from a short-lived thread (a thread pool, a request handler) would be killed with it. One spawning thread
    per process keeps every worker alive exactly as long as the process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.Queue = queue.Queue()
        self._pid = 0  # threads do not survive fork(): a forked child starts its own spawning thread

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._pid != os.getpid():
                self._requests = queue.Queue()
                threading.Thread(target=self._serve, args=(self._requests,), name="math-verify-spawner",
                                 daemon=True).start()
                self._pid = os.getpid()
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._requests.put((args, kwargs, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result

    @staticmethod
    def _serve(requests: queue.Queue) -> None:
        while True:
            args, kwargs, reply = requests.get()
            try:
                reply.put(subprocess.Popen(args, **kwargs))
            except BaseException as e:  # handed to the caller, which raises it in its own thread
                reply.put(e)


_SPAWNER = _Spawner()


def _kill(proc: subprocess.Popen, owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked copy of the checker must not kill its parent's worker
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class MathChecker:
    """Checks a model's answer against a gold answer. Thread-safe (requests are serialised); picklable."""

    def __init__(self, timeout: float = 5.0, startup_timeout: float = 60.0, memory_mb: int = 2048) -> None:
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.memory_mb = memory_mb
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = 0
        self._finalizer: weakref.finalize | None = None
        self._buffer = b""
        self._next_id = 0
        self.restarts = 0  # how many workers were killed for timing out or dying

    def __getstate__(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "startup_timeout": self.startup_timeout, "memory_mb": self.memory_mb}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def check(self, gold: str, answer: str) -> CheckResult:
        start = time.monotonic()
        with self._lock:
            result = self._check_locked(gold, answer)
        result.seconds = time.monotonic() - start
        return result

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- the worker process -------------------------------------------------------------------------------------

    def _check_locked(self, gold: str, answer: str) -> CheckResult:
        try:
            self._ensure_worker()
        except RuntimeError as e:
            return CheckResult(status="crash", error=str(e))
        self._next_id += 1
        request = {"id": self._next_id, "gold": gold, "answer": answer}
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
            response = self._read_line(self.timeout)
        except BrokenPipeError:
            response = None
        if response is None:
            code = self._proc.poll()
            self._stop()
            self.restarts += 1
            if code is None:
                return CheckResult(status="timeout", error=f"math-verify took longer than {self.timeout:g}s")
            return CheckResult(status="crash", error=f"math-verify worker exited with code {code}")
        if response.get("id") != self._next_id:  # out of step with the worker: start afresh
            self._stop()
            self.restarts += 1
            return CheckResult(status="crash", error=response.get("error") or "math-verify worker reply out of order")
        return CheckResult(status=response["status"], passed=response.get("passed", False),
                           gold_parsed=response.get("gold_parsed"), answer_parsed=response.get("answer_parsed"),
                           error=response.get("error"))

    def _ensure_worker(self) -> None:
        # A forked copy of this object must not share the parent's pipes: start its own worker.
        if self._proc is not None and self._proc.poll() is None and self._owner_pid == os.getpid():
            return
        self._stop()
        self._proc = _SPAWNER.popen(
            [sys.executable, "-u", str(WORKER), str(self.memory_mb), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self._owner_pid = os.getpid()
        self._buffer = b""
        self._finalizer = weakref.finalize(self, _kill, self._proc, self._owner_pid)
        ready = self._read_line(self.startup_timeout)
        if not ready or not ready.get("ready"):
            self._stop()
            raise RuntimeError(f"math-verify worker did not start within {self.startup_timeout:g}s")

    def _read_line(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON line from the worker, or None on timeout or end of stream."""
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"status": "crash", "error": f"garbled reply from math-verify worker: {line[:200]!r}"}

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills the worker (only in the process that started it) and detaches
        self._finalizer = None
        self._proc = None
        self._buffer = b""
