"""The program that runs INSIDE the sandbox (stdlib only): a judge that holds the hidden tests, and a worker that runs
the candidate's code. Run as ``python -I -S sandboxed.py judge`` with the job as JSON on stdin.

Why two processes: the candidate must not see the tests nor be able to forge their results. The judge reads the job
(tests, expected values and a per-run nonce) from stdin before any candidate code exists, then makes itself
non-dumpable, so no process of the same uid without capabilities can read its memory, /proc/<pid>/fd or environ. The
candidate runs in a freshly exec'd worker (its memory never held the tests) that only receives call arguments and only
sends back plain values (JSON with tags for tuples, sets, ...). The judge runs the test code on those values and prints
one verdict line carrying the nonce; the parent accepts only that line. A candidate calling ``sys.exit(0)``,
``os._exit(0)``, printing "PASS", or patching builtins changes only its own process.

stdin/stdout programs run as a fresh process per test; their output goes to a file the judge compares with the
expected output it keeps in memory.
"""

import json
import os
import select
import struct
import sys
import time

# The judge's own modules (signal, subprocess, tempfile, ctypes) are imported inside its functions: the worker runs
# this same file, and its start-up time is paid once per verification.

VERDICT_PREFIX = "POSTTRAIN-VERDICT "
MAX_FRAME = 16 << 20
MAX_JOB = 64 << 20
MAX_DEPTH = 100
OUTPUT_TAIL = 2000
_TAGS = ("tuple", "set", "frozenset", "dict", "bytes", "complex")


# ---- values across the boundary --------------------------------------------------------------------------------

def encode(value, depth=0):
    """A Python value as JSON-able data; containers other than lists are tagged so they decode to the same types."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"__t": "tuple", "v": [encode(v, depth + 1) for v in value]}
    if isinstance(value, frozenset):
        return {"__t": "frozenset", "v": [encode(v, depth + 1) for v in value]}
    if isinstance(value, set):
        return {"__t": "set", "v": [encode(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"__t": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        return {"__t": "bytes", "v": bytes(value).hex()}
    if isinstance(value, complex):
        return {"__t": "complex", "v": [value.real, value.imag]}
    raise TypeError(f"a value of type {type(value).__name__} cannot be passed to or from the candidate")


def decode(data, depth=0):
    """The inverse of encode, for untrusted data: builds only plain built-in values, never runs code."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(v, depth + 1) for v in data]
    if type(data) is dict and data.get("__t") in _TAGS and len(data) == 2 and "v" in data:
        tag, v = data["__t"], data["v"]
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if type(v) is not list:
            raise ValueError(f"malformed {tag} value")
        if tag == "complex" and len(v) == 2 and all(type(x) in (int, float) for x in v):
            return complex(v[0], v[1])
        if tag == "dict":
            if not all(type(p) is list and len(p) == 2 for p in v):
                raise ValueError("malformed dict value")
            return {decode(k, depth + 1): decode(x, depth + 1) for k, x in v}
        items = [decode(x, depth + 1) for x in v]
        return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    raise ValueError("malformed value from the candidate")


# ---- length-prefixed JSON frames on pipes ----------------------------------------------------------------------

def send_frame(fd, obj):
    data = json.dumps(obj).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        select.select([fd], [], [])  # interrupted by the judge's per-test alarm when the worker hangs
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def recv_frame(fd):
    (size,) = struct.unpack(">I", _read_exact(fd, 4))
    if size > MAX_FRAME:
        raise ValueError(f"message of {size} bytes is over the {MAX_FRAME}-byte limit")
    return json.loads(_read_exact(fd, size))


def describe(exc):
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:
        text = type(exc).__name__
    return text[:500]


# ---- the worker: runs the candidate ----------------------------------------------------------------------------

def worker_main(fd_in, fd_out):
    init = recv_frame(fd_in)
    _limit_cpu(init["cpu_s"])  # before any candidate code runs
    namespace = {"__name__": "__candidate__"}
    try:
        exec(compile(init["source"], "solution.py", "exec"), namespace)
        fn = namespace.get(init["entry_point"])
        if not callable(fn):
            raise NameError(f"the program does not define a function named {init['entry_point']!r}")
    except BaseException as e:  # SystemExit included: exiting at import is a failure to load
        send_frame(fd_out, {"error": describe(e)})
        return
    send_frame(fd_out, {"ok": True})
    while True:
        try:
            msg = recv_frame(fd_in)
        except EOFError:
            return
        try:
            value = fn(*decode(msg["args"]), **decode(msg["kwargs"]))
            reply = {"value": encode(value)}
        except BaseException as e:
            reply = {"error": describe(e)}
        send_frame(fd_out, reply)


# ---- the judge: holds the tests ---------------------------------------------------------------------------------

class TestTimeout(BaseException):
    """Raised by the per-test alarm; a BaseException so test code's ``except Exception`` cannot swallow it."""


class CandidateDied(Exception):
    pass


