"""What every sandbox backend shares: the limits a run gets, the result it gives back, and the backend interface.

A backend runs one command on a set of files it is given and nothing else: ``run(files, cmd, stdin, limits)``.
Local backends (``bwrap``, ``rlimit``) and remote ones (SandboxFusion, E2B; see docs/sandbox.md) all fit this shape.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from posttrain.sandbox.warm import WarmSandbox

# Placeholders a command may contain; each backend replaces them with the real paths of the run.
WORKSPACE = "{workspace}"  # private, writable, the working directory and $HOME of the program
HARNESS = "{harness}"  # read-only files the program cannot change (e.g. a test harness)

Files = Mapping[str, "str | bytes"]


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Every process of the run gets the per-process limits (rlimits)."""

    wall_s: float = 10.0  # wall-clock time; the whole process tree is killed after it
    cpu_s: int = 10  # RLIMIT_CPU per process
    memory_mb: int = 512  # RLIMIT_AS per process; with no cgroups a run's total is at most max_processes x this
    file_size_mb: int = 16  # RLIMIT_FSIZE: the largest file a process may write
    open_files: int = 64  # RLIMIT_NOFILE
    max_processes: int = 16  # RLIMIT_NPROC, enforced where the run has its own uid (see docs/sandbox.md)
    tmp_mb: int = 64  # size of each private tmpfs (/tmp and the workspace) where the backend can bound it
    stdout_bytes: int = 1 << 20  # output beyond this is cut and the run is killed
    stderr_bytes: int = 64 << 10

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "file_size_mb", "open_files", "max_processes", "tmp_mb",
                     "stdout_bytes", "stderr_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox limit {name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class RunResult:
    """What happened to one sandboxed run. ``exit_code`` is None when the process we started was killed by a signal
    (a timeout or output-cap kill, or a signal under the rlimit backend); under bwrap a program that dies of signal N
    shows as exit code 128 + N, bwrap's convention."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    killed_by_signal: int | None = None
    truncated: bool = False  # stdout or stderr went over its cap (the run was then killed)
    duration_s: float = 0.0
    backend: str = ""
    notes: list[str] = field(default_factory=list)  # why the run was stopped, in words

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.truncated

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SandboxBackend(ABC):
    """Runs untrusted commands. ``python`` is an interpreter path that works inside the sandbox."""

    name: ClassVar[str] = ""
    is_security_boundary: ClassVar[bool] = True
    python: str = "python3"

    @abstractmethod
    def run(
        self,
        files: Files,
        cmd: Sequence[str],
        stdin: str | bytes | None = None,
        limits: Limits | None = None,
        *,
        readonly_files: Files | None = None,
    ) -> RunResult:
        """Run ``cmd`` in a fresh sandbox holding ``files`` (writable, under {workspace}) and ``readonly_files``
        (under {harness}); paths are relative. ``{workspace}``/``{harness}`` in ``cmd`` are replaced by real paths."""

    def start_warm(self, readonly_files: Files, module: str, limits: Limits) -> WarmSandbox | None:
        """A long-lived sandbox whose zygote imports ``module`` (from ``readonly_files``) once and runs each job in
        fresh, isolated processes (posttrain/sandbox/zygote.py: ``module.handle`` for the job, ``module.child`` for
        the processes it asks for). ``limits`` bound every job (memory, file size, open files, tmpfs size) and the
        processes of one job. None: this backend has no warm mode; callers then use ``run()``. Raises
        ``WarmUnavailable`` when it has one that does not work here."""
        return None


def check_relative_path(path: str) -> str:
    """A file name given to a sandbox must stay inside its folder: relative, no '..', no empty parts."""
    norm = posixpath.normpath(path)
    if not path or path.startswith("/") or norm.startswith("..") or norm in (".", "") or "\0" in path:
        raise ValueError(f"sandbox file path {path!r}: expected a relative path inside the sandbox folder")
    return norm


def as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def substitute(cmd: Sequence[str], workspace: str, harness: str) -> list[str]:
    return [c.replace(WORKSPACE, workspace).replace(HARNESS, harness) for c in cmd]
