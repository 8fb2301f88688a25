"""The judge's entry points: ``handle`` for a warm sandbox's zygote (via warm.py), ``cold_main`` for one sandbox per
run (``python -I -S /harness/judge/__main__.py``, the job on stdin, the verdict line on stdout).

Either way the judge reads the job (tests, expected values, a nonce), runs the tests with candidate processes that
are not forks of itself (launcher.py) and returns one verdict carrying the nonce; the parent decides pass/fail.
"""

import ctypes
import json
import os
import sys
import time

from .functions import run_function_tests
from .launcher import ForkLauncher, ZygoteLauncher
from .stdio import run_stdio_tests
from .wire import describe

VERDICT_PREFIX = "POSTTRAIN-VERDICT "
MAX_JOB = 64 << 20
OUTPUT_TAIL = 2000


def judge(job, launcher):
    """The verdict for one job: per-test results, or the harness's own error (never a pass)."""
    started = time.monotonic()
    verdict = {"nonce": job.get("nonce")}
    log = os.memfd_create("candidate-output")
    try:
        deadline = started + float(job["budget_s"])
        run = run_function_tests if job["kind"] == "function" else run_stdio_tests
        verdict["tests"], verdict["load_error"] = run(job, deadline, launcher, log)
    except BaseException as e:  # a failure of the harness or of the task's own code, never a pass
        verdict["harness_error"] = describe(e)
    finally:
        launcher.close()  # nothing the candidate started outlives the run
    size = os.fstat(log).st_size
    verdict["candidate_output"] = os.pread(log, OUTPUT_TAIL, max(0, size - OUTPUT_TAIL)).decode(
        "utf-8", errors="replace")
    os.close(log)
    return verdict


def handle(read_payload, spawner):
    """Warm: in a job's init (pid 1 of the job's namespaces, no capabilities, non-dumpable), once per job."""
    job = json.loads(read_payload())
    return json.dumps(judge(job, ZygoteLauncher(spawner))).encode()


def _make_undumpable():
    """After this, same-uid processes without capabilities cannot read our memory, fds or environment."""
    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def cold_main():
    _make_undumpable()
    launcher = ForkLauncher()  # before the job is read
    job = json.loads(sys.stdin.buffer.read(MAX_JOB))
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # nothing the candidate starts can read what we were sent
    line = (VERDICT_PREFIX + json.dumps(judge(job, launcher)) + "\n").encode()
    view = memoryview(line)
    while view:
        view = view[os.write(1, view):]
