"""What runs in a candidate's process: its function, served to the judge call by call, or its whole program.

Everything here runs next to untrusted code, which can patch any of it; that is fine, because the judge trusts
nothing it gets from this process beyond plain data (values.py) and a candidate can only ever spoil its own answer.
"""

import builtins
import sys
import types

from .values import MUTABLE, Unsupported, _kind, dump, load
from .wire import describe, recv_frame, send_frame

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
