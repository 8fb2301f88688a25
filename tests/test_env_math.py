"""The math environment with the real math-verify: answer formats, gold errors, timeouts, threads, the generator."""

from __future__ import annotations

import os
import pickle
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from envs.math import MathEnv
from envs.math.problems import FAMILIES
from posttrain.environment import Trajectory, make_env
from posttrain.errors import UserError

PATHOLOGICAL = "\\boxed{9^{9^{9^{9}}}}"  # sympy tries to evaluate this tower and never finishes


@pytest.fixture(scope="module")
def env():
    env = make_env("math")
    yield env
    env.close()


def task(answer: str) -> dict:
    return {"id": "t1", "env": "math", "messages": [{"role": "user", "content": "?"}], "tools": [], "answer": answer}


def verify(env, answer_gold: str, reply: str):
    return env.verify(Trajectory(task(answer_gold), [*task(answer_gold)["messages"],
                                                     {"role": "assistant", "content": reply}]))


def test_loaded_by_name(env):
    assert isinstance(env, MathEnv) and env.name == "math"


@pytest.mark.parametrize("gold, reply", [
    ("\\frac{3}{4}", "So the result is \\boxed{\\frac{3}{4}}."),
    ("\\frac{3}{4}", "The answer is 3/4"),
    ("\\frac{3}{4}", "The final answer is 0.75"),
    ("42", "40 + 2 = 42\n#### 42"),
    ("12.35", "Adding gives $\\boxed{12.350}$"),
    ("-7", "Hence $x = -7$."),
    ("-7", "\\boxed{x = -7}"),
    ("x + 14", "\\boxed{14 + x}"),
    ("5x + 55", "\\boxed{5(x + 11)}"),
    ("1234", "\\boxed{1,234}"),
    ("45", "It takes \\boxed{45 \\text{ minutes}}."),
    ("3", "<think>maybe \\boxed{2}</think>Checking again, the answer is \\boxed{3}."),
])
def test_correct_answers_pass(env, gold, reply):
    result = verify(env, gold, reply)
    assert result.passed and result.score == 1.0 and result.error is None, result


@pytest.mark.parametrize("gold, reply", [
    ("\\frac{3}{4}", "\\boxed{\\frac{4}{3}}"),
    ("42", "#### 41"),
    ("12.35", "\\boxed{12.36}"),
    ("x + 14", "\\boxed{x + 15}"),
    ("3", "<think>the answer is \\boxed{3}</think>So \\boxed{2}."),  # only the text after thinking counts
    ("12", "First \\boxed{12}, no wait: \\boxed{13}"),  # the last boxed answer counts
])
def test_wrong_answers_fail(env, gold, reply):
    result = verify(env, gold, reply)
    assert not result.passed and result.score == 0.0
    assert result.reasons == ["wrong_answer"] and result.error is None


def test_no_answer(env):
    for reply in ["", "I do not know.", "<think>\\boxed{3} and then I ran out of tok"]:
        result = verify(env, "3", reply)
        assert not result.passed and result.reasons == ["no_answer"] and result.error is None
    no_turn = env.verify(Trajectory(task("3"), task("3")["messages"]))
    assert no_turn.reasons == ["no_answer"]


def test_unparseable_or_missing_gold_is_an_error_not_a_verdict(env):
    result = verify(env, "\\frac{", "\\boxed{1}")
    assert not result.passed and result.reasons == ["gold_unparseable"] and "cannot parse gold" in result.error
    for bad in [None, "", 5]:
        t = task("x")
        t["answer"] = bad
        result = env.verify(Trajectory(t, [{"role": "assistant", "content": "\\boxed{1}"}]))
        assert result.reasons == ["gold_unparseable"] and result.error


def test_reset_and_step_single_turn(env):
    t = next(env.generate_tasks(1, seed=3))
    messages, tools = env.reset(t)
    assert messages == t["messages"] and tools == []
    messages[0]["content"] = "changed"  # the env keeps its own copy
    step = env.step({"role": "assistant", "content": t["solution"]})
    assert step.done and step.reward == 1.0 and step.observations == [] and step.info["verify"]["passed"]
    with pytest.raises(RuntimeError):
        env.step({"role": "assistant", "content": "again"})
    env.reset(t)
    step = env.step({"role": "assistant", "content": "\\boxed{123456789}"})
    assert step.done and step.reward == 0.0 and step.info["verify"]["reasons"] == ["wrong_answer"]
    with pytest.raises(UserError, match="messages"):
        env.reset({"id": "bad", "answer": "1"})


