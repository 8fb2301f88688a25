"""Function tasks, the judge's side: the task's own test code runs here and calls the candidate's function, which runs
in a worker process started by the launcher. Only plain values cross (values.py); the judge decides every verdict."""

import builtins
import os
import signal
import time

from .candidate import NOT_RERAISED
from .launcher import LauncherGone, memfd_with
from .values import Unsupported, dump, load
from .wire import describe, recv_frame, send_frame


class TestTimeout(BaseException):
    """Raised by the per-test alarm; a BaseException so test code's ``except Exception`` cannot swallow it."""


class CandidateDied(BaseException):
    """The candidate's process is gone or out of step. Not an Exception: a test expecting the candidate to *raise*
    must not pass because it crashed."""


class UnsupportedValue(BaseException):
    """A value that cannot cross the boundary faithfully: reported as ``unsupported_value``, never as a pass."""


class CandidateError(Exception):
    """The candidate raised an exception with no built-in class to re-raise it as."""


class CandidateBaseError(BaseException):
    """Like CandidateError, for what the candidate raised that is no Exception (SystemExit and the like)."""


def _on_alarm(signum, frame):
    raise TestTimeout()


def alarm(seconds):
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))


def cancel_alarm():
    signal.setitimer(signal.ITIMER_REAL, 0)


class RemoteIterator:
    """An iterator that lives in the candidate's process; ``next()`` asks it for one item."""

    def __init__(self, worker, handle):
        self.worker, self.handle, self.generation = worker, handle, worker.generation

    def __iter__(self):
        return self

    def __next__(self):
        return self.worker.next(self)

    def __repr__(self):
        return f"<iterator {self.handle} of the candidate>"


class Worker:
    """The candidate's worker process, restarted (as a fresh fork of the launcher) after it hangs or dies."""

    def __init__(self, job, launcher, log_fd):
        self.job, self.launcher, self.log_fd = job, launcher, log_fd
        self.pid, self.generation = None, 0
        self.to_worker = self.from_worker = -1

    def start(self):
        self.stop()
        self.generation += 1
        req_r, self.to_worker = os.pipe()
        self.from_worker, resp_w = os.pipe()
        source = memfd_with("source", self.job["source"].encode())
        request = {"mode": "function", "entry_point": self.job["entry_point"],
                   "cpu_s": self.job["test_timeout_s"] * max(1, len(self.job["tests"]))}
        fds = [req_r, resp_w, self.log_fd, source]
        try:
            self.pid = self.launcher.launch(request, fds)
        except LauncherGone as e:
            self.stop()
            raise CandidateDied(f"the candidate's process could not be started: {e}") from None
        finally:
            for fd in (req_r, resp_w, source):
                os.close(fd)
        reply = self._reply()
        if "error" in reply:
            raise CandidateError(str(reply["error"])[:500])

    def _reply(self):
        try:
            reply = recv_frame(self.from_worker)
        except (EOFError, OSError):  # it exited, or closed its end of the pipe
            code = self.launcher.wait_exit(self.pid, 0.2) if self.pid is not None else None
            self.stop()
            raise CandidateDied(f"the candidate's process exited (exit code {code})") from None
        except (ValueError, RecursionError) as e:  # oversized or garbled: the pipe is out of step, start afresh
            self.stop()
            raise CandidateDied(f"the candidate's process sent an unusable reply ({describe(e)})") from None
        if type(reply) is not dict:
            self.stop()
            raise CandidateDied("the candidate's process sent a malformed reply")
        return reply

    def _remote(self, value):
        if isinstance(value, RemoteIterator) and value.worker is self and value.generation == self.generation:
            return ["h", value.handle]
        return None

    def _exchange(self, request, originals):
        try:
            send_frame(self.to_worker, request)
        except (BrokenPipeError, OSError):
            self.stop()
            raise CandidateDied("the candidate's process exited") from None
        reply = self._reply()
        try:
            outcome = self._outcome(reply, originals)
        except Exception as e:  # a reply we cannot decode: the candidate's value is unusable
            raise CandidateBaseError(f"the candidate sent an unusable value ({describe(e)})") from None
        if outcome is None:
            self.stop()
            raise CandidateDied("the candidate's process sent a malformed reply")
        kind, value = outcome
        if kind == "raise":
            raise value
        return value

    def _outcome(self, reply, originals):
        """("return", value) or ("raise", exception) for a reply; None if it is none of the known kinds."""
        def decode(message):
            return load(message, originals, lambda handle: RemoteIterator(self, handle))[0]

        if "value" in reply:
            return "return", decode(reply["value"])[0]
        if "stop" in reply:
            decode(reply["stop"])
            return "raise", StopIteration()
        if "unsupported" in reply:
            return "raise", UnsupportedValue(str(reply["unsupported"])[:500])
        if "raise" not in reply:
            return None
        args = decode(reply["args"])[0]
        text = str(reply.get("text", ""))[:500]
        cls = getattr(builtins, str(reply["raise"]), None)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)) or cls.__name__ in NOT_RERAISED:
            plain = isinstance(cls, type) and issubclass(cls, Exception)
            return "raise", (CandidateError if plain else CandidateBaseError)(text)
        try:
            return "raise", cls(*args) if type(args) is tuple else cls(text)
        except Exception:
            return "raise", CandidateError(text)

    def call(self, args, kwargs):
        if self.pid is None:
            raise CandidateDied("the candidate's process is not running")
        try:
            message, originals = dump([tuple(args), dict(kwargs)], remote=self._remote, materialize=True)
        except Unsupported as e:
            raise UnsupportedValue(str(e)) from None
        return self._exchange({"call": message}, originals)

    def next(self, iterator):
        if iterator.generation != self.generation or self.pid is None:
            raise CandidateDied("the candidate's process was restarted; its iterator is gone")
        return self._exchange({"next": iterator.handle}, [])

    def stop(self):
        for fd in (self.to_worker, self.from_worker):
            if fd >= 0:
                os.close(fd)
        self.to_worker = self.from_worker = -1
        if self.pid is not None:
            self.pid = None
            self.launcher.kill_all()


