"""The parallel verification pool: real worker processes, the real code env, crashes, timeouts and backpressure.

Crashes and hangs come from a small environment written to a file here (the pool takes envs by path too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envs.code import CodeEnv
from posttrain.environment import Trajectory
from posttrain.errors import UserError
from posttrain.verify_pool import VerifyPool, trajectory_from_row

PROBE_ENV = '''
import os
import time

from posttrain.environment import Environment, StepResult, VerifyResult


class PoolProbeEnv(Environment):
    """Verifies `answer`; its tasks can also crash, hang, raise or sleep to exercise the pool."""

    name = "pool_probe"

    def reset(self, task):
        return list(task.get("messages", [])), []

    def step(self, assistant_message):
        return StepResult(done=True)

    def generate_tasks(self, n, seed):
        return iter([{"id": str(i), "answer": str(i)} for i in range(n)])

    def verify(self, trajectory):
        action = trajectory.task.get("action")
        if action == "crash":
            os._exit(3)
        if action == "hang":
            time.sleep(60)
        if action == "raise":
            raise ValueError("verifier bug")
        if trajectory.task.get("started_file"):  # tells a test that this item is being verified now
            open(trajectory.task["started_file"], "w").close()
        time.sleep(trajectory.task.get("sleep", 0))
        ok = trajectory.final_answer == trajectory.task["answer"]
        return VerifyResult(passed=ok, score=float(ok), reasons=["ok" if ok else "wrong"],
                            details={"pid": os.getpid(), "mode": os.environ.get("PROBE_MODE")})
'''


@pytest.fixture(scope="module")
def probe_env(tmp_path_factory):
    path = tmp_path_factory.mktemp("envs") / "probe_env.py"
    path.write_text(PROBE_ENV)
    return str(path)


def probe(answer: str, given: str, **task) -> Trajectory:
    return Trajectory({"id": answer, "answer": answer, **task}, [{"role": "assistant", "content": given}])


def test_code_env_through_the_pool_matches_direct_verification():
    tasks = CodeEnv().task_set("humaneval")[:6]
    rows = []
    for t in tasks:
        rows.append({"task": t, "completion": t["reference_solution"]})
        rows.append({"task": t, "messages": [*t["messages"], {"role": "assistant", "content": "    return None\n"}]})
    with VerifyPool("code", workers=2, timeout_s=60, env_kwargs={"test_timeout_s": 2.0}) as pool:
        results = pool.verify_all(rows)
    assert [r.passed for r in results] == [True, False] * 6
    assert all(r.error is None and r.details["verify_s"] > 0 for r in results)
    assert all(r.details["sandbox"]["backend"] == "bwrap" for r in results)


def test_crashes_timeouts_and_verifier_bugs_are_errors_never_passes(probe_env):
    items = [probe("a", "a"), probe("b", "b", action="crash"), probe("c", "c", action="hang"),
             probe("d", "d", action="raise"), probe("e", "x"), probe("f", "f")]
    with VerifyPool(probe_env, workers=2, timeout_s=1.5) as pool:
        t = time.monotonic()
        results = dict(pool.verify_many(items))
        assert time.monotonic() - t < 12
        assert sorted(results) == list(range(6))
        assert results[0].passed and results[5].passed and not results[4].passed and results[4].error is None
        for i, reason in [(1, "crash"), (2, "timeout"), (3, "verification_error")]:
            assert not results[i].passed and results[i].error and results[i].reasons == [reason], results[i]
        assert "exit code 3" in results[1].error and "ValueError: verifier bug" in results[3].error
        # the pool replaced its dead workers and goes on
        assert [r.passed for r in pool.verify_all([probe("g", "g"), probe("h", "no")])] == [True, False]


def test_results_stream_as_they_finish_or_in_order(probe_env):
    items = [probe(str(i), str(i), sleep=s) for i, s in enumerate([1.0, 0.0, 0.0, 0.0])]
    with VerifyPool(probe_env, workers=2, timeout_s=10) as pool:
        pool.verify_all([probe("warm", "warm")] * 2)  # both workers up
        unordered = [i for i, _ in pool.verify_many(items)]
        ordered = [i for i, _ in pool.verify_many(items, ordered=True)]
    assert sorted(unordered) == [0, 1, 2, 3] and unordered[0] != 0 and unordered[-1] == 0
    assert ordered == [0, 1, 2, 3]


def test_backpressure_bounds_what_is_pulled_from_the_input(probe_env):
    pulled = []

    def source():
        for i in range(40):
            pulled.append(i)
            yield probe(str(i), str(i), sleep=0.02)

    with VerifyPool(probe_env, workers=2, max_in_flight=3, timeout_s=10) as pool:
        stream = pool.verify_many(source())
        first = next(stream)
        assert len(pulled) <= 3 + 1 and first[1].passed
        rest = list(stream)
    assert len(rest) == 39 and len(pulled) == 40 and all(r.passed for _, r in rest)


def test_stopping_early_leaves_the_pool_usable(probe_env):
    with VerifyPool(probe_env, workers=2, timeout_s=10) as pool:
        stream = pool.verify_many(probe(str(i), str(i), sleep=0.3) for i in range(10))
        next(stream)
        stream.close()
        assert [r.passed for r in pool.verify_all([probe("z", "z")])] == [True]


def test_rows_are_checked_and_bad_ones_reported_by_index(probe_env):
    rows = [{"task": {"answer": "1"}, "completion": "1"}, {"task": "nope", "completion": "1"}, ["not", "a", "row"],
            {"task": {"answer": "2"}, "messages": [{"role": "assistant", "content": "2"}]}]
    with VerifyPool(probe_env, workers=1, timeout_s=10) as pool:
        results = pool.verify_all(rows)
    assert results[0].passed and results[3].passed
    assert results[1].reasons == ["bad_row"] and "item 1: key 'task' must be an object" in results[1].error
    assert results[2].reasons == ["bad_row"] and "item 2: expected a JSON object" in results[2].error


def test_worker_env_is_set_in_the_workers_only(probe_env):
    with VerifyPool(probe_env, workers=1, worker_env={"PROBE_MODE": "strict"}) as pool:
        (result,) = pool.verify_all([probe("a", "a")])
    assert result.details["mode"] == "strict" and "PROBE_MODE" not in os.environ


def test_trajectory_from_row():
    task = {"id": "t", "messages": [{"role": "user", "content": "q"}]}
    t = trajectory_from_row({"task": task, "completion": "a"}, "f.jsonl:3")
    assert t.messages == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert trajectory_from_row({"task": task, "messages": []}, "x").messages == []
    for row, msg in [({"task": task}, "expected key 'messages'"), ({"task": task, "completion": 3}, "string"),
                     ({"task": task, "messages": [{"content": "x"}]}, "list of")]:
        with pytest.raises(UserError, match=f"f.jsonl:3: .*{msg}"):
            trajectory_from_row(row, "f.jsonl:3")


def test_bad_env_names_and_constructor_failures_are_user_errors(probe_env):
    with pytest.raises(UserError, match="not found"):
        VerifyPool("no_such_env_xyz")
    with pytest.raises(UserError, match=">= 1"):
        VerifyPool(probe_env, workers=0)
    with VerifyPool(probe_env, workers=1, env_kwargs={"bogus": 1}) as pool:
        with pytest.raises(UserError, match="could not start in a verification worker: TypeError"):
            pool.verify_all([probe("a", "a")])


HOLDER = """
import sys
from posttrain.environment import Trajectory
from posttrain.verify_pool import VerifyPool