class CandidateError(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout()


def _alarm(seconds):
    import signal
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))


def _cancel_alarm():
    import signal
    signal.setitimer(signal.ITIMER_REAL, 0)


def _limit_cpu(cpu_s):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = max(1, int(cpu_s) + 1)
    if hard == resource.RLIM_INFINITY or want < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (want, hard))


def _child_limits(cpu_s):
    return lambda: _limit_cpu(cpu_s)


class Forked:
    """A process started with os.fork, with the part of subprocess.Popen's interface the judge uses."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        """Only called once the process is dying (killed, or its pipe closed): a blocking wait is short."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def prefork_worker(log_path):
    """Fork the first worker now, while this process holds nothing secret (the job is still unread on stdin): it
    saves an interpreter start per verification. Workers started after the job was read are exec'd fresh instead."""
    import io
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)  # the judge's stdin (the job) is never reachable from here
            os.dup2(log, 1)
            os.dup2(log, 2)
            for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
                if fd > 2 and fd not in (req_r, resp_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
            sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
            worker_main(req_r, resp_w)
            code = 0
        finally:
            os._exit(code)
    os.close(req_r)
    os.close(resp_w)
    return Forked(pid), req_w, resp_r


def _kill(proc):
    import signal
    import subprocess
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass


class Worker:
    """The candidate's process, restarted after it hangs or dies."""

    def __init__(self, job, log_path, preforked):
        self.job, self.log_path, self.proc = job, log_path, None
        self.to_worker = self.from_worker = -1
        self.preforked = preforked  # (process, to_worker, from_worker) forked before the job was read

    def start(self):
        import subprocess
        if self.preforked is not None:
            (self.proc, self.to_worker, self.from_worker), self.preforked = self.preforked, None
        else:
            self.stop()
            req_r, self.to_worker = os.pipe()
            self.from_worker, resp_w = os.pipe()
            try:
                with open(self.log_path, "ab") as log:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-I", "-S", "-u", os.path.abspath(__file__), "worker", str(req_r),
                         str(resp_w)],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(req_r, resp_w),
                        start_new_session=True)
            finally:
                os.close(req_r)
                os.close(resp_w)
        send_frame(self.to_worker, {"source": self.job["source"], "entry_point": self.job["entry_point"],
                                    "cpu_s": self.job["test_timeout_s"] * max(1, len(self.job["tests"]))})
        reply = self._reply()
        if "error" in reply:
            raise CandidateError(reply["error"])

    def _reply(self):
        try:
            reply = recv_frame(self.from_worker)
        except (EOFError, OSError):  # it exited, or closed its end of the pipe (then it is killed now)
            proc = self.proc
            self.stop()
            code = proc.returncode if proc is not None else None
            raise CandidateDied(f"the candidate's process exited (exit code {code})") from None
        except (ValueError, RecursionError) as e:  # oversized or garbled: the pipe is out of step, start afresh
            self.stop()
            raise CandidateDied(f"the candidate's process sent an unusable reply ({describe(e)})") from None
        if type(reply) is not dict:
            self.stop()
            raise CandidateDied("the candidate's process sent a malformed reply")
        return reply

    def call(self, args, kwargs):
        try:
            send_frame(self.to_worker, {"args": encode(list(args)), "kwargs": encode(dict(kwargs))})
        except BrokenPipeError:
            raise CandidateDied("the candidate's process exited") from None
        reply = self._reply()
        if "error" in reply:
            raise CandidateError(str(reply["error"])[:500])
        if "value" not in reply:
            self.stop()
            raise CandidateDied("the candidate's process sent a malformed reply")
        try:
            return decode(reply["value"])
        except (ValueError, RecursionError, TypeError) as e:
            raise CandidateError(f"unusable return value: {e}") from None

    def stop(self):
        if self.preforked is not None:
            (self.proc, self.to_worker, self.from_worker), self.preforked = self.preforked, None
        for fd in (self.to_worker, self.from_worker):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.to_worker = self.from_worker = -1
        if self.proc is not None:
            _kill(self.proc)
            self.proc = None


def _test_result(name, status, started, error=None):
    return {"name": name, "passed": status == "passed", "status": status, "error": error,
            "duration_s": round(time.monotonic() - started, 6)}


def _not_run(tests, reason):
    return [{"name": t["name"], "passed": False, "status": "not_run", "error": reason, "duration_s": 0.0}
            for t in tests]


def _load(worker, job, deadline):
    """Start the candidate; the error that stops every test if it does not load (syntax error, crash, hang)."""
    _alarm(min(job["test_timeout_s"], deadline - time.monotonic()))
    try:
        worker.start()
        return None
    except TestTimeout:
        return f"timeout: the program did not finish loading within {job['test_timeout_s']:g}s"
    except (CandidateError, CandidateDied) as e:
        return str(e)
    finally:
        _cancel_alarm()