def test_timeout_is_an_error_and_works_off_the_main_thread():
    env = MathEnv(timeout=1.0)
    try:
        results = {}

        def work():
            results["slow"] = verify(env, "3", PATHOLOGICAL)
            results["after"] = verify(env, "3", "\\boxed{3}")  # a fresh worker answers the next request
            results["pid"] = env.checker._proc.pid

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout=30)
        slow = results["slow"]
        assert not slow.passed and slow.reasons == ["timeout"] and "longer than 1s" in slow.error
        assert results["after"].passed
        assert env.checker.restarts == 1
        # The worker started from that (now finished) thread lives on and serves the main thread.
        assert verify(env, "4", "\\boxed{4}").passed and env.checker._proc.pid == results["pid"]
        assert verify(env, "3", PATHOLOGICAL).reasons == ["timeout"]  # and from the main thread
    finally:
        env.close()


def test_concurrent_threads_and_pickling(env):
    t = task("\\frac{1}{2}")
    outcomes = []

    def work(i):
        reply = "\\boxed{0.5}" if i % 2 == 0 else "\\boxed{0.25}"
        outcomes.append((i % 2 == 0, verify(env, "\\frac{1}{2}", reply).passed))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(outcomes) == 16 and all(expected == got for expected, got in outcomes)
    clone = pickle.loads(pickle.dumps(env))  # e.g. shipped to a Ray worker: starts its own math-verify process
    try:
        assert clone.verify(Trajectory(t, [{"role": "assistant", "content": "\\boxed{1/2}"}])).passed
    finally:
        clone.close()


def test_verification_is_fast_once_warm(env):
    verify(env, "1", "\\boxed{1}")
    times = []
    for i in range(30):
        start = time.perf_counter()
        assert verify(env, str(i), f"The answer is {i}").passed
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.05, times  # a pipe round trip, not a process start (measured ~1 ms)


def test_generator_is_deterministic_and_distinct(env):
    tasks = list(env.generate_tasks(2000, seed=0))
    assert tasks == list(env.generate_tasks(2000, seed=0))
    assert [t["id"] for t in tasks[:50]] != [t["id"] for t in env.generate_tasks(50, seed=1)]
    assert len({t["id"] for t in tasks}) == 2000
    assert len({t["messages"][0]["content"] for t in tasks}) == 2000
    assert set(Counter(t["family"] for t in tasks)) == set(FAMILIES)
    for t in tasks:
        assert t["env"] == "math" and t["tools"] == [] and "\\boxed{}" in t["messages"][0]["content"]
    with pytest.raises(UserError):
        list(env.generate_tasks(-1, seed=0))


def test_reference_solutions_pass_and_perturbed_answers_fail(env):
    tasks = list(env.generate_tasks(2000, seed=7))
    per_family: dict[str, list] = {}
    for t in tasks:
        per_family.setdefault(t["family"], []).append(t)
    sample = [t for family in per_family.values() for t in family[:25]]
    for t in sample:
        messages = env.reference_trajectory(t)
        assert messages[:-1] == t["messages"] and messages[-1]["role"] == "assistant"
        result = env.verify(Trajectory(t, messages))
        assert result.passed, (t["id"], t["answer"], result)
        wrong = t["solution"].replace(f"\\boxed{{{t['answer']}}}", f"\\boxed{{{t['answer']} + 1}}")
        assert not env.verify(Trajectory(t, [*t["messages"], {"role": "assistant", "content": wrong}])).passed, t


def test_environments_doc_plugin_example_loads_by_path(tmp_path):
    """The example in docs/environments.md works as written (loaded by path, like a user's plugin)."""
    doc = (Path(__file__).parents[1] / "docs" / "environments.md").read_text()
    block = doc.split("<!-- example-env:start -->")[1].split("<!-- example-env:end -->")[0]
    code = block.split("```python\n")[1].split("```")[0]
    (tmp_path / "my_env.py").write_text(code)
    env = make_env(str(tmp_path / "my_env.py"))
    assert env.name == "reverse"
    tasks = list(env.generate_tasks(5, seed=2))
    assert tasks == list(env.generate_tasks(5, seed=2))
    env.reset(tasks[0])
    step = env.step({"role": "assistant", "content": tasks[0]["word"][::-1]})
    assert step.done and step.reward == 1.0
    wrong = env.verify(Trajectory(tasks[1], [*tasks[1]["messages"], {"role": "assistant", "content": "no"}]))
    assert not wrong.passed and wrong.reasons == ["wrong_answer"]


def test_worker_dies_with_its_parent(tmp_path):
    """A worker stuck in sympy must not outlive a killed trainer (Linux parent-death signal)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, threading\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
        "from envs.math.checker import MathChecker\n"
        "c = MathChecker(timeout=600)\n"
        "c.check('1', '1')\n"
        "print(c._proc.pid, flush=True)\n"
        f"c.check('3', {PATHOLOGICAL!r})\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    time.sleep(0.3)  # the worker is now busy with the pathological expression
    parent.kill()
    parent.wait()
    for _ in range(50):
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{worker_pid}/stat").read_text().split()[2] == "Z":  # exited, not yet reaped
            break
        time.sleep(0.1)
    else:
        os.kill(worker_pid, 9)
        pytest.fail("math-verify worker survived its parent")
