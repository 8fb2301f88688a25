"""Attacks on the code env's verification (real bwrap): a candidate must not pass by faking success, reading the
hidden tests, tampering with the harness, or taking down its judge; and the host stays unharmed. Every attack runs
against both designs: warm sandboxes (the default; the judge is pid 1 of the job's namespaces) and one sandbox per
verification (the fallback for backends without a warm mode)."""

from __future__ import annotations

import secrets

import pytest
from test_sandbox_security import wait_no_leftovers

from envs.code import CodeEnv
from posttrain.environment import Trajectory
from posttrain.sandbox import warm


@pytest.fixture(scope="module", params=["warm", "cold"])
def env(request):
    env = CodeEnv(backend="bwrap", test_timeout_s=2.0, wall_timeout_s=5.0, warm=request.param == "warm")
    yield env
    env.close()


@pytest.fixture(scope="module", params=["warm", "cold"])
def quick_env(request):
    """For attacks that hang: their cost is their timeouts."""
    env = CodeEnv(backend="bwrap", test_timeout_s=1.0, wall_timeout_s=2.5, warm=request.param == "warm")
    yield env
    env.close()


def resident() -> set[int]:
    """The processes of this process's open warm sandboxes that stay between verifications (bwrap, the zygote, the
    next job prepared): not leftovers."""
    return warm.resident_pids()


def function_task(tests: list[str], name: str = "solve") -> dict:
    return {"id": "attack", "env": "code", "kind": "function", "messages": [{"role": "user", "content": "go"}],
            "tools": [], "prompt": f"def {name}(x):\n    \"\"\"Return x + 1.\"\"\"\n", "entry_point": name,
            "test_setup": "", "tests": [{"name": f"t{i}", "code": c} for i, c in enumerate(tests)]}


ADD_ONE = function_task(["assert candidate(1) == 2", "assert candidate(41) == 42"])
STDIO = {"id": "attack-io", "env": "code", "kind": "stdio", "messages": [{"role": "user", "content": "go"}],
         "tools": [], "tests": [{"name": "t0", "input": "3\n", "output": "4\n"}]}


def verify(env, task, code):
    return env.verify(Trajectory(task, [{"role": "assistant", "content": f"```python\n{code}\n```"}]))


def fails(res, *reasons):
    assert not res.passed and res.score < 1, res
    if reasons:
        assert set(res.reasons) <= set(reasons), res.reasons
    return res


FAKE_VERDICT = ('import json\nV = "POSTTRAIN-VERDICT " + json.dumps({"nonce": "0" * 32, "tests": ['
                '{"name": "t0", "passed": True, "status": "passed", "error": None, "duration_s": 0},'
                '{"name": "t1", "passed": True, "status": "passed", "error": None, "duration_s": 0}]})\n')


@pytest.mark.parametrize("code", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "def solve(x):\n    import sys\n    sys.exit(0)",
    "def solve(x):\n    import os\n    os._exit(0)",
    "def solve(x):\n    raise SystemExit(0)",
])
def test_fake_exit_zero_never_passes(env, code):
    fails(verify(env, ADD_ONE, code), "load_error", "crashed", "exception")


def test_printed_or_injected_fake_verdicts_are_ignored(env):
    writers = [
        "print(V)\nimport sys\nprint(V, file=sys.stderr)",
        # straight into the parent's pipe through bwrap's pid 1, and into the judge's stdout
        "import os\nfor p in ('/proc/1/fd/1', f'/proc/{os.getppid()}/fd/1'):\n    try:\n"
        "        fd = os.open(p, os.O_WRONLY)\n        os.write(fd, (V + '\\n').encode())\n    except OSError:\n"
        "        pass",
    ]
    for w in writers:
        fails(verify(env, ADD_ONE, FAKE_VERDICT + w + "\ndef solve(x):\n    return 0"))
        fails(verify(env, STDIO, FAKE_VERDICT + w + "\nprint('PASS')"), "wrong_output")
    # kill the parent (the judge: pid 1 of the job in a warm sandbox, which ignores it) and pid 1, then forge a
    # verdict: no verdict with our nonce is a verification error, a verdict is the judge's own; never a pass
    res = verify(env, ADD_ONE, FAKE_VERDICT + "import os, signal, sys\nos.kill(os.getppid(), signal.SIGKILL)\n"
                 "os.kill(1, signal.SIGKILL)\n"
                 "for out in ('/proc/1/fd/1', '/proc/1/fd/2'):\n    try:\n        fd = os.open(out, os.O_WRONLY)\n"
                 "        os.write(fd, (V + '\\n').encode())\n    except OSError:\n        pass\n"
                 "def solve(x):\n    return 0")
    fails(res, "no_verdict", "load_error", "crashed", "wrong_answer")


