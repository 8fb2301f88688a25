"""The fallback backend for machines without user namespaces: rlimits only. NOT a security boundary.

The program runs as an ordinary process with a clean environment in a private temporary folder, under the same rlimits,
wall-clock timeout and output caps as bwrap, and its process group is killed at the end. It can still read whatever
its uid may read on the host and reach the network. Under root each run gets its own unprivileged uid (so it cannot
write the host's files, RLIMIT_NPROC holds, and a uid-wide kill removes everything it started); as an ordinary user it
runs as that user. Choose it only explicitly (``--backend rlimit`` or POSTTRAIN_SANDBOX=rlimit), e.g. for speed
comparisons or on trusted inputs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from posttrain.errors import UserError
from posttrain.sandbox.base import Files, Limits, RunResult, SandboxBackend, as_bytes, check_relative_path, substitute
from posttrain.sandbox.identity import (
    can_drop_privileges,
    interpreter_candidates,
    kill_uid,
    next_run_uid,
    world_accessible,
)
from posttrain.sandbox.process import run_process

log = logging.getLogger(__name__)
WARNING = ("sandbox backend 'rlimit' is NOT a security boundary: untrusted code can read the host's files and use "
           "the network; only resource limits and timeouts apply")


class RlimitBackend(SandboxBackend):
    name = "rlimit"
    is_security_boundary = False

    def __init__(self, python: str | None = None) -> None:
        log.warning(WARNING)
        self._drop = can_drop_privileges()
        pythons = [python] if python else interpreter_candidates()
        if self._drop:
            pythons = [p for p in pythons if world_accessible(p)]
            if not pythons:
                raise UserError("sandbox backend 'rlimit' runs each program as an unprivileged uid when posttrain runs "
                                "as root, but no world-readable Python interpreter was found (tried "
                                f"{', '.join(interpreter_candidates())}); install /usr/bin/python3 or use bwrap")
        self.python = pythons[0]

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
        uid = next_run_uid() if self._drop else None
        base = Path(tempfile.mkdtemp(prefix="posttrain-sandbox-"))
        try:
            os.chmod(base, 0o755)
            workspace, harness = base / "workspace", base / "harness"
            workspace.mkdir(mode=0o700)
            harness.mkdir(mode=0o755)
            (workspace / ".tmp").mkdir()
            for rel, data in files.items():
                _write(workspace / check_relative_path(rel), as_bytes(data), 0o644)
            for rel, data in (readonly_files or {}).items():
                _write(harness / check_relative_path(rel), as_bytes(data), 0o444)
            if uid is not None:
                for p in [workspace, *workspace.rglob("*")]:
                    os.chown(p, uid, uid)
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workspace), "LANG": "C.UTF-8",
                   "TMPDIR": str(workspace / ".tmp"), "PYTHONDONTWRITEBYTECODE": "1"}
            return run_process(substitute(cmd, str(workspace), str(harness)), stdin=as_bytes(stdin or b""),
                               limits=limits, env=env, backend=self.name, cwd=str(workspace), user=uid,
                               nproc_limit=uid is not None,
                               extra_kill=(lambda: kill_uid(uid)) if uid is not None else None)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
