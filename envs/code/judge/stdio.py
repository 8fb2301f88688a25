"""stdin/stdout tasks, the judge's side: one fresh candidate process per test, fed the test's input; its output (in a
memfd only that process holds) is compared with the expected output, which stays in the judge's memory."""

import os
import select
import time

from .functions import not_run, test_result
from .launcher import LauncherGone, memfd_with


def normalize(text):
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _feed_and_wait(launcher, pid, stdin_w, data, timeout):
    """Write ``data`` to the program's stdin (as far as it reads it) and wait for its exit code; None on timeout."""
    deadline = time.monotonic() + timeout
    pending = memoryview(data)
    os.set_blocking(stdin_w, False)
    try:
        while pid not in launcher.exits:
            if not pending and stdin_w >= 0:
                os.close(stdin_w)  # end of input
                stdin_w = -1
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, writable, _ = select.select([launcher], [stdin_w] if stdin_w >= 0 else [], [], left)
            if writable:
                try:
                    pending = pending[os.write(stdin_w, pending[:1 << 16]):]
                except BlockingIOError:
                    pass
                except BrokenPipeError:  # it stopped reading: the rest of the input is not needed
                    pending = pending[:0]
            if readable:
                launcher.receive(0)
        return launcher.exits.pop(pid)
    finally:
        if stdin_w >= 0:
            os.close(stdin_w)


def run_stdio_tests(job, deadline, launcher, log_fd):
    """Run the program once per test with the test's stdin; compare its stdout with the expected output."""
    results = []
    tests = job["tests"]
    source = memfd_with("source", job["source"].encode())
    try:
        for i, test in enumerate(tests):
            left = deadline - time.monotonic()
            if left <= 0.05:
                results += not_run(tests[i:], "time budget of the run exhausted")
                break
            results.append(_one_test(job, test, launcher, log_fd, source, min(job["test_timeout_s"], left)))
    finally:
        os.close(source)
    return results, None


def _one_test(job, test, launcher, log_fd, source, timeout):
    started = time.monotonic()
    out = os.memfd_create("stdout")
    stdin_r, stdin_w = os.pipe()
    try:
        try:
            pid = launcher.launch({"mode": "stdio", "cpu_s": job["test_timeout_s"]}, [stdin_r, out, log_fd, source])
        except LauncherGone as e:
            os.close(stdin_w)
            return test_result(test["name"], "crashed", started, str(e))
        finally:
            os.close(stdin_r)
        try:
            code = _feed_and_wait(launcher, pid, stdin_w, test["input"].encode(), timeout)
        except LauncherGone as e:
            return test_result(test["name"], "crashed", started, str(e))
        # whatever the program left running (a setsid daemon included) dies before the next test starts
        launcher.kill_all()
        expected = test["output"]
        got = os.pread(out, len(expected.encode()) * 2 + 4096, 0).decode("utf-8", errors="replace")
    finally:
        os.close(out)
    if code is None:
        return test_result(test["name"], "timeout", started, f"no exit within {job['test_timeout_s']:g}s")
    if code != 0:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return test_result(test["name"], "nonzero_exit", started, how)
    if normalize(got) != normalize(expected):
        return test_result(test["name"], "wrong_output", started, f"expected {expected[:200]!r}, got {got[:200]!r}")
    return test_result(test["name"], "passed", started)
