"""The launcher: a process the judge forks *before* it reads its job, and which forks every candidate process.

A fork copies memory. Once the judge has read the job its memory holds the hidden tests; the launcher's never does,
so what it forks (the candidate's worker, one process per stdin/stdout test) starts with nothing of the tests in it,
without paying an interpreter start.

Where the judge holds capabilities (a warm sandbox's job init, before it drops them), the launcher is pid 1 of a
pid namespace of its own, with its own /proc, and drops them too. Candidate processes then see only the launcher and
each other, cannot signal the launcher (the kernel drops signals to an init from inside its namespace), and
``kill(-1)`` from the launcher reaches every process they started, setsid daemons included, and nothing else: that is
how the judge leaves nothing running between tests. Without capabilities (the rlimit backend) the launcher is a
subreaper and walks its tree in /proc instead, which the kernel does not promise to be exact while processes fork and
exit, so it repeats until two scans a few milliseconds apart find nothing.

Protocol on a SOCK_SEQPACKET pair: judge -> ``{"mode": "function"|"stdio", ...}`` with file descriptors attached
(stdin or requests, stdout or replies, the output log, the source in a memfd), or ``{"kill_all": true}``;
launcher -> ``{"pid": n}``, ``{"killed": true}``, and ``{"exit": n, "code": c}`` when a launched process ends.
"""

import ctypes
import json
import os
import resource
import select
import signal
import socket
import time

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
CLONE_NEWPID = 0x20000000
MESSAGE = 1 << 16
_libc = ctypes.CDLL(None, use_errno=True)


class LauncherGone(Exception):
    """The launcher died (only possible without its own pid namespace): no candidate process can be started."""


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

    def __init__(self, isolate=False):
        """``isolate``: we hold CAP_SYS_ADMIN (see the module docstring); the launcher gets its own namespaces."""
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # if a launcher without its own namespace dies, its orphans come to us
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if isolate:
            import inside
            own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
            inside.unshare(CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _launcher_main(theirs, isolate)
        if isolate:
            inside.setns(own_pid_ns, CLONE_NEWPID)  # our own later children stay in our namespace
            os.close(own_pid_ns)
        theirs.close()
        self.sock, self.pid, self.exits, self.alive, self.isolated = ours, pid, {}, True, isolate

    def _send(self, request, fds=()):
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], list(fds))
        except OSError:
            self.alive = False
            raise LauncherGone("the candidate's launcher is gone (killed by the candidate?)") from None

    def launch(self, request, fds):
        """Start one candidate process; its pid."""
        self._send(request, fds)
        while True:
            message = self.receive(None)
            if "pid" in message:
                return message["pid"]

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
            self.alive = False
            raise LauncherGone("the candidate's launcher is gone (killed by the candidate?)")
        message = json.loads(data)
        if "exit" in message:
            self.exits[message["exit"]] = message["code"]
        return message

    def kill_all(self):
        """Every process a candidate started is dead when this returns (the launcher itself lives on)."""
        if self.alive:
            try:
                self._send({"kill_all": True})
                while "killed" not in self.receive(None):
                    pass
                return
            except LauncherGone:
                pass
        kill_tree(os.getpid(), keep={os.getpid()})  # the launcher died: what it left came to us (a subreaper)

    def close(self):
        if self.alive:
            self.kill_all()
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        if not self.isolated:
            kill_tree(os.getpid(), keep={os.getpid()})


def kill_tree(root, keep):
    """SIGKILL ``root``'s tree but ``keep`` until two scans a few ms apart find nothing alive; reap our children."""
    empty_scans = 0
    while empty_scans < 2:
        found = [pid for pid in descendants(root) if pid not in keep]
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap_children()
        empty_scans = 0 if found else empty_scans + 1
        time.sleep(0.002 if not found else 0.0005)


def reap_children(report=None):
    """Collect our children that have exited, telling ``report(pid, code)`` about each."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if report is not None:
            report(pid, os.waitstatus_to_exitcode(status))


def descendants(root):
    """Live processes in ``root``'s tree, root included, found by walking /proc/PID/task/TID/children from root
    (only the tree is read, however many processes the machine has)."""
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

def _launcher_main(sock, isolated):
    code = 0
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if isolated:  # pid 1 of our own pid namespace: our own /proc, then no capability left
            import inside
            inside.unshare(inside.CLONE_NEWNS)
            inside.mount(b"none", "/", None, inside.MS_REC | inside.MS_PRIVATE)
            inside.mount_proc()
            inside.drop_capabilities()
        else:  # what candidates start stays in our tree
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

        def report(pid, code):
            if pid in launched:
                launched.discard(pid)
                sock.send(json.dumps({"exit": pid, "code": code}).encode())

        while True:
            readable = select.select([sock, wake_r], [], [])[0]
            if wake_r in readable:
                os.read(wake_r, 4096)
            reap_children(report)
            if sock not in readable:
                continue
            data, fds, _, _ = socket.recv_fds(sock, MESSAGE, 8)
            if not data:
                break  # the judge is done
            request = json.loads(data)
            if request.get("kill_all"):
                _kill_everything(isolated, report)
                sock.send(b'{"killed": true}')
                continue
            pid = os.fork()
            if pid == 0:
                sock.close()
                from .candidate import candidate_main
                candidate_main(request, fds)
            for fd in fds:
                os.close(fd)
            launched.add(pid)
            sock.send(json.dumps({"pid": pid}).encode())
    except BaseException:
        code = 1
    os._exit(code)


def _kill_everything(isolated, report):
    if not isolated:
        kill_tree(os.getpid(), keep={os.getpid()})
        reap_children(report)
        return
    try:  # from pid 1 of a pid namespace: exactly every other process in it
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:  # every process of the namespace is our child or was handed to us: when none is left, all are gone
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        report(pid, os.waitstatus_to_exitcode(status))
