"""Start one child process under rlimits and watch it: feed stdin, read capped output, kill on timeout.

Used by every local backend (for bwrap the child is ``bwrap`` itself). The child is the leader of a new session, so the
whole process group is killed at the end; the backends add what a group kill cannot reach (a pid namespace for bwrap,
a uid-wide kill for rlimit).
"""

from __future__ import annotations

import ctypes
import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from posttrain.sandbox.base import Limits, RunResult

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the child between fork and exec must not import or dlopen anything.
_libc = ctypes.CDLL(None, use_errno=True)


def child_setup(limits: Limits, nproc: bool, cpu: bool = True) -> None:
    """Runs in the child after fork (and after the uid change), before exec. ``cpu=False`` leaves CPU time unlimited
    (a warm sandbox's long-lived zygote; its jobs set their own limit)."""
    mb = 1 << 20
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mb, limits.file_size_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    # If the process that started us dies (e.g. a verification worker killed on timeout), so do we.
    # Set after the uid change on purpose: a credential change clears it.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_process(
    argv: Sequence[str],
    *,
    stdin: bytes,
    limits: Limits,
    env: dict[str, str],
    backend: str,
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
    user: int | None = None,
    nproc_limit: bool = False,
    extra_kill: Callable[[], None] | None = None,
) -> RunResult:
    """Run ``argv`` to completion or until a limit is hit; never raises for anything the child does."""
    start = time.monotonic()
    deadline = start + limits.wall_s
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
        pass_fds=tuple(pass_fds), start_new_session=True, close_fds=True,
        user=user, group=user, extra_groups=[] if user is not None else None,
        preexec_fn=lambda: child_setup(limits, nproc_limit),
    )
    caps = {proc.stdout: limits.stdout_bytes, proc.stderr: limits.stderr_bytes}
    chunks: dict[object, list[bytes]] = {proc.stdout: [], proc.stderr: []}
    sizes = {proc.stdout: 0, proc.stderr: 0}
    notes: list[str] = []
    timed_out = truncated = False
    pending_in = memoryview(stdin)

    sel = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        os.set_blocking(stream.fileno(), False)
        sel.register(stream, selectors.EVENT_READ)
    if pending_in:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()

    leftovers_killed = False
    try:
        while sel.get_map():
            if not leftovers_killed and proc.poll() is not None:
                # The program is gone; processes it left behind may still hold the pipes open.
                leftovers_killed = True
                kill_group(proc.pid)
                if extra_kill is not None:
                    extra_kill()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                notes.append(f"wall-clock limit of {limits.wall_s:g}s reached; process tree killed")
                break
            for key, _ in sel.select(timeout=min(remaining, 0.1)):
                stream = key.fileobj
                if stream is proc.stdin:
                    try:
                        n = os.write(proc.stdin.fileno(), pending_in[:65536])
                        pending_in = pending_in[n:]
                    except (BrokenPipeError, OSError):
                        pending_in = pending_in[:0]  # the program stopped reading: the rest of stdin is not needed
                    if not pending_in:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                data = os.read(stream.fileno(), 65536)
                if not data:
                    sel.unregister(stream)
                    continue
                room = caps[stream] - sizes[stream]
                chunks[stream].append(data[:max(room, 0)])
                sizes[stream] += len(data)
                if sizes[stream] > caps[stream]:
                    truncated = True
                    which = "stdout" if stream is proc.stdout else "stderr"
                    notes.append(f"{which} exceeded {caps[stream]} bytes; output cut and process tree killed")
            if truncated:
                break
    finally:
        sel.close()
        if timed_out or truncated:
            kill_group(proc.pid)
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.05))
        except subprocess.TimeoutExpired:
            timed_out = True
            notes.append(f"wall-clock limit of {limits.wall_s:g}s reached; process tree killed")
            kill_group(proc.pid)
            proc.wait()
        kill_group(proc.pid)  # leftovers the program started in its group
        if extra_kill is not None:
            extra_kill()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    code = proc.returncode
    return RunResult(
        exit_code=code if code >= 0 else None,
        stdout=b"".join(chunks[proc.stdout]).decode("utf-8", errors="replace"),
        stderr=b"".join(chunks[proc.stderr]).decode("utf-8", errors="replace"),
        timed_out=timed_out,
        killed_by_signal=-code if code < 0 else None,
        truncated=truncated,
        duration_s=time.monotonic() - start,
        backend=backend,
        notes=notes,
    )