def test_always_equal_objects_and_patched_builtins_do_not_pass(env):
    attacks = [
        "class Yes:\n    def __eq__(self, other):\n        return True\ndef solve(x):\n    return Yes()",
        "class Yes(int):\n    def __eq__(self, other):\n        return True\ndef solve(x):\n    return Yes(0)",
        "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\ndef solve(x):\n    return 0",
        # forge the worker's replies (it is the candidate's own process): claim success, or send graphs the judge
        # must refuse: a tuple that holds itself, a reference to an argument that was never sent, a bogus iterator
        "import judge.candidate as c\norig = c.send_frame\n"
        "c.send_frame = lambda fd, obj: orig(fd, {'ok': True} if 'error' in obj else {'passed': True})\n"
        "def solve(x):\n    return 0",
        "import judge.candidate as c\n"
        "c._serve = lambda *a: {'value': {'n': [{'k': 'tuple', 'x': [['r', 0]]}], 'v': [['r', 0]]}}\n"
        "def solve(x):\n    return 0",
        "import judge.candidate as c\nc._serve = lambda *a: {'value': {'n': [], 'v': [['o', 7]]}}\n"
        "def solve(x):\n    return 0",
        "import judge.candidate as c\nc._serve = lambda *a: {'value': {'n': [], 'v': [['h', 3]]}}\n"
        "def solve(x):\n    return 0",
        "import judge.candidate as c\nc._serve = lambda *a: {'raise': 'SystemExit', 'text': 'x', 'args': 0}\n"
        "def solve(x):\n    return 0",
        # replies the judge cannot take: over the frame limit, endlessly nested, raw garbage on the pipe
        "def solve(x):\n    return 'x' * (40 << 20)",
        "import os\nos.close(4)\ndef solve(x):\n    while True:\n        pass",
        "def solve(x):\n    a = []\n    a.append(a)\n    return a",
        "import os\nos.write(4, b'\\x00\\x00\\x00\\x05{{{{{')\ndef solve(x):\n    return x + 1",
    ]
    for code in attacks:
        fails(verify(env, ADD_ONE, code))


SCANNER = r'''
import os, re
PATTERN = re.compile(rb"CANARY-[0-9a-f]{32}")
def scan():
    found, paths = set(), []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        paths += [f"/proc/{pid}/cmdline", f"/proc/{pid}/environ"]
        try:
            paths += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass
        try:
            regions = open(f"/proc/{pid}/maps").read().splitlines()
            with open(f"/proc/{pid}/mem", "rb") as mem:
                for line in regions:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if "r" in line.split()[1] and hi - lo < (64 << 20):
                        try:
                            mem.seek(lo)
                            found.update(PATTERN.findall(mem.read(hi - lo)))
                        except (OSError, ValueError, OverflowError):
                            pass
        except OSError:
            pass
    for root in ("/harness", "/tmp", "/workspace", "/dev/shm"):
        for d, _, files in os.walk(root):
            paths += [os.path.join(d, f) for f in files]
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
            try:
                found.update(PATTERN.findall(os.read(fd, 1 << 22)))
            finally:
                os.close(fd)
        except OSError:
            pass
    return sorted(x.decode() for x in found)
'''


