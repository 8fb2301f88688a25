"""Running untrusted, model-written code: one small interface, backends chosen by name.

    from posttrain.sandbox import get_backend, Limits
    sb = get_backend()                      # "bwrap" unless POSTTRAIN_SANDBOX says otherwise
    res = sb.run({"main.py": code}, [sb.python, "-I", "-S", "{workspace}/main.py"], stdin="1 2\\n",
                 limits=Limits(wall_s=3, memory_mb=256))
    res.exit_code, res.stdout, res.timed_out, res.truncated

Backends: ``bwrap`` (namespaces; the default and the only security boundary here) and ``rlimit`` (resource limits only,
never chosen implicitly). Remote backends register themselves with :func:`register_backend` (docs/sandbox.md).
Many short jobs: ``posttrain.sandbox.warm.WarmPool`` runs each in fresh namespaces inside a long-lived sandbox.
"""

from __future__ import annotations

import os

from posttrain.errors import UserError
from posttrain.sandbox.base import HARNESS, WORKSPACE, Limits, RunResult, SandboxBackend
from posttrain.sandbox.bwrap import BwrapBackend
from posttrain.sandbox.rlimit import RlimitBackend

ENV_VAR = "POSTTRAIN_SANDBOX"
DEFAULT_BACKEND = "bwrap"
BACKENDS: dict[str, type[SandboxBackend]] = {"bwrap": BwrapBackend, "rlimit": RlimitBackend}
_instances: dict[str, SandboxBackend] = {}


def register_backend(name: str, cls: type[SandboxBackend]) -> None:
    """Make a backend selectable by name (e.g. a remote sandbox service)."""
    BACKENDS[name] = cls


def backend_name(name: str | None = None) -> str:
    """The backend to use: the explicit name, else $POSTTRAIN_SANDBOX, else bwrap."""
    chosen = name or os.environ.get(ENV_VAR) or DEFAULT_BACKEND
    if chosen not in BACKENDS:
        source = "" if name else f" (from ${ENV_VAR})"
        raise UserError(f"unknown sandbox backend {chosen!r}{source}; expected one of: {', '.join(BACKENDS)}")
    return chosen


def get_backend(name: str | None = None) -> SandboxBackend:
    """The process-wide instance of a backend (its start-up check runs once per process)."""
    chosen = backend_name(name)
    if chosen not in _instances:
        _instances[chosen] = BACKENDS[chosen]()
    return _instances[chosen]


__all__ = ["BACKENDS", "ENV_VAR", "HARNESS", "WORKSPACE", "BwrapBackend", "Limits", "RlimitBackend", "RunResult",
           "SandboxBackend", "backend_name", "get_backend", "register_backend"]
