"""Candidates that share a warm sandbox cannot reach each other: whatever one leaves behind (files, processes,
listening sockets, shared memory, keys, environment, patched modules of the zygote) the next one does not find, and
nothing a candidate starts, setsid daemons included, outlives its run, not even into the next test of its own task."""

from __future__ import annotations

import platform

import pytest
from test_env_code_security import ADD_ONE, fails, resident, verify
from test_sandbox_security import wait_no_leftovers

from envs.code import CodeEnv

x86_64 = platform.machine() == "x86_64"  # the keyring syscalls below use x86-64 numbers

PLANT = r'''
import builtins, ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for d in ("/tmp", "/workspace", "/dev/shm", os.path.expanduser("~")):
    open(os.path.join(d, "planted"), "w").write("x")
os.environ["PLANTED"] = "1"
os.putenv("PLANTED2", "1")
import math
math.pi = 3                                       # a module the zygote preloaded
import judge.stdio
judge.stdio.normalize = lambda text: "6"          # the judge's own code, as loaded in the zygote
sys.modules["planted_module"] = type(sys)("planted_module")
builtins.PLANTED = True
print("shm", libc.shmget(0x5EED, 4096, 0o1666))   # SysV shared memory (IPC_CREAT), never removed
if KEYS:
    print("key", libc.syscall(248, b"user", b"planted", b"secret", 6, -4))  # add_key to the user keyring
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a daemon with listening sockets that keeps writing files
        unix = socket.socket(socket.AF_UNIX)
        unix.bind("\0planted")
        unix.listen()
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 47123))
        tcp.listen()
        while True:
            for d in ("/tmp", "/workspace", "/dev/shm"):
                try:
                    open(d + "/daemon", "w").write("x")
                except OSError:
                    pass
            time.sleep(0.005)
    os._exit(0)
time.sleep(0.2)

def solve(x):
    return x + 1
'''

PROBE = r'''
import builtins, ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def findings():
    found = [f"file {d}/{name}" for d in ("/tmp", "/workspace", "/dev/shm", os.path.expanduser("~"))
             for name in os.listdir(d)]
    found += [f"env {k}" for k in ("PLANTED", "PLANTED2") if k in os.environ or libc.getenv(k.encode())]
    import math
    if math.pi != 3.141592653589793:
        found.append("patched math")
    import judge.stdio
    if judge.stdio.normalize.__name__ != "normalize":
        found.append("patched judge")
    found += [name for name in ("planted_module",) if name in sys.modules]
    if hasattr(builtins, "PLANTED"):
        found.append("patched builtins")
    if libc.shmget(0x5EED, 0, 0) >= 0:
        found.append("shared memory")
    if KEYS and libc.syscall(250, 10, -4, b"user", b"planted", 0) >= 0:  # KEYCTL_SEARCH the user keyring
        found.append("key")
    others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
    found += [f"process {p}: {open(f'/proc/{p}/cmdline').read()[:60]!r}" for p in others]
    for family, address in ((socket.AF_UNIX, "\0planted"), (socket.AF_INET, ("127.0.0.1", 47123))):
        try:
            socket.socket(family).connect(address)
            found.append(f"listener {address!r}")
        except OSError:
            pass
    return found

def solve(x):
    found = findings()
    print("FOUND", found)
    return found
'''


@pytest.fixture(scope="module")
def envs():
    envs = {mode: CodeEnv(backend="bwrap", test_timeout_s=2.0, wall_timeout_s=8.0, warm=mode == "warm")
            for mode in ("warm", "cold")}
    yield envs
    for env in envs.values():
        env.close()


@pytest.fixture(scope="module")
def env(envs):
    return envs["warm"]


def no_leftovers(envs) -> bool:
    return wait_no_leftovers(exclude=resident) == []


def sandboxes(env) -> set[int]:
    return {s.pid for s in env.warm._all}


