"""The zygote of a warm sandbox. It runs INSIDE bwrap (stdlib only) and gives every job a fresh, isolated process.

Started once per warm sandbox as ``python -I -S /harness/zygote.py HANDLER SETTINGS`` (``HANDLER`` is
``module:function`` under /harness, ``SETTINGS`` JSON with ``tmp_mb``), it imports the handler once, then for each
job forks:

    zygote (keeps CAP_SYS_ADMIN, NET_ADMIN, SETPCAP inside the sandbox's user namespace; runs no job code;
            kills a job at its wall-clock limit)
      -> job init, pid 1 of a new pid namespace, in new mount, ipc, uts and network namespaces: fresh tmpfs at
         /tmp, /workspace and /dev/shm, a fresh /proc, its own loopback, a fresh session keyring. There the
         handler's module may ``prepare()`` (with the capabilities, before any job exists: e.g. fork a launcher
         into namespaces of its own); then every capability is dropped and the init becomes non-dumpable. Only then
         does it read a job (header and payload) from stdin, lower its rlimits to the job's and call
         ``handler(read_payload, prepared) -> bytes``; what runs untrusted code is forked from what it prepared.

Once the handler returns, the init kills every other process of its pid namespace (kill(-1) from pid 1 reaches
exactly those) and reaps them; then the result goes out. When the init exits, the namespaces, their tmpfs and their
IPC objects go too. Only after that, and after clearing the uid's user keyrings (the one thing a job could leave
that is keyed by uid rather than by a namespace), does the zygote fork the next job's init.

The zygote's memory never holds a job or a result: the init (a fork) reads the job, and the result comes back in a
memfd that the zygote passes on with sendfile. Every job starts as a copy of the zygote's memory, so none can find an
earlier job's data in it. Frames on stdin/stdout are a 4-byte big-endian length and the bytes: parent -> header (JSON:
limits), payload; zygote -> {"hello": pid} once, then per job {"exit", "timed_out", "size"} and ``size`` bytes.
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
KEYCTL_GET_KEYRING_ID, KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_SETPERM, KEYCTL_CLEAR, KEYCTL_GET_PERSISTENT = 0, 1, 5, 7, 22
USER_KEYRINGS = (-4, -5)  # KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
EXIT_BEFORE_PAYLOAD, EXIT_HANDLER_FAILED, EXIT_NO_JOB, EXIT_TIMEOUT = 10, 11, 12, 124


# ---- the job init's isolation ------------------------------------------------------------------------------------

def _fresh_filesystems(tmp_mb):
    size = f"size={int(tmp_mb)}m".encode()
    for target, mode in (("/tmp", b"1777"), ("/dev/shm", b"1777"), ("/workspace", b"0755")):
        mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, size + b",mode=" + mode)
    mount_proc()


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))


def set_limits(h):
    """The job's own limits; they can only be lowered from the sandbox's (no capability can raise them)."""
    mb = 1 << 20
    for res, value in ((resource.RLIMIT_AS, h["memory_mb"] * mb), (resource.RLIMIT_FSIZE, h["file_size_mb"] * mb),
                       (resource.RLIMIT_NOFILE, h["open_files"]), (resource.RLIMIT_CPU, h["cpu_s"]),
                       (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def isolate(tmp_mb):
    """In the job init, before anything of the job exists: its own mounts, network, IPC and keyring."""
    unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)
    mount(b"none", "/", None, MS_REC | MS_PRIVATE)
    _fresh_filesystems(tmp_mb)
    _loopback_up()
    if KEYCTL is not None:  # our own session keyring, not the zygote's
        libc.syscall(KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)
    os.chdir("/workspace")
    if "random" in sys.modules:  # a fresh interpreter seeds itself; a fork must too
        sys.modules["random"].seed()


# ---- one job -----------------------------------------------------------------------------------------------------

class Job:
    """The pipes and the memfd between the zygote and a job's init."""

    def __init__(self):
        self.result = os.memfd_create("result")
        self.done_r, self.done_w = os.pipe()  # init -> zygote: the result is complete
        self.start_r, self.start_w = os.pipe()  # init -> zygote: the job's wall-clock limit, once it has a job