def run_function_tests(job, deadline, workdir, preforked):
    """Call the candidate through the worker from the task's own test code; one result per test block."""
    namespace = {"__name__": "__judge__"}
    worker = Worker(job, os.path.join(workdir, "candidate-output.log"), preforked)
    exec(compile(job.get("prompt") or "", "prompt.py", "exec"), namespace)  # the task's helpers (trusted)

    def candidate(*args, **kwargs):
        return worker.call(args, kwargs)

    namespace["candidate"] = namespace[job["entry_point"]] = candidate
    exec(compile(job.get("test_setup") or "", "test_setup.py", "exec"), namespace)
    tests = job["tests"]
    import signal
    signal.signal(signal.SIGALRM, _on_alarm)
    load_error = _load(worker, job, deadline)
    if load_error is not None:
        worker.stop()
        return [dict(r, status="load_error") for r in _not_run(tests, load_error)], load_error
    results = []
    for i, test in enumerate(tests):
        left = deadline - time.monotonic()
        if left <= 0.05:
            results += _not_run(tests[i:], "time budget of the run exhausted")
            break
        started = time.monotonic()
        _alarm(min(job["test_timeout_s"], left))
        try:
            if worker.proc is None:  # the previous test hung or crashed it
                worker.start()
            exec(compile(test["code"], test["name"], "exec"), namespace)
            status, error = "passed", None
        except TestTimeout:
            status, error = "timeout", f"no answer within {job['test_timeout_s']:g}s"
            worker.stop()
        except CandidateDied as e:
            status, error = "crashed", str(e)
            worker.stop()
        except CandidateError as e:
            status, error = "exception", str(e)
        except AssertionError as e:
            status, error = "wrong_answer", describe(e) if str(e) else "assertion failed"
        except BaseException as e:  # the test code itself failed on the candidate's answer
            status, error = "exception", describe(e)
        finally:
            _cancel_alarm()
        results.append(_test_result(test["name"], status, started, error))
    worker.stop()
    return results, None


def _normalize(text):
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def run_stdio_tests(job, deadline, workdir, preforked):
    """Run the program once per test with the test's stdin; compare its stdout with the expected output."""
    import subprocess
    Worker(job, "", preforked).stop()  # no function to call: the early worker is not needed
    program = os.path.join(workdir, "solution.py")
    with open(program, "w") as f:
        f.write(job["source"])
    results = []
    tests = job["tests"]
    for i, test in enumerate(tests):
        left = deadline - time.monotonic()
        if left <= 0.05:
            results += _not_run(tests[i:], "time budget of the run exhausted")
            break
        timeout = min(job["test_timeout_s"], left)
        started = time.monotonic()
        out_path = os.path.join(workdir, f"stdout-{i}.txt")
        with open(out_path, "w+b") as out, open(os.path.join(workdir, "candidate-output.log"), "ab") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-u", program], stdin=subprocess.PIPE, stdout=out,
                                    stderr=err, cwd=workdir, start_new_session=True,
                                    preexec_fn=_child_limits(job["test_timeout_s"]))
            try:
                proc.communicate(test["input"].encode(), timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            except BrokenPipeError:  # it exited without reading its input
                proc.wait(timeout=timeout)
                timed_out = False
            _kill(proc)
            out.seek(0)
            got = out.read(len(test["output"].encode()) * 2 + 4096).decode("utf-8", errors="replace")
        os.unlink(out_path)
        if timed_out:
            status, error = "timeout", f"no exit within {job['test_timeout_s']:g}s"
        elif proc.returncode != 0:
            status, error = "nonzero_exit", f"exit code {proc.returncode}"
        elif _normalize(got) != _normalize(test["output"]):
            status, error = "wrong_output", f"expected {test['output'][:200]!r}, got {got[:200]!r}"
        else:
            status, error = "passed", None
        results.append(_test_result(test["name"], status, started, error))
    return results, None


def _make_undumpable():
    """After this, same-uid processes without capabilities cannot read our memory, fds or environment."""
    import ctypes
    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _tail(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - OUTPUT_TAIL))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def judge_main():
    import tempfile
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="judge-")
    preforked = prefork_worker(os.path.join(workdir, "candidate-output.log"))
    job = json.loads(sys.stdin.buffer.read(MAX_JOB))
    _make_undumpable()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # nothing the candidates start can read what we were sent
    verdict = {"nonce": job["nonce"]}
    try:
        deadline = started + float(job["budget_s"])
        run = run_function_tests if job["kind"] == "function" else run_stdio_tests
        verdict["tests"], verdict["load_error"] = run(job, deadline, workdir, preforked)
        verdict["candidate_output"] = _tail(os.path.join(workdir, "candidate-output.log"))
    except BaseException as e:  # a failure of the harness or of the task's own code, never a pass
        verdict["harness_error"] = describe(e)
    line = (VERDICT_PREFIX + json.dumps(verdict) + "\n").encode()
    view = memoryview(line)
    while view:
        view = view[os.write(1, view):]


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        judge_main()