if __name__ == "__main__":
    env, started, threaded = sys.argv[1], sys.argv[2], sys.argv[3] == "thread"
    item = Trajectory({"id": "a", "answer": "a", "sleep": 120, "started_file": started},
                      [{"role": "assistant", "content": "a"}])

    def hold():
        pool = VerifyPool(env, workers=1, timeout_s=600)
        print(pool._workers[0].process.pid, flush=True)
        pool.verify_all([item])  # the worker sleeps in verify until its parent is gone

    if threaded:  # a pool started from another thread than the main one (the finisher thread of rs does this)
        import threading
        t = threading.Thread(target=hold)
        t.start()
        t.join()
    else:
        hold()
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie waiting for a reaper is dead


@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_workers_die_with_a_sigkilled_parent(probe_env, tmp_path, started_from):
    """A CLI killed by SIGKILL (no cleanup runs) must not leave its verification workers running on."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    started = tmp_path / "started"
    holder = subprocess.Popen([sys.executable, str(script), probe_env, str(started), started_from],
                              stdout=subprocess.PIPE, text=True)
    try:
        worker = int(holder.stdout.readline())
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and holder.poll() is None, "the item never reached the worker"
            time.sleep(0.1)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 10
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(worker), "the verification worker outlived its killed parent"
    finally:
        holder.kill()
        if "worker" in locals() and not _gone(worker):
            os.kill(worker, signal.SIGKILL)
