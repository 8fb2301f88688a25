"""The zygote of a warm sandbox. It runs INSIDE bwrap (stdlib only) and gives every job a fresh, isolated process.

Started once per warm sandbox as ``python -I -S /harness/zygote.py MODULE SETTINGS`` (``MODULE`` under /harness
defines ``handle(read_payload, spawner) -> bytes`` and ``child(request, fds)``; ``SETTINGS`` is JSON with
``tmp_mb``), it imports the module once, then per job:

    zygote (keeps CAP_SYS_ADMIN, SYS_CHROOT, NET_ADMIN, SETPCAP in the sandbox's user namespace; runs no job code,
            never holds a job's data; kills a job at its wall-clock limit)
      -> job init, pid 1 of a new pid namespace, in new mount, ipc, uts and network namespaces: fresh tmpfs at
         /tmp, /workspace and /dev/shm, a fresh /proc, its own loopback, a fresh session keyring, then every
         capability dropped and non-dumpable. Only then does it read a job (header and payload) from stdin, lower
         its rlimits to the job's and call ``handle``, which holds the job (e.g. hidden tests).
      -> child processes, forked by the zygote on the handler's request (``spawner.spawn``) straight into the job's
         namespaces, with the job's rlimits and no capability: they run ``child`` (e.g. the untrusted candidate).
         Being copies of the zygote, they hold nothing of any job but what they are handed.

When ``handle`` returns, the init kills every other process of its pid namespace (``kill(-1)`` from pid 1 reaches
exactly those, including setsid daemons and processes too new to be listed in /proc yet) until none is left; only
then does the result go out. When the init exits, the namespaces, their tmpfs and their IPC objects go too. The
zygote then clears the uid's user keyrings (the one thing a job could leave that is keyed by uid rather than by a
namespace) before it forks the next job's init.

The zygote never reads a payload or a result: the init reads the job, the result comes back in a memfd that the
zygote passes on with sendfile. Frames on stdin/stdout are a 4-byte big-endian length and the bytes: parent ->
header (JSON: limits), payload; zygote -> {"hello": pid} once, then per job {"exit", "timed_out", "size"} and
``size`` bytes. Spawner protocol (SOCK_SEQPACKET, init <-> zygote): {"spawn": request, "limits": {...}} with fds ->
{"spawned": id} or {"error": text}; later {"exited": id, "code": c} (negative: killed by that signal).
"""

import fcntl
import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inside import (  # noqa: E402 - next to this file in /harness
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    KEYCTL,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    PR_SET_DUMPABLE,
    PR_SET_PDEATHSIG,
    drop_capabilities,
    kill_the_rest,
    libc,
    mount,
    mount_proc,
    prctl,
    read_frame,
    setns,
    unshare,
    write_all,
    write_frame,
)

MAX_HEADER = 1 << 16
MESSAGE = 1 << 16
JOB_NAMESPACES = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET  # the init's own, besides the pid one
KEYCTL_GET_KEYRING_ID, KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_SETPERM, KEYCTL_CLEAR, KEYCTL_GET_PERSISTENT = 0, 1, 5, 7, 22
USER_KEYRINGS = (-4, -5)  # KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
EXIT_BEFORE_PAYLOAD, EXIT_HANDLER_FAILED, EXIT_NO_JOB, EXIT_CHILD_SETUP, EXIT_TIMEOUT = 10, 11, 12, 13, 124


# ---- isolation ---------------------------------------------------------------------------------------------------

def set_limits(limits):
    """A job's own limits; they can only be lowered from the sandbox's (no capability can raise them)."""
    mb = 1 << 20
    for res, value in ((resource.RLIMIT_AS, limits["memory_mb"] * mb),
                       (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb),
                       (resource.RLIMIT_NOFILE, limits["open_files"]), (resource.RLIMIT_CPU, limits["cpu_s"]),
                       (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def _fresh_session():
    """Our own session keyring (not the zygote's), and a freshly seeded ``random`` as a new interpreter has."""
    if KEYCTL is not None:
        libc.syscall(KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)
    if "random" in sys.modules:
        sys.modules["random"].seed()


def isolate(tmp_mb):
    """In the job init, before anything of the job exists: its own mounts, /proc, network, IPC and keyring."""
    unshare(JOB_NAMESPACES)
    mount(b"none", "/", None, MS_REC | MS_PRIVATE)
    size = f"size={int(tmp_mb)}m".encode()
    for target, mode in (("/tmp", b"1777"), ("/dev/shm", b"1777"), ("/workspace", b"0755")):
        mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, size + b",mode=" + mode)
    mount_proc()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # bring up the loopback
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))
    _fresh_session()
    os.chdir("/workspace")


