"""What runs in a candidate's process: its function, served to the judge call by call, or its whole program.

Everything here runs next to untrusted code, which can patch any of it; that is fine, because the judge trusts
nothing it gets from this process beyond plain data (values.py) and a candidate can only ever spoil its own answer.
"""

import builtins
import fcntl
import io
import os
import resource
import signal
import sys
import types

from .values import MUTABLE, Unsupported, _kind, dump, load
from .wire import describe, recv_frame, send_frame

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
# How this interpreter set up its own standard streams: a candidate's program gets the same.
STREAMS = {"encoding": sys.__stdout__.encoding if sys.__stdout__ else "utf-8",
           "errors": sys.__stdout__.errors if sys.__stdout__ else "strict"}

# Exceptions that mean "stop" to the judge's own control flow, never re-raised there as the candidate's exception.
NOT_RERAISED = ("BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "StopIteration",
                "StopAsyncIteration", "BaseExceptionGroup", "ExceptionGroup")


def run_function_worker(rpc_in, rpc_out, source, entry_point):
    """Load the program, then answer {"call": message} and {"next": handle} until the judge closes the pipe."""
    namespace = {"__name__": "__candidate__"}
    try:
        exec(compile(source, "solution.py", "exec"), namespace)
        fn = namespace.get(entry_point)
        if not callable(fn):
            raise NameError(f"the program does not define a function named {entry_point!r}")
    except BaseException as e:  # SystemExit included: exiting at import is a failure to load
        send_frame(rpc_out, {"error": describe(e)})
        return 0
    send_frame(rpc_out, {"ok": True})
    iterators = []

    def remote(value):  # an iterator stays here; the judge gets a handle and asks for one item at a time
        if hasattr(type(value), "__next__"):
            iterators.append(value)
            return ["h", len(iterators) - 1]
        return None

    def iterator(handle):
        if not 0 <= handle < len(iterators):
            raise ValueError(f"no iterator {handle}")
        return iterators[handle]

    while True:
        try:
            request = recv_frame(rpc_in)
        except EOFError:
            return 0
        reply = _serve(request, fn, remote, iterator)
        try:
            send_frame(rpc_out, reply)
        except ValueError as e:  # over the frame limit
            send_frame(rpc_out, {"unsupported": f"the answer is too large to send ({e})"})


def _serve(request, fn, remote, iterator):
    objects = []
    try:
        if "call" in request:
            (args, kwargs), objects = load(request["call"], remote=iterator)
            outcome = ("value", fn(*args, **kwargs))
        else:
            outcome = ("value", next(iterator(request["next"])))
    except StopIteration:
        outcome = ("stop", None) if "next" in request else ("raise", StopIteration())
    except BaseException as e:
        outcome = ("raise", e)
    # the arguments as they are now: the judge updates its own objects to match
    originals = {id(obj): i for i, obj in enumerate(objects)}
    mutable = [obj for obj in objects if _kind(obj) in MUTABLE]
    kind, value = outcome
    try:
        if kind == "value":
            return {"value": dump([value], originals, mutable, remote)[0]}
        if kind == "stop":
            return {"stop": dump([], originals, mutable, remote)[0]}
        return _raised(value, originals, mutable, remote)
    except Unsupported as e:
        return {"unsupported": str(e)}
    except BaseException as e:  # e.g. MemoryError, or a container changed by a thread while it was being encoded
        return {"unsupported": f"the candidate's value could not be sent back: {describe(e)}"}


def _raised(exc, originals, mutable, remote):
    """The exception as its nearest built-in class and arguments, so ``except ValueError`` in a test catches it."""
    base = next((c for c in type(exc).__mro__ if c.__module__ == "builtins"), BaseException)
    args = exc.args if type(exc) is base else (str(exc),)
    try:
        message = dump([tuple(args)], originals, mutable, remote)[0]
    except BaseException:
        message = dump([(describe(exc),)], originals, mutable, remote)[0]
    return {"raise": base.__name__, "text": describe(exc), "args": message}


# ---- the process itself -----------------------------------------------------------------------------------------

def candidate_main(request, fds):
    """In a fresh fork of the zygote or the launcher (never of the judge): fds 0-2 as given, the rest closed, then
    the candidate's code. Never returns."""
    from .launcher import prctl
    code = 1
    try:
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        prctl(PR_SET_DUMPABLE, 1)  # an ordinary process of its own (a launcher is not)
        prctl(PR_SET_CHILD_SUBREAPER, 0)  # an ordinary process: its orphans are not its own
        source = _place_fds(request["mode"], fds)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _limit_cpu(request["cpu_s"])
        if "random" in sys.modules:
            sys.modules["random"].seed()
        if request["mode"] == "function":
            _std_streams(unbuffered=True)
            code = run_function_worker(3, 4, source, request["entry_point"])
        else:
            _std_streams(unbuffered=False)
            code = run_program(source)
    finally:
        os._exit(code)


def _place_fds(mode, fds):
    """``fds`` are [a, b, log, source]. stdio: a -> stdin, b -> stdout, log -> stderr; function: /dev/null -> stdin,
    log -> stdout and stderr, a (requests) -> 3, b (replies) -> 4. Every other fd is closed. Returns the source."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in fds]  # above the targets: no dup2 below hits one in use
    size = os.fstat(high[3]).st_size
    source = os.pread(high[3], size, 0).decode("utf-8", errors="replace")
    a, b, log = high[:3]
    if mode == "stdio":
        targets = {0: a, 1: b, 2: log}
    else:
        targets = {0: fcntl.fcntl(os.open(os.devnull, os.O_RDONLY), fcntl.F_DUPFD, 16), 1: log, 2: log, 3: a, 4: b}
    for target, fd in targets.items():
        os.dup2(fd, target)
    os.closerange(max(targets) + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return source


def _limit_cpu(cpu_s):
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = max(1, int(cpu_s) + 1)
    if hard == resource.RLIM_INFINITY or want < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (want, min(want + 1, hard) if hard != resource.RLIM_INFINITY
                                                 else want + 1))


def _std_streams(unbuffered):
    """What a fresh interpreter would have on fds 0-2: block-buffered stdout, line-buffered stderr; ``unbuffered``
    (a function's worker, killed rather than exiting) writes everything through at once, as ``python -u`` does."""
    enc, err = STREAMS["encoding"], STREAMS["errors"]

    def writer(fd):
        raw = io.FileIO(fd, "w", closefd=False)
        return raw if unbuffered else io.BufferedWriter(raw)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                                 encoding=enc, errors=err)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(writer(1), encoding=enc, errors=err, write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(writer(2), encoding=enc, errors="backslashreplace",
                                                   line_buffering=True, write_through=unbuffered)


def run_program(source):
    """A stdin/stdout program, run as ``python solution.py`` would run it; returns its exit code."""
    main = types.ModuleType("__main__")
    main.__file__ = "/workspace/solution.py"
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = ["solution.py"]
    try:
        exec(compile(source, "solution.py", "exec"), main.__dict__)
        code = 0
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    return _shutdown(code)


def _exit_code(exc):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    try:
        print(exc.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _shutdown(code):
    """What the interpreter does on exit: join threads, run atexit handlers, flush (a failed flush is exit 120)."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    atexit = sys.modules.get("atexit")
    if atexit is not None:
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            code = 120 if code == 0 else code
    return code
