"""Who a sandboxed run is (its uid) and which Python interpreter it uses.

When posttrain runs as root (as in CI and containers), each run gets a fresh unprivileged uid of its own. That is
what makes RLIMIT_NPROC work (the kernel does not enforce it for root), keeps a fork bomb in one run from starving
another, lets a uid-wide kill reach every process the run left behind, and means that even an escaped process owns
nothing on the host. Such a uid can only start programs it can reach, so the interpreter must be world-readable.
"""

from __future__ import annotations

import itertools
import os
import signal
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path

# Unused by any real account; pid * 64 + a counter keeps concurrent runs on distinct uids (pid_max <= 2**22).
UID_BASE = 1_000_000_000
_counter = itertools.count()


def can_drop_privileges() -> bool:
    return os.geteuid() == 0


def next_run_uid() -> int:
    """A uid no other live run uses: distinct per process (pid) and per run inside it (counter)."""
    return UID_BASE + (os.getpid() % (1 << 22)) * 64 + next(_counter) % 64


def kill_uid(uid: int) -> None:
    """SIGKILL every process owned by ``uid`` (what a run left behind, even in other sessions)."""
    if uid < UID_BASE:  # never anything but a run uid: kill(-1) as a real user would take down their session
        raise ValueError(f"refusing to kill all processes of uid {uid}")
    pid = os.fork()
    if pid == 0:  # the child becomes the uid, so kill(-1) reaches exactly that uid's processes (never itself)
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        except BaseException:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def world_accessible(path: str | os.PathLike[str], execute: bool = True) -> bool:
    """Whether any user can reach ``path`` (every parent searchable) and read (and run) it."""
    p = Path(os.path.realpath(path))
    try:
        for parent in p.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        mode = p.stat().st_mode
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if execute else 0)
    return mode & need == need


def interpreter_candidates() -> list[str]:
    """Real interpreter paths (no venv shims): the one running posttrain, then the system's."""
    found: list[str] = []
    for p in (sys.executable, "/usr/bin/python3"):
        real = os.path.realpath(p)
        if os.path.isfile(real) and os.access(real, os.X_OK) and real not in found:
            found.append(real)
    return found


@cache
def interpreter_prefix(python: str) -> str:
    """The installation prefix an interpreter needs (stdlib, libpython), to bind read-only into the sandbox."""
    out = subprocess.run([python, "-I", "-S", "-c", "import sys; print(sys.base_prefix)"],
                         capture_output=True, text=True, timeout=30, check=True)
    return os.path.realpath(out.stdout.strip())