def clear_user_keyrings():
    """Keys a job linked into the uid's user, user-session or persistent keyring would outlive it: remove them."""
    if KEYCTL is None:
        return
    rings = [libc.syscall(KEYCTL, KEYCTL_GET_KEYRING_ID, spec, 1) for spec in USER_KEYRINGS]
    rings.append(libc.syscall(KEYCTL, KEYCTL_GET_PERSISTENT, -1, -2))  # links it into our process keyring
    for ring in rings:
        if ring > 0:
            libc.syscall(KEYCTL, KEYCTL_SETPERM, ring, 0x3F3F0000)  # the owner may always: take back full access
            libc.syscall(KEYCTL, KEYCTL_CLEAR, ring)


# ---- the job init's side -----------------------------------------------------------------------------------------

class Spawner:
    """The handler's way to start processes in its job's namespaces (forked by the zygote, see the module doc)."""

    def __init__(self, sock, limits):
        self.sock, self.limits, self.exits = sock, limits, {}

    def fileno(self):
        return self.sock.fileno()

    def spawn(self, request, fds):
        """Start a child running ``child(request, fds)``; its id. The fds are the child's only open files."""
        socket.send_fds(self.sock, [json.dumps({"spawn": request, "limits": self.limits}).encode()], list(fds))
        while True:
            message = self.receive(None)
            if "spawned" in message:
                return message["spawned"]
            if "error" in message:
                raise OSError(f"the zygote could not start a child: {message['error']}")

    def receive(self, timeout):
        """The next message from the zygote ({} after ``timeout``); exit notices also land in ``exits``."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return {}
        message = json.loads(self.sock.recv(MESSAGE) or b'{"gone": true}')
        if "exited" in message:
            self.exits[message["exited"]] = message["code"]
        return message


class Job:
    """The channels between the zygote and a job's init."""

    def __init__(self):
        self.result = os.memfd_create("result")
        self.done_r, self.done_w = os.pipe()  # init -> zygote: the result is complete
        self.start_r, self.start_w = os.pipe()  # init -> zygote: the job's wall-clock limit, once it has a job
        self.spawns, self.init_spawns = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.init_pidfd = -1
        self.namespaces = []  # fds of the init's mount, net, ipc and uts namespaces, sent by the init


def _job_init(job, settings, module):
    """Pid 1 of the job's namespaces: isolate, drop every capability, take one job from stdin, run the handler,
    leave nothing running, hand over the result."""
    consumed = False
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for fd in (job.done_r, job.start_r, job.spawns.fileno()):
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)  # only the zygote writes to the parent
        isolate(settings["tmp_mb"])
        # our namespaces, for the zygote to put the children it forks for us into
        names = [os.open(f"/proc/self/ns/{ns}", os.O_RDONLY) for ns in ("mnt", "net", "ipc", "uts")]
        socket.send_fds(job.init_spawns, [b'{"namespaces": true}'], names)
        for fd in names:
            os.close(fd)
        drop_capabilities()
        prctl(PR_SET_DUMPABLE, 0)  # before the job is in memory
        try:
            header = json.loads(read_frame(0, MAX_HEADER))
        except EOFError:  # the parent closed the sandbox
            os._exit(EXIT_NO_JOB)
        write_all(job.start_w, struct.pack(">d", float(header["wall_s"])))
        set_limits(header)

        def read_payload():
            nonlocal consumed
            data = read_frame(0, header["max_payload"])
            os.dup2(null, 0)  # nothing started later can read what the parent sends next
            consumed = True
            return data

        result = module.handle(read_payload, Spawner(job.init_spawns, header))
        if not consumed:
            read_payload()
        kill_the_rest()
        write_all(job.result, result[:header["max_result"]])
        write_all(job.done_w, b"\x00")
        code = 0
    except BaseException:
        import traceback
        traceback.print_exc()
        code = EXIT_HANDLER_FAILED if consumed else EXIT_BEFORE_PAYLOAD
    os._exit(code)


# ---- the zygote's side ---------------------------------------------------------------------------------------------

