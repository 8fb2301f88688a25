"""Warm sandboxes with the real bwrap: every job gets fresh namespaces and no capability, children the zygote forks
for a job share that job's namespaces and nothing else, limits and failures end the job, not the pool."""

from __future__ import annotations

import json

import pytest

from posttrain.sandbox import Limits, get_backend
from posttrain.sandbox.warm import WarmPool

MODULE = r'''
import json, os, time

def status(key):
    return [line.split()[1] for line in open("/proc/self/status") if line.startswith(key)][0]

def handle(read_payload, spawner):
    job = json.loads(read_payload())
    time.sleep(job.get("sleep", 0))
    if job.get("fail"):
        raise RuntimeError("the handler failed")
    out = {"pid": os.getpid(), "caps": status("CapEff"), "tmp": sorted(os.listdir("/tmp")),
           "dumpable": status("Uid")}
    open(f"/tmp/{job['tag']}", "w").write("x")
    if job.get("child"):
        r, w = os.pipe()
        child = spawner.spawn({"tag": job["tag"]}, [w])
        os.close(w)
        out["child"] = json.loads(os.read(r, 65536))
        while child not in spawner.exits:
            spawner.receive(5)
        out["child_exit"] = spawner.exits[child]
    return json.dumps(out).encode()

def child(request, fds):
    info = {"pid": os.getpid(), "caps": status("CapEff"), "tmp": sorted(os.listdir("/tmp")),
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")), "pids": sorted(
                int(p) for p in os.listdir("/proc") if p.isdigit())}
    os.write(fds[0], json.dumps(info).encode())
    os._exit(7)
'''

JOB = Limits(wall_s=5, cpu_s=5, memory_mb=256, max_processes=8, stdout_bytes=1 << 20)


@pytest.fixture(scope="module")
def pool():
    pool = WarmPool(get_backend("bwrap"), {"probe.py": MODULE}, "probe", Limits(memory_mb=256, max_processes=8))
    yield pool
    pool.close()


def run(pool, limits=JOB, **job):
    result = pool.run(json.dumps(job).encode(), limits)
    assert result is not None, pool.unavailable
    return result


def test_each_job_is_pid_1_of_fresh_namespaces_without_capabilities(pool):
    first = json.loads(run(pool, tag="first").output)
    second = run(pool, tag="second", child=True)
    out = json.loads(second.output)
    assert first["pid"] == out["pid"] == 1 and first["caps"] == out["caps"] == "0000000000000000"
    assert first["tmp"] == out["tmp"] == []  # the first job's file is gone with its tmpfs
    kid = out["child"]
    assert kid["caps"] == "0000000000000000" and kid["pid"] != 1 and kid["pids"] == sorted([1, kid["pid"]])
    assert kid["tmp"] == ["second"]  # the child lives in its own job's namespaces
    assert kid["fds"][:3] == [0, 1, 2] and len(kid["fds"]) == 5  # stdio, its one fd, the listing's own
    assert out["child_exit"] == 7 and len(pool._all) == 1


def test_a_job_past_its_wall_clock_or_failing_ends_alone(pool):
    late = run(pool, Limits(wall_s=0.5, cpu_s=5, memory_mb=256, max_processes=8), tag="late", sleep=30)
    assert late.timed_out and late.output is None and late.duration_s < 5
    failed = run(pool, tag="fail", fail=True)
    assert failed.output is None and failed.exit_code == 11 and "the handler failed" in failed.notes[0]
    assert json.loads(run(pool, tag="after").output)["tmp"] == []  # and the pool carries on


def test_limits_beyond_the_sandbox_and_backends_without_a_warm_mode(pool):
    with pytest.raises(ValueError, match="memory_mb"):
        run(pool, Limits(memory_mb=4096), tag="big")
    assert WarmPool(get_backend("rlimit"), {"probe.py": MODULE}, "probe", Limits()).run(b"{}", JOB) is None


def test_a_warm_sandbox_that_cannot_start_falls_back_to_one_sandbox_per_run(monkeypatch, caplog):
    from envs.code import CodeEnv
    from posttrain.environment import Trajectory
    from posttrain.sandbox import bwrap

    monkeypatch.setattr(bwrap, "WARM_CAPABILITIES", ("CAP_NO_SUCH_THING",))  # bwrap refuses to start
    env = CodeEnv(backend="bwrap", test_timeout_s=2.0, wall_timeout_s=8.0)
    task = env.task_set("humaneval")[0]
    try:
        with caplog.at_level("WARNING"):
            res = env.verify(Trajectory(task, [*task["messages"], {"role": "assistant",
                                                                  "content": task["reference_solution"]}]))
        assert res.passed and not res.details["sandbox"].get("warm")
        assert env.warm.unavailable and "warm sandboxes unavailable" in caplog.text
    finally:
        env.close()