def test_result(name, status, started, error=None):
    return {"name": name, "passed": status == "passed", "status": status, "error": error,
            "duration_s": round(time.monotonic() - started, 6)}


def not_run(tests, reason, status="not_run"):
    return [{"name": t["name"], "passed": False, "status": status, "error": reason, "duration_s": 0.0}
            for t in tests]


def _load(worker, job, deadline):
    """Start the candidate; the error that stops every test if it does not load (syntax error, crash, hang)."""
    alarm(min(job["test_timeout_s"], deadline - time.monotonic()))
    try:
        worker.start()
        return None
    except TestTimeout:
        return f"timeout: the program did not finish loading within {job['test_timeout_s']:g}s"
    except (CandidateError, CandidateDied) as e:
        return str(e)
    finally:
        cancel_alarm()


def run_function_tests(job, deadline, launcher, log_fd):
    """Call the candidate through the worker from the task's own test code; one result per test block."""
    namespace = {"__name__": "__judge__"}
    worker = Worker(job, launcher, log_fd)
    exec(compile(job.get("prompt") or "", "prompt.py", "exec"), namespace)  # the task's helpers (trusted)

    def candidate(*args, **kwargs):
        return worker.call(args, kwargs)

    namespace["candidate"] = namespace[job["entry_point"]] = candidate
    exec(compile(job.get("test_setup") or "", "test_setup.py", "exec"), namespace)
    tests = job["tests"]
    signal.signal(signal.SIGALRM, _on_alarm)
    load_error = _load(worker, job, deadline)
    if load_error is not None:
        worker.stop()
        return not_run(tests, load_error, status="load_error"), load_error
    results = []
    for i, test in enumerate(tests):
        left = deadline - time.monotonic()
        if left <= 0.05:
            results += not_run(tests[i:], "time budget of the run exhausted")
            break
        started = time.monotonic()
        alarm(min(job["test_timeout_s"], left))
        try:
            if worker.pid is None:  # the previous test hung or crashed it
                worker.start()
            exec(compile(test["code"], test["name"], "exec"), namespace)
            status, error = "passed", None
        except TestTimeout:
            status, error = "timeout", f"no answer within {job['test_timeout_s']:g}s"
            worker.stop()
        except CandidateDied as e:
            status, error = "crashed", str(e)
            worker.stop()
        except UnsupportedValue as e:
            status, error = "unsupported_value", str(e)
        except AssertionError as e:
            status, error = "wrong_answer", describe(e) if str(e) else "assertion failed"
        except BaseException as e:  # the candidate raised, or the test code failed on the candidate's answer
            status, error = "exception", describe(e)
        finally:
            cancel_alarm()
        results.append(test_result(test["name"], status, started, error))
    worker.stop()
    return results, None