def _job_init(job, settings, handler, prepare):
    """Pid 1 of the job's namespaces: isolate, prepare, drop every capability, take one job from stdin, run the
    handler, leave nothing running."""
    consumed = False
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.close(job.done_r)
        os.close(job.start_r)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)  # only the zygote writes to the parent
        isolate(settings["tmp_mb"])
        prepared = prepare() if prepare is not None else None
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

        result = handler(read_payload, prepared)
        if not consumed:
            read_payload()
        _kill_the_rest()
        write_all(job.result, result[:header["max_result"]])
        write_all(job.done_w, b"\x00")
        code = 0
    except BaseException:
        import traceback
        traceback.print_exc()
        code = EXIT_HANDLER_FAILED if consumed else EXIT_BEFORE_PAYLOAD
    os._exit(code)


def _kill_the_rest():
    """As pid 1 of the job's pid namespace, kill(-1) reaches every other process of the job and nothing else."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


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


def _send_result(job):
    size = os.fstat(job.result).st_size
    write_frame(1, json.dumps({"exit": 0, "timed_out": False, "size": size}).encode())
    offset = 0
    while offset < size:  # kernel to kernel: the result never passes through our memory
        sent = os.sendfile(1, job.result, offset, size - offset)
        if sent == 0:
            raise OSError("the job's result shrank while it was being sent")
        offset += sent


def run_one(settings, handler, prepare, own_pid_ns):
    """Prepare a job init (isolated, waiting for its job on stdin), pass on its result, kill it at its wall-clock
    limit, clean up after it. The result goes out as soon as the init has killed the rest of its job; the next init
    is only forked once this one and its namespaces are gone and the keyrings are cleared. False when the parent
    has closed the sandbox."""
    job = Job()
    try:
        # pid 1 of a new pid namespace, without a process in between: point our children's pid namespace back at
        # our own (the previous job's unshare moved it), then at a new one
        setns(own_pid_ns, CLONE_NEWPID)
        unshare(CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            _job_init(job, settings, handler, prepare)
        os.close(job.done_w)
        os.close(job.start_w)
        wall = os.read(job.start_r, 8)  # blocks while the init waits for a job; empty if it exited (8 bytes: atomic)
        done = timed_out = False
        if wall:
            if select.select([job.done_r], [], [], struct.unpack(">d", wall)[0])[0]:
                done = os.read(job.done_r, 1) == b"\x00"  # empty: the init exited (or was killed) without one
            else:
                os.kill(pid, signal.SIGKILL)  # the init of a pid namespace: all of the job goes with it
                timed_out = True
        if done:
            _send_result(job)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        code = EXIT_TIMEOUT if timed_out else (128 - code if code < 0 else code)
        clear_user_keyrings()
        if code == EXIT_NO_JOB:
            return False
        if not done:
            write_frame(1, json.dumps({"exit": code, "timed_out": timed_out, "size": 0}).encode())
        return True
    finally:
        for fd in (job.result, job.done_r, job.start_r):
            os.close(fd)


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
    module_name, _, function = sys.argv[1].partition(":")
    settings = json.loads(sys.argv[2])
    module = importlib.import_module(module_name)
    handler, prepare = getattr(module, function), getattr(module, "prepare", None)
    own_pid_ns = own_pid_namespace()
    # Every job is a fork: keep the collector away from what is loaded now, or each job's first full collection
    # would touch (and so copy) every page of it.
    gc.freeze()
    write_frame(1, json.dumps({"hello": os.getpid()}).encode())
    while run_one(settings, handler, prepare, own_pid_ns):
        pass


if __name__ == "__main__":
    main()
