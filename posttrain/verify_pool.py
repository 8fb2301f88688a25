"""Verify many trajectories at once, for any environment, with bounded memory and a per-item timeout.

    with VerifyPool("code", workers=2, timeout_s=60) as pool:
        for index, result in pool.verify_many(trajectories):      # streamed; indices are input positions
            ...
        results = pool.verify_all(trajectories)                    # or all at once, in input order

Each worker process builds its own environment with ``make_env(env, **env_kwargs)`` and verifies one trajectory at a
time. Items are pulled from the input only while fewer than ``max_in_flight`` are pulled and not yet yielded
(backpressure: a generator of a million trajectories is never materialised). A worker that crashes or exceeds the
timeout is killed (its sandboxes die with it) and replaced; its item gets an error ``VerifyResult`` - never a pass.
Workers also die with the process that started them, even when it is killed by SIGKILL and no cleanup runs (see
:func:`_die_with_parent`). Used by rejection sampling, RL rewards, evaluation and calibration.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from posttrain.environment import Trajectory, VerifyResult, load_env_class, make_env
from posttrain.errors import UserError

MAX_START_FAILURES = 3
PARENT_CHECK_S = 0.5  # how often a worker looks whether the process that started it is still there
_PR_SET_PDEATHSIG = 1


def trajectory_from_row(row: Any, where: str) -> Trajectory:
    """A row ``{"task": {...}, "messages": [...]}`` or ``{"task": {...}, "completion": "..."}`` as a Trajectory.

    A completion is the assistant's answer to the task's own initial messages.
    """
    if not isinstance(row, Mapping):
        raise UserError(f"{where}: expected a JSON object with 'task' and 'messages' or 'completion', "
                        f"got {type(row).__name__}")
    task = row.get("task")
    if not isinstance(task, Mapping):
        raise UserError(f"{where}: key 'task' must be an object (the task record as the env's generator wrote it)")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(
                isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in messages):
            raise UserError(f"{where}: key 'messages' must be a list of {{'role': ..., 'content': ...}} objects")
        return Trajectory(dict(task), [dict(m) for m in messages])
    if "completion" in row:
        if not isinstance(row["completion"], str):
            raise UserError(f"{where}: key 'completion' must be a string")
        prompt = task.get("messages") or []
        if not isinstance(prompt, list):
            raise UserError(f"{where}: key 'task.messages' must be a list")
        return Trajectory(dict(task), [*prompt, {"role": "assistant", "content": row["completion"]}])
    raise UserError(f"{where}: expected key 'messages' (the whole conversation) or 'completion' (the answer)")


def _die_with_parent(parent: int, from_main_thread: bool) -> None:
    """End this worker when the process that started it ends, however it ends (a SIGKILLed CLI runs no cleanup, and
    a worker busy verifying never sees its pipe close).

    The kernel's parent-death signal (Linux ``PR_SET_PDEATHSIG``) kills the worker at once, even when it is stuck in C
    code, but it fires when the parent *thread* that started it exits, so it is only asked for when the pool started
    the worker from the main thread (workers replaced from another thread, e.g. rejection sampling's finisher, must
    outlive that thread). A watchdog thread covers every case (and other systems) within ``PARENT_CHECK_S``: once
    the parent is gone, the worker is re-parented and ``getppid`` changes.
    """
    if from_main_thread and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)  # its sandboxes get their own parent-death signal

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker_main(conn: Connection, env_name: str, env_kwargs: dict[str, Any], worker_env: dict[str, str],
                 parent: int, from_main_thread: bool) -> None:
    _die_with_parent(parent, from_main_thread)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.update(worker_env)
    try:
        env = make_env(env_name, **env_kwargs)
    except BaseException as e:  # reported to the parent, which raises it there
        conn.send(("init_error", getattr(e, "message", None) or f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        index, trajectory = msg
        started = time.perf_counter()
        try:
            result = env.verify(trajectory)
            if not isinstance(result, VerifyResult):
                result = VerifyResult.failure(f"{env_name}.verify returned {type(result).__name__}, not VerifyResult")
        except UserError as e:
            result = VerifyResult.failure(e.message, reason="bad_task")
        except Exception as e:  # a verifier bug is this item's error, not the pool's death
            result = VerifyResult.failure(f"{type(e).__name__}: {e}")
        data = result.to_dict()
        data["details"] = {**data["details"], "verify_s": round(time.perf_counter() - started, 4)}
        try:
            conn.send((index, data))
        except Exception as e:  # e.g. details that cannot be pickled
            conn.send((index, VerifyResult.failure(f"result could not be sent back: {e}").to_dict()))
    env.close()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    ready: bool = False
    item: int | None = None  # index being verified
    deadline: float = 0.0


class VerifyPool:
    """A process pool of verifiers for one environment (by name, module or path)."""

    def __init__(self, env: str, *, workers: int = 2, max_in_flight: int | None = None, timeout_s: float = 120.0,
                 env_kwargs: dict[str, Any] | None = None, worker_env: dict[str, str] | None = None) -> None:
        """``env_kwargs`` go to the environment's constructor; ``worker_env`` are environment variables set in the
        workers only (e.g. ``{"POSTTRAIN_SANDBOX": "rlimit"}``)."""
        if workers < 1:
            raise UserError(f"verification workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise UserError(f"verification timeout must be > 0 seconds, got {timeout_s}")
        load_env_class(env)  # a wrong name fails here, in the caller, with the env loader's message
        self.env, self.env_kwargs, self.timeout_s = env, dict(env_kwargs or {}), timeout_s
        self.worker_env = dict(worker_env or {})
        self.max_in_flight = max(max_in_flight or 4 * workers, workers)
        self._ctx = mp.get_context("spawn")  # fork would copy the caller's threads (Ray, torch) into the workers
        self._start_failures = 0
        self._workers = [self._spawn() for _ in range(workers)]
        self._closed = False

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, name=f"verify-{self.env}", daemon=True,
                                    args=(child, self.env, self.env_kwargs, self.worker_env, os.getpid(),
                                          threading.current_thread() is threading.main_thread()))
        process.start()
        child.close()
        return _Worker(process, parent)

    def _replace(self, w: _Worker) -> None:
        if w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=5)
        w.conn.close()
        self._workers[self._workers.index(w)] = self._spawn()

    # -- the streaming API ---------------------------------------------------------------------------------------

    def verify_many(self, trajectories: Iterable[Trajectory | Mapping[str, Any]], *,
                    ordered: bool = False) -> Iterator[tuple[int, VerifyResult]]:
        """Yield ``(index, result)`` for every input, as they finish (or in input order with ``ordered=True``)."""
        if self._closed:
            raise RuntimeError("VerifyPool is closed")
        source = enumerate(trajectories)
        queue: deque[tuple[int, Trajectory]] = deque()
        finished: dict[int, VerifyResult] = {}
        next_index = in_flight = 0
        exhausted = False
        try:
            while True:
                while not exhausted and in_flight < self.max_in_flight:
                    try:
                        index, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    in_flight += 1
                    try:
                        queue.append((index, item if isinstance(item, Trajectory)
                                      else trajectory_from_row(item, f"item {index}")))
                    except UserError as e:
                        finished[index] = VerifyResult.failure(e.message, reason="bad_row")
                self._dispatch(queue)
                ready = sorted(finished) if not ordered else []
                while ordered and next_index in finished:
                    ready.append(next_index)
                    next_index += 1
                for index in ready:
                    in_flight -= 1
                    yield index, finished.pop(index)
                if exhausted and in_flight == 0:
                    return
                if not ready:
                    self._collect(finished)
        finally:
            for w in list(self._workers):
                if w.item is not None:  # abandoned mid-item (the caller stopped early): start clean
                    self._replace(w)

    def verify_all(self, trajectories: Iterable[Trajectory | Mapping[str, Any]]) -> list[VerifyResult]:
        return [result for _, result in self.verify_many(trajectories, ordered=True)]

    def _dispatch(self, queue: deque[tuple[int, Trajectory]]) -> None:
        for w in self._workers:
            if queue and w.ready and w.item is None:
                index, trajectory = queue.popleft()
                w.conn.send((index, trajectory))
                w.item, w.deadline = index, time.monotonic() + self.timeout_s

    def _collect(self, finished: dict[int, VerifyResult]) -> None:
        """Wait for the next event: a result, a worker becoming ready, a death, or a deadline."""
        busy = [w.deadline for w in self._workers if w.item is not None]
        timeout = max(0.0, min(busy) - time.monotonic()) if busy else None
        by_handle: dict[Any, _Worker] = {}
        for w in self._workers:
            by_handle[w.conn] = w
            by_handle[w.process.sentinel] = w
        wait(list(by_handle), timeout=timeout)
        for w in list(self._workers):
            self._poll(w, finished)

    def _poll(self, w: _Worker, finished: dict[int, VerifyResult]) -> None:
        try:
            while w.conn.poll():
                kind, payload = w.conn.recv()
                if kind == "ready":
                    w.ready, self._start_failures = True, 0
                elif kind == "init_error":
                    raise UserError(f"environment {self.env!r} could not start in a verification worker: {payload}")
                elif kind == w.item:
                    finished[kind] = VerifyResult(**payload)
                    w.item = None
        except (EOFError, OSError):
            pass  # the process died; handled below
        if w.item is not None and not w.process.is_alive():
            finished[w.item] = VerifyResult.failure(
                f"the verification process died (exit code {w.process.exitcode}) on this item", reason="crash")
            w.item = None
            self._replace(w)
        elif w.item is not None and time.monotonic() > w.deadline:
            finished[w.item] = VerifyResult.failure(f"verification took longer than {self.timeout_s:g}s",
                                                    reason="timeout")
            w.item = None
            self._replace(w)
        elif not w.ready and not w.process.is_alive():
            self._start_failures += 1
            if self._start_failures > MAX_START_FAILURES:
                raise UserError(f"environment {self.env!r}: verification workers keep dying at start "
                                f"(exit code {w.process.exitcode})")
            self._replace(w)

    # -- lifetime ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
