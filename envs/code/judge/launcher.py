"""How the judge starts candidate processes, learns their exit codes and kills everything they started.

The processes must start with nothing of the hidden tests in their memory, so they are never forks of the judge
(which holds the job):

* in a warm sandbox the zygote forks them straight into the job's namespaces (``ZygoteLauncher``): copies of a
  process that never held a job. The judge is pid 1 of the job's pid namespace, so ``kill(-1)`` from it reaches every
  process a candidate started, setsid daemons included, and nothing else: that is how nothing outlives a test.
* otherwise (one sandbox per run) the judge forks a launcher *before* it reads the job, and the launcher forks them
  (``ForkLauncher``). The launcher is a subreaper: what a candidate starts stays in its tree, which it walks in /proc
  to kill; the kernel does not promise /proc to be exact while processes fork and exit (a child forked a moment
  ago can be missing), so it repeats until two scans a few milliseconds apart find nothing.

The ForkLauncher's protocol on a SOCK_SEQPACKET pair: judge -> ``{"spawn": request}`` with file descriptors attached
(stdin or requests, stdout or replies, the output log, the source in a memfd), or ``{"kill_all": true}``;
launcher -> ``{"spawned": n}``, ``{"killed": true}``, and ``{"exited": n, "code": c}`` when a child ends.
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
MESSAGE = 1 << 16
_libc = ctypes.CDLL(None, use_errno=True)


class LauncherGone(Exception):
    """No candidate process can be started any more (a ForkLauncher killed by the candidate)."""


def prctl(option, value):
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def memfd_with(name, data):
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


class ZygoteLauncher:
    """Warm: children forked by the zygote into our namespaces; we are pid 1 there."""

    def __init__(self, spawner):
        self.spawner, self.exits = spawner, spawner.exits

    def fileno(self):
        return self.spawner.fileno()

    def launch(self, request, fds):
        try:
            return self.spawner.spawn(request, fds)
        except OSError as e:
            raise LauncherGone(str(e)) from None

    def receive(self, timeout):
        return self.spawner.receive(timeout)

    def wait_exit(self, pid, timeout):
        """The exit code of a child (negative: killed by that signal), or None if it is still running."""
        deadline = time.monotonic() + timeout
        while pid not in self.exits and time.monotonic() < deadline:
            self.receive(max(deadline - time.monotonic(), 0))
        return self.exits.pop(pid, None)

    def kill_all(self):
        """From pid 1: kill(-1) until nothing is left (inside.kill_the_rest)."""
        import inside
        inside.kill_the_rest()

    def close(self):
        self.kill_all()


class ForkLauncher:
    """One sandbox per run: a launcher process forked before the job is read."""

    def __init__(self):
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # if the launcher dies, what it left comes to us
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _launcher_main(theirs)
        theirs.close()
        self.sock, self.pid, self.exits, self.alive = ours, pid, {}, True

    def fileno(self):
        return self.sock.fileno()

    def _send(self, request, fds=()):
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], list(fds))
        except OSError:
            self.alive = False
            raise LauncherGone("the candidate's launcher is gone (killed by the candidate?)") from None

    def launch(self, request, fds):
        """Start one candidate process; its pid."""
        self._send({"spawn": request}, fds)
        while True:
            message = self.receive(None)
            if "spawned" in message:
                return message["spawned"]

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
        if "exited" in message:
            self.exits[message["exited"]] = message["code"]
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

def _launcher_main(sock):
    code = 0
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # what candidates start stays in our tree
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
                sock.send(json.dumps({"exited": pid, "code": code}).encode())

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
                kill_tree(os.getpid(), keep={os.getpid()})
                reap_children(report)
                sock.send(b'{"killed": true}')
                continue
            pid = os.fork()
            if pid == 0:
                sock.close()
                from .candidate import candidate_main
                candidate_main(request["spawn"], fds)
            for fd in fds:
                os.close(fd)
            launched.add(pid)
            sock.send(json.dumps({"spawned": pid}).encode())
    except BaseException:
        code = 1
    os._exit(code)
