"""Attacks on the bwrap sandbox (real bwrap, no mocks): each is contained and reported, and the host is unharmed.

Network tests only ever address this machine's loopback; "outside" is shown by the absence of any interface but lo
and of any route, without sending a packet anywhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_sandbox import REPO, leftover_run_processes, py

from posttrain.sandbox import Limits, get_backend


@pytest.fixture(scope="module")
def sb():
    return get_backend("bwrap")


def wait_no_leftovers(timeout: float = 3.0, exclude: Callable[[], set[int]] = set) -> list[int]:
    """Our runs' leftover processes once they have had ``timeout`` seconds to go; ``exclude()`` names the resident
    processes of warm sandboxes that are still open (asked afresh each time: they change between jobs)."""
    end = time.monotonic() + timeout
    while (left := leftover_run_processes(exclude())) and time.monotonic() < end:
        time.sleep(0.05)
    return left


def test_no_network_to_host_loopback_or_outside(sb):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.3)
    port = server.getsockname()[1]
    code = f"""
import json, socket
out = {{}}
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1)
    out["loopback"] = "connected"
except OSError as e:
    out["loopback"] = type(e).__name__
try:
    socket.getaddrinfo("pypi.org", 443)
    out["dns"] = "resolved"
except OSError as e:
    out["dns"] = type(e).__name__
out["interfaces"] = [name for _, name in socket.if_nameindex()]
out["ipv4_routes"] = open("/proc/net/route").read().splitlines()[1:]
print(json.dumps(out))
"""
    try:
        res = py(sb, code)
        out = json.loads(res.stdout)
        assert out["loopback"] == "ConnectionRefusedError"  # the sandbox's own loopback has no listener
        assert out["dns"] == "gaierror"
        assert out["interfaces"] == ["lo"] and out["ipv4_routes"] == []  # nowhere to send a packet to
        with pytest.raises(TimeoutError):
            server.accept()  # and nothing reached the host's listener
    finally:
        server.close()


def test_cannot_write_outside_nor_read_home_or_project(sb, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = home / ".ssh" / "id_ed25519"
    secret.write_text("SECRET-KEY-7f3a")
    monkeypatch.setenv("HOME", str(home))
    project_secret = REPO / ".sandbox-test-secret"
    project_secret.write_text("PROJECT-SECRET-91c2")
    escape_tmp, escape_project = tmp_path / "escaped.txt", REPO / "escaped-from-sandbox.txt"
    targets = [str(secret), str(project_secret), str(REPO / "pyproject.toml"), "/etc/shadow", "/root/.bashrc",
               os.path.expanduser("~/.ssh/id_ed25519")]
    code = f"""
import os
for p in {targets!r}:
    try:
        print("READ", p, open(p).read()[:40])
    except OSError as e:
        print("noread", p, e.errno)
for p in [{str(escape_tmp)!r}, {str(escape_project)!r}, "/etc/escaped"]:
    try:
        open(p, "w").write("x")
        print("WROTE", p)
    except OSError as e:
        print("nowrite", p, e.errno)
print(sorted(os.listdir("/")))
"""
    try:
        res = py(sb, code)
        assert "READ" not in res.stdout and "WROTE" not in res.stdout, res.stdout
        assert "SECRET" not in res.stdout and res.stdout.count("noread") == len(targets)
        assert not escape_tmp.exists() and not escape_project.exists()
        assert secret.read_text() == "SECRET-KEY-7f3a" and project_secret.read_text() == "PROJECT-SECRET-91c2"
    finally:
        project_secret.unlink()


def test_environment_secrets_are_not_visible(sb, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-5d8e")
    code = """