def _child(job, message, fds, module):
    """A fresh fork of the zygote, already in the job's pid namespace: into its other namespaces, then the job's
    limits, no capability, and ``child``. Nothing of the zygote's stays open."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):  # the zygote's pipes to the parent
            os.dup2(null, fd)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for fd in job.namespaces:
            setns(fd, 0)
        _close_all_but({0, 1, 2, null, *fds})
        os.chdir("/workspace")
        _fresh_session()
        set_limits(message["limits"])
        drop_capabilities()
        os.dup2(null, 2)  # nor the zygote's stderr: the child has its fds and /dev/null
        os.close(null)
        module.child(message["spawn"], fds)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(EXIT_CHILD_SETUP)  # never back into the zygote's code


def _close_all_but(keep):
    start = 0
    for fd in sorted(keep) + [resource.getrlimit(resource.RLIMIT_NOFILE)[1]]:
        if start < fd:  # (os.closerange(0, 0) closes everything: it passes close_range a last fd of -1)
            os.closerange(start, fd)
        start = fd + 1


def _send_result(job):
    size = os.fstat(job.result).st_size
    write_frame(1, json.dumps({"exit": 0, "timed_out": False, "size": size}).encode())
    offset = 0
    while offset < size:  # kernel to kernel: the result never passes through our memory
        sent = os.sendfile(1, job.result, offset, size - offset)
        if sent == 0:
            raise OSError("the job's result shrank while it was being sent")
        offset += sent


def _tell(sock, message):
    try:
        sock.send(json.dumps(message).encode())
    except OSError:  # the init is done with us
        pass


def run_one(settings, module, own_pid_ns):
    """One job: fork its init (isolated, waiting for its job on stdin), serve its spawn requests, pass on its result,
    kill it at its wall-clock limit, clean up after it. The next init is only forked once this one and its
    namespaces are gone and the keyrings are cleared. False when the parent has closed the sandbox."""
    job = Job()
    children = {}  # pidfd -> pid of the children we forked for the job
    try:
        setns(own_pid_ns, CLONE_NEWPID)  # undo the previous job's unshare for our children, then a new one:
        unshare(CLONE_NEWPID)  # the next fork is pid 1 of it, and the job's children follow it there
        pid = os.fork()
        if pid == 0:
            _job_init(job, settings, module)
        for fd in (job.done_w, job.start_w, job.init_spawns.fileno()):
            os.close(fd)
        job.init_pidfd = os.pidfd_open(pid)
        deadline = done = timed_out = None
        serving = True  # the init may still ask for children
        while True:
            waiting = [job.init_pidfd, *children] + [job.spawns] * serving + [job.start_r] * (deadline is None) \
                + [job.done_r] * (done is None)
            left = None if deadline in (None, float("inf")) else max(deadline - time.monotonic(), 0)
            ready = select.select(waiting, [], [], left)[0]
            if not ready:
                os.kill(pid, signal.SIGKILL)  # the init of a pid namespace: all of the job goes with it
                timed_out, deadline = True, float("inf")
                continue
            if job.start_r in ready:
                wall = os.read(job.start_r, 8)  # (8 bytes: written atomically)
                deadline = time.monotonic() + struct.unpack(">d", wall)[0] if wall else float("inf")
            if job.done_r in ready:
                done = os.read(job.done_r, 1) == b"\x00"  # empty: the init exited (or was killed) without one
                if done:
                    _send_result(job)
            if job.spawns in ready:
                serving = _serve_spawn(job, module, children)
            for pidfd in [fd for fd in ready if fd in children]:
                child = children.pop(pidfd)
                code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
                os.close(pidfd)
                _tell(job.spawns, {"exited": child, "code": code})
            if job.init_pidfd in ready:  # gone, and (as pid 1 of its namespace) all of its job with it
                break
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        code = EXIT_TIMEOUT if timed_out else (128 - code if code < 0 else code)
        clear_user_keyrings()
        if code == EXIT_NO_JOB:
            return False
        if not done:
            write_frame(1, json.dumps({"exit": code, "timed_out": bool(timed_out), "size": 0}).encode())
        return True
    finally:
        for pidfd, child in children.items():
            os.waitpid(child, 0)
            os.close(pidfd)
        for fd in (job.result, job.done_r, job.start_r, job.init_pidfd, *job.namespaces):
            if fd >= 0:
                os.close(fd)
        job.spawns.close()


def _serve_spawn(job, module, children):
    """One request from the init. False once it has closed its end."""
    try:
        data, fds, _, _ = socket.recv_fds(job.spawns, MESSAGE, 8)
    except OSError:  # reset: the init exited
        data, fds = b"", []
    if not data:
        return False
    message = json.loads(data)
    if message.get("namespaces"):
        job.namespaces = fds
        return True
    try:
        if len(job.namespaces) != 4:
            raise OSError("the job's namespaces are not known")
        pid = os.fork()  # into the job's pid namespace (see run_one)
        if pid == 0:
            _child(job, message, fds, module)
        children[os.pidfd_open(pid)] = pid
        _tell(job.spawns, {"spawned": pid})
    except Exception as e:
        _tell(job.spawns, {"error": f"{type(e).__name__}: {e}"})
    finally:
        for fd in fds:
            os.close(fd)
    return True


def own_pid_namespace():
    """Move into a pid namespace of our own, owned by the user namespace we hold capabilities in (bwrap's is owned
    by an outer one), so that ``run_one`` may setns back to it. The process that forked us only waits."""
    unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid:
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        os._exit(code if code >= 0 else 128 - code)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return os.open("/proc/self/ns/pid", os.O_RDONLY)


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    module = importlib.import_module(sys.argv[1])
    settings = json.loads(sys.argv[2])
    own_pid_ns = own_pid_namespace()
    # Every job and child is a fork: keep the collector away from what is loaded now, or each one's first full
    # collection would touch (and so copy) every page of it.
    gc.freeze()
    write_frame(1, json.dumps({"hello": os.getpid()}).encode())
    while run_one(settings, module, own_pid_ns):
        pass


if __name__ == "__main__":
    main()