def test_the_probe_finds_what_is_planted_in_its_own_run(env):
    """The control: planted and probed by one candidate, every kind of leftover is found."""
    keys = f"KEYS = {x86_64}\n"
    task = {**ADD_ONE, "tests": [{"name": "t0", "code": "found = candidate(0)\nassert not found, found"}]}
    res = verify(env, task, keys + PLANT.replace("def solve(x):\n    return x + 1\n", "") + PROBE)
    found = res.details["candidate_output"].split("FOUND", 1)[1]
    for kind in ("file /tmp/planted", "file /workspace/daemon", "file /dev/shm/planted", "env PLANTED",
                 "env PLANTED2", "patched math", "patched judge", "planted_module", "patched builtins",
                 "shared memory", "process", "planted'\"", "47123)\""):
        assert kind in found, (kind, found)
    if x86_64:
        assert "'key'" in found


def test_the_next_candidate_finds_nothing_of_the_last(env, envs):
    keys = f"KEYS = {x86_64}\n"
    fails(verify(env, ADD_ONE, keys + PLANT.replace("return x + 1", "return 0")))
    used = sandboxes(env)
    assert len(used) == 1
    probe = {**ADD_ONE, "tests": [{"name": "t0", "code": "found = candidate(0)\nassert found == [], found"}]}
    res = verify(env, probe, keys + PROBE)
    assert sandboxes(env) == used  # the same warm sandbox, so the same zygote, ran both
    assert res.passed, res.details["tests"][0]["error"]
    # and the judge was not changed either: a right answer passes, a wrong one fails
    assert verify(env, ADD_ONE, "def solve(x):\n    return x + 1").passed
    fails(verify(env, ADD_ONE, "def solve(x):\n    return 0"), "wrong_answer")
    assert sandboxes(env) == used
    assert no_leftovers(envs)


SETSID_DAEMON = r'''
import os, sys, time
n = int(input())
if n == 1:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # a daemon that answers the *next* test: "6" into every stdout and file it reaches
            time.sleep(0.2)  # once this test is over
            end = time.time() + 3
            while time.time() < end:
                for pid in os.listdir("/proc"):
                    if pid.isdigit() and int(pid) != os.getpid():
                        try:
                            fd = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY)
                            os.write(fd, b"6\n")
                            os.close(fd)
                        except OSError:
                            pass
                for root in ("/tmp", "/workspace"):
                    for d, _, files in os.walk(root):
                        for name in files:
                            try:
                                open(os.path.join(d, name), "w").write("6\n")
                            except OSError:
                                pass
                time.sleep(0.002)
            os._exit(0)
        os._exit(0)
    print(2)
else:
    time.sleep(0.5)  # prints nothing: only the daemon could make this test pass
'''


@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_a_setsid_daemon_does_not_outlive_its_test(envs, mode):
    """Before the judge killed the whole tree between tests, this daemon (its own session, so out of reach of a
    process-group kill) wrote the second test's answer into that test's output, and the task passed."""
    task = {"id": "daemon", "env": "code", "kind": "stdio", "messages": [], "tools": [],
            "tests": [{"name": "t0", "input": "1\n", "output": "2\n"}, {"name": "t1", "input": "5\n", "output": "6\n"}]}
    res = verify(envs[mode], task, SETSID_DAEMON)
    assert [t["status"] for t in res.details["tests"]] == ["passed", "wrong_output"], res.details["tests"]
    assert no_leftovers(envs)


def test_threads_share_an_env_and_a_sandbox_outlives_the_thread_that_started_it():
    """verify() from several threads gets a sandbox each; one started by a thread that has since ended still
    works (bwrap's --die-with-parent follows the *thread* that forked it: sandboxes are started from one that
    lives as long as the process)."""
    import threading

    env = CodeEnv(backend="bwrap", test_timeout_s=2.0, wall_timeout_s=8.0)
    results = []
    right, wrong = "def solve(x):\n    return x + 1", "def solve(x):\n    return x"
    try:
        threads = [threading.Thread(target=lambda code=code: results.append((code, verify(env, ADD_ONE, code))))
                   for code in (right, wrong, right)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted((code == right, r.passed) for code, r in results) == [(False, False), (True, True),
                                                                           (True, True)]
        started = sandboxes(env)
        assert 1 <= len(started) <= 3
        for _ in range(3):  # the threads are gone; their sandboxes are not
            assert verify(env, ADD_ONE, right).passed
        assert sandboxes(env) <= started
    finally:
        env.close()