import os
seen = [v for v in os.environ.values()]
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            seen.append(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
        except OSError:
            pass
print("\\n".join(seen))
"""
    res = py(sb, code)
    assert res.exit_code == 0 and "env-secret-5d8e" not in res.stdout and "AWS_SECRET" not in res.stdout


def test_fork_bomb_is_contained(sb):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    t = time.monotonic()
    res = py(sb, bomb, limits=Limits(wall_s=1.5, max_processes=16, memory_mb=128))
    assert res.timed_out and time.monotonic() - t < 6
    assert wait_no_leftovers() == []
    if sb.per_run_uid:  # RLIMIT_NPROC holds, so forks fail beyond the limit
        counter = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
                   "            time.sleep(30)\n            os._exit(0)\n        n += 1\n"
                   "except OSError as e:\n    print(n, e.errno)\n")
        res = py(sb, counter, limits=Limits(wall_s=8, max_processes=10))
        forks, errno = map(int, res.stdout.split())
        assert forks < 10 and errno == 11  # EAGAIN
        assert wait_no_leftovers() == []


def test_memory_bombs_are_contained(sb):
    res = py(sb, "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))\n",
             limits=Limits(wall_s=8, memory_mb=256))
    assert res.exit_code != 0 and "MemoryError" in res.stderr and not res.timed_out
    forking = ("import os\nfor _ in range(3):\n    os.fork()\nchunks = []\ntry:\n    while True:\n"
               "        chunks.append(bytearray(32 << 20))\nexcept MemoryError:\n    print('capped', len(chunks))\n")
    res = py(sb, forking, limits=Limits(wall_s=8, memory_mb=128, max_processes=16))
    assert all(0 < int(line.split()[1]) * 32 < 128 for line in res.stdout.splitlines())
    assert wait_no_leftovers() == []


def test_infinite_loop_and_sleep_are_killed_on_time(sb):
    for code in ("while True:\n    pass\n", "import time\ntime.sleep(60)\n"):
        t = time.monotonic()
        res = py(sb, code, limits=Limits(wall_s=1))
        assert res.timed_out and res.killed_by_signal == 9 and time.monotonic() - t < 4
    assert wait_no_leftovers() == []


def test_huge_output_is_cut(sb):
    res = py(sb, "import os\nwhile True:\n    os.write(1, b'A' * 1000000)\n",
             limits=Limits(wall_s=8, stdout_bytes=1 << 20))
    assert res.truncated and len(res.stdout) == 1 << 20 and not res.timed_out


def test_killing_parents_and_everyone_leaves_the_host_alone(sb):
    sentinel = subprocess.Popen(["sleep", "30"])
    try:
        code = ("import os, signal\nfor target in (os.getppid(), 1):\n    try:\n        os.kill(target, 9)\n"
                "    except OSError as e:\n        print('kill', target, e.errno)\n"
                f"for target in ({os.getpid()}, {sentinel.pid}):\n    try:\n        os.kill(target, 9)\n"
                "        print('killed host pid?', target)\n    except OSError as e:\n        print('no', e.errno)\n"
                "try:\n    os.kill(-1, 9)\nexcept OSError as e:\n    print('kill -1:', e.errno)\n"
                "print('survived kill -1')\n")
        res = py(sb, code)
        assert "survived kill -1" in res.stdout and "killed host pid" not in res.stdout
        res = sb.run({}, ["/bin/sh", "-c", "kill -9 -1; echo after"], limits=Limits(wall_s=8))
        assert "after" in res.stdout
        assert sentinel.poll() is None  # a host process of ours survived every attempt
        assert Path(f"/proc/{os.getppid()}").exists()
    finally:
        sentinel.kill()
        sentinel.wait()
    assert wait_no_leftovers() == []


def test_no_privilege_escalation_paths(sb):
    code = ("import os\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0])\n"
            "try:\n    os.setuid(0)\n    print('BECAME ROOT')\n"
            "except OSError as e:\n    print('setuid denied', e.errno)\n"
            "try:\n    os.unshare(os.CLONE_NEWUSER)\n    print('NEW USERNS')\nexcept OSError as e:\n"
            "    print('userns denied', e.errno)\n")
    res = py(sb, code)
    lines = res.stdout.split("\n")
    assert lines[0] == "1" and "BECAME ROOT" not in res.stdout and "NEW USERNS" not in res.stdout
