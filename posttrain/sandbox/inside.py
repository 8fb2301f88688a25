"""Primitives for programs that run INSIDE a sandbox (stdlib only; shipped as /harness/inside.py): namespaces,
mounts, capabilities and length-prefixed frames. Used by the warm sandbox's zygote and by what its jobs run."""

import ctypes
import os
import platform
import signal
import struct
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, \
    0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_CAP_AMBIENT = 1, 4, 24, 36, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_SYS_ADMIN = 21
KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())  # keyctl has no libc wrapper
PROC_COVERS = ("sys", "sysrq-trigger", "irq", "bus")  # read-only over a fresh /proc, as bwrap leaves them

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option, value):
    check(libc.prctl(option, value, 0, 0, 0), f"prctl({option})")


def unshare(flags):
    check(libc.unshare(flags), "unshare")


def setns(fd, flags):
    check(libc.setns(fd, flags), "setns")


def mount(source, target, fstype, flags, options=None):
    check(libc.mount(source, target.encode(), fstype, flags, options), f"mount {target}")


def mount_proc():
    """A /proc for our pid namespace (in a mount namespace of our own), with bwrap's read-only covers."""
    mount(b"proc", "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_COVERS:
        path = "/proc/" + name
        if os.path.exists(path):
            mount(path.encode(), path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def capabilities():
    """Our capability sets as ints: CapInh, CapPrm, CapEff, CapBnd, CapAmb."""
    with open("/proc/self/status") as f:
        return [int(line.split()[1], 16) for line in f
                if line.startswith(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))]


def has_capability(cap):
    return bool(capabilities()[2] & (1 << cap))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities():
    """No capability left in any set (bounding and ambient included); checked, not assumed."""
    inheritable, permitted, effective, bounding, ambient = capabilities()
    if inheritable | permitted | effective | bounding | ambient:
        for cap in range(64):
            if bounding >> cap & 1:
                prctl(PR_CAPBSET_DROP, cap)
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        check(libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()), "capset")
        if any(capabilities()):
            raise OSError(f"capabilities still held after dropping them: {capabilities()}")


def kill_the_rest():
    """From pid 1 of the job's pid namespace: kill(-1) reaches every other process in it, also one forked a moment
    ago (it goes by the kernel's task list, not by /proc), and fails with ESRCH once none is left, zombies
    included: so everything is dead and reaped when this returns."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        while True:  # what the children left behind was handed to us
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.0002)


# ---- frames: a 4-byte big-endian length, then the bytes --------------------------------------------------------

def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def read_frame(fd, limit):
    (size,) = struct.unpack(">I", read_exact(fd, 4))
    if size > limit:
        raise ValueError(f"frame of {size} bytes is over the {limit}-byte limit")
    return read_exact(fd, size)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_frame(fd, data):
    write_all(fd, struct.pack(">I", len(data)) + data)
