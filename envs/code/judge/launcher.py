"""The launcher: a process the judge forks *before* it reads its job, and which starts the candidate's processes.

A fork copies memory. Once the judge has read the job its memory holds the hidden tests; the launcher's never does,
so what it forks (one process per stdin/stdout test) starts with nothing of the tests in it, without paying an
interpreter start. For a function task the launcher itself *becomes* the candidate's worker (one fork less); a worker
restarted after a hang or crash is a freshly exec'd interpreter. Launcher and judge are subreapers: whatever a
candidate starts, setsid daemons included, stays in the judge's tree, and the judge kills all of it between tests
and at the end.

Protocol on a SOCK_SEQPACKET pair: judge -> ``{"mode": "function"|"stdio", ...}`` with file descriptors attached
(stdin or requests, stdout or replies, the output log, the source in a memfd); launcher -> ``{"pid": n}``, and
``{"exit": n, "code": c}`` when a launched process ends.
"""

import ctypes
import fcntl
import io
import json
import os
import resource
import select
import signal
import socket
import sys
import time

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
MESSAGE = 1 << 16
# How this interpreter set up its own standard streams: a candidate's program gets the same.
STREAMS = {"encoding": sys.__stdout__.encoding if sys.__stdout__ else "utf-8",
           "errors": sys.__stdout__.errors if sys.__stdout__ else "strict"}
_libc = ctypes.CDLL(None, use_errno=True)


class LauncherGone(Exception):
    """The launcher died (the candidate can kill it): no further candidate process can be started."""


def prctl(option, value):
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def memfd_with(name, data):
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


class Launcher:
    """The judge's side: start candidate processes, learn their exit codes, kill everything they started."""

    def __init__(self):
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # if the launcher dies, what it started stays in our tree (kill_all)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _launcher_main(theirs)
        theirs.close()
        self.sock, self.pid, self.exits, self.alive = ours, pid, {}, True
        self.launching = True  # False once the launcher has become a worker (or died)

    def launch(self, request, fds):
        """Start one candidate process; its pid. With ``"become": True`` the launcher turns into that process."""
        if not self.launching:
            raise LauncherGone("the candidate's launcher is gone (it became the worker, or was killed)")
        try:
            if request.get("become"):
                self.launching = False
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
            while True:
                message = self.receive(None)
                if "pid" in message:
                    return message["pid"]
        except OSError:
            self.alive = self.launching = False
            raise LauncherGone("the candidate's launcher is gone (killed by the candidate?)") from None

    def wait_exit(self, pid, timeout):
        """The exit code of a launched process (negative: killed by that signal), or None if still running or if
        the launcher is gone."""
        deadline = time.monotonic() + timeout
        while pid not in self.exits:
            left = deadline - time.monotonic()
            if left <= 0 or not self.alive:
                return None
            try:
                self.receive(left)
            except LauncherGone:
                return None
        return self.exits.pop(pid)

    def receive(self, timeout):
        """One message from the launcher, {} after ``timeout`` seconds; exit notices are kept in ``exits``."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return {}
        data = self.sock.recv(MESSAGE)
        if not data:
            self.alive = self.launching = False
            raise LauncherGone("the candidate's launcher is gone (killed by the candidate?)")
        message = json.loads(data)
        if "exit" in message:
            self.exits[message["exit"]] = message["code"]
        return message

    def kill_all(self):
        """SIGKILL every process in the judge's tree but the judge and a launcher still launching, until none is
        left alive; reap the judge's own dead children."""
        keep = {os.getpid(), self.pid} if self.launching else {os.getpid()}
        while True:
            found = [pid for pid in descendants(os.getpid()) if pid not in keep]
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reap_children()
            if not found:
                return
            time.sleep(0.0005)

    def close(self):
        self.sock.close()
        self.launching = False
        self.kill_all()


def reap_children():
    """Collect the judge's children that have exited (a worker it started, orphans it adopted)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def exit_code(pid, timeout):
    """The exit code of the judge's own child ``pid`` once it has exited (negative: signal), None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.002)


def spawn_fresh(request, fds):
    """A candidate process exec'd from a fresh interpreter (the launcher is used up): its pid."""
    for fd in fds:
        os.set_inheritable(fd, True)
    main = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
    argv = [sys.executable, "-I", "-S", main, "candidate", json.dumps(request), *map(str, fds)]
    return os.posix_spawn(sys.executable, argv, {k: v for k, v in os.environ.items()})


def descendants(root):
    """Live processes in ``root``'s tree, root included, found by walking /proc/PID/task/TID/children from root
    (only the tree is read, however many processes the machine has; racy, so kill_all repeats until none)."""
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            for child in children:
                if child not in found and _alive(child):
                    found.add(child)
                    frontier.append(child)
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] != b"Z"


# ---- the launcher process ------------------------------------------------------------------------------------------

def _launcher_main(sock):
    code = 0
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        prctl(PR_SET_DUMPABLE, 0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        launched = set()
        while True:
            readable = select.select([sock, wake_r], [], [])[0]
            if wake_r in readable:
                os.read(wake_r, 4096)
            _reap(sock, launched)
            if sock in readable:
                data, fds, _, _ = socket.recv_fds(sock, MESSAGE, 8)
                if not data:
                    break  # the judge is done
                request = json.loads(data)
                if request.get("become"):  # nothing launched yet, and nothing will be: be the worker
                    sock.send(json.dumps({"pid": os.getpid()}).encode())
                    sock.close()
                    candidate_main(request, fds)
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    candidate_main(request, fds)
                for fd in fds:
                    os.close(fd)
                launched.add(pid)
                sock.send(json.dumps({"pid": pid}).encode())
    except BaseException:
        code = 1
    os._exit(code)


def _reap(sock, launched):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in launched:
            launched.discard(pid)
            sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


# ---- a candidate process ---------------------------------------------------------------------------------------------

def candidate_main(request, fds):
    """In a fresh fork of the launcher: fds 0-2 as given, the rest closed, then the candidate's code. Never returns."""
    code = 1
    try:
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        prctl(PR_SET_DUMPABLE, 1)  # an ordinary process of its own (the launcher is not)
        prctl(PR_SET_CHILD_SUBREAPER, 0)  # its orphans go to the judge, as another's would go to init
        source = _place_fds(request["mode"], fds)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _limit_cpu(request["cpu_s"])
        if "random" in sys.modules:
            sys.modules["random"].seed()
        from .candidate import run_function_worker, run_program
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