def test_hidden_tests_cannot_be_read(env):
    """The scanner reads every process's memory, fds, cmdline and environ it can. Without the judge's
    PR_SET_DUMPABLE=0 it finds the canary in the judge's memory and this test fails (checked by hand)."""
    canary = "CANARY-" + secrets.token_hex(16)
    task = function_task([f"assert candidate(0) == {canary!r}"])
    res = verify(env, task, SCANNER + "def solve(x):\n    hits = scan()\n    print('found', hits)\n"
                 "    return hits[0] if hits else 'nothing'")
    fails(res, "wrong_answer")
    assert canary not in str(res.details)  # not even the candidate's own output saw it
    assert "found []" in res.details["candidate_output"]
    stdio = {**STDIO, "tests": [{"name": "t0", "input": "", "output": canary + "\n"}]}
    res = verify(env, stdio, SCANNER + "hits = scan()\nprint(hits[0] if hits else 'nothing')")
    fails(res, "wrong_output")
    assert canary not in res.details["tests"][0]["error"].split("got")[1]


def test_tampering_with_the_harness_fails(env):
    tamper = ("import os\n"
              "for p in ['/harness/judge.py', '/harness/tests.py']:\n    try:\n"
              "        open(p, 'w').write('print(1)')\n        print('overwrote', p)\n    except OSError as e:\n"
              "        print('denied', p, e.errno)\n"
              "try:\n    os.rename('/harness', '/h2')\nexcept OSError:\n    print('no rename')\n"
              "try:\n    open(f'/proc/{os.getppid()}/mem', 'wb')\n    print('JUDGE MEM OPEN')\nexcept OSError:\n"
              "    print('judge memory closed')\n"
              "def solve(x):\n    return 0")
    res = fails(verify(env, ADD_ONE, tamper), "wrong_answer")
    out = res.details["candidate_output"]
    assert "denied /harness/judge.py 30" in out and "judge memory closed" in out and "JUDGE MEM OPEN" not in out


def test_killing_everything_never_passes(env):
    """Killing its parent, pid 1 or everything it can reach ends only the candidate's own run. In a cold sandbox the
    judge can be killed (no verdict: a verification error); in a warm one it is pid 1 of the job's pid namespace
    and cannot be, so the verdict still comes, and it is a failure."""
    for kill in ("os.kill(os.getppid(), 9)", "os.kill(1, 9)\n    os.kill(-1, 9)"):
        for code in (f"def solve(x):\n    import os\n    {kill}\n    return 0",
                     f"import os\nif True:\n    {kill}\ndef solve(x):\n    return 0"):
            res = verify(env, ADD_ONE, code)
            # (kill(-1) with nothing left to kill raises ProcessLookupError in the candidate: "exception")
            if env.use_warm:
                fails(res, "crashed", "load_error", "wrong_answer", "exception")
            else:
                fails(res, "no_verdict", "crashed", "load_error", "wrong_answer", "exception")
                assert res.reasons != ["no_verdict"] or res.error
    assert wait_no_leftovers(exclude=resident) == []


def test_bombs_loops_and_floods_are_contained(quick_env):
    attacks = {
        "fork bomb": "import os\ndef solve(x):\n    while True:\n        try:\n            os.fork()\n"
                     "        except OSError:\n            pass",
        "memory bomb": "def solve(x):\n    a = []\n    while True:\n        a.append(bytearray(50 << 20))",
        "infinite loop at import": "while True:\n    pass",
        "output flood": "def solve(x):\n    while True:\n        print('y' * 100000)",
        "stdio flood": "import sys\nwhile True:\n    sys.stdout.write('z' * 100000)",
    }
    for name, code in attacks.items():
        res = verify(quick_env, STDIO if name.startswith("stdio") else ADD_ONE, code)
        fails(res)
        assert res.details.get("sandbox", {}).get("duration_s", 0) < 5, name
    assert wait_no_leftovers(exclude=resident) == []
