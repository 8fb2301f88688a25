"""Start an MCP server under limits (stdlib only; runs as its own process, inside bwrap when isolated).

    python launch.py '{"memory_mb": 2048, "cpu_s": 120, "open_files": 256, "file_size_mb": 64}' COMMAND [ARGS...]

It arranges to be killed when the process that started it goes away (``PR_SET_PDEATHSIG``, kept across ``exec``),
lowers its resource limits (address space, CPU seconds, open files, file size), and then becomes the server with
``execvp``: the limits and the death signal are the server's. A hard limit that is already lower stays as it is.
"""

import ctypes
import json
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
LIMITS = {"memory_mb": (resource.RLIMIT_AS, 1 << 20), "cpu_s": (resource.RLIMIT_CPU, 1),
          "open_files": (resource.RLIMIT_NOFILE, 1), "file_size_mb": (resource.RLIMIT_FSIZE, 1 << 20)}


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: launch.py LIMITS_JSON COMMAND [ARGS...]")
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the process group kill on close still applies
    if os.getppid() != parent:  # the parent died before the death signal was armed
        sys.exit(1)
    for key, value in json.loads(sys.argv[1]).items():
        kind, unit = LIMITS[key]
        soft, hard = resource.getrlimit(kind)
        wanted = int(value) * unit
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(kind, (wanted, hard if hard != resource.RLIM_INFINITY else wanted))
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
