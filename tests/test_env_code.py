"""The code environment: extraction, task sets, verification of right and wrong answers, episodes, bad tasks."""

from __future__ import annotations

import math

import pytest

from envs.code import CodeEnv
from envs.code.extract import extract_code, function_program
from envs.code.humaneval import split_check
from envs.code.judge.values import Unsupported, dump, load
from posttrain.environment import Trajectory, load_env_class
from posttrain.errors import UserError


@pytest.fixture(scope="module")
def env():
    env = CodeEnv(test_timeout_s=2.0, wall_timeout_s=8.0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def humaneval(env):
    return {t["id"]: t for t in env.task_set("humaneval")}


def answer(env, task, text):
    return env.verify(Trajectory(task, [*task["messages"], {"role": "assistant", "content": text}]))


def test_extract_code():
    assert extract_code("Here:\n```python\na = 1\n```\nand better:\n```python\nb = 2\n```\nDone.") == "b = 2"
    assert extract_code("```\nx = 1\n```") == "x = 1"
    assert extract_code("```py\nx = 1\n```\n```text\nnot code\n```") == "x = 1"
    assert extract_code("Sure!\n```python\ndef f():\n    return 1\n") == "def f():\n    return 1"  # unclosed fence
    assert extract_code("\n\n    return x + 1\n") == "    return x + 1"  # a raw body keeps its indentation
    assert extract_code("") == ""


def test_function_program_accepts_a_whole_function_or_a_body():
    prompt = "import math\n\ndef f(x):\n    \"\"\"doc\"\"\"\n"
    whole = function_program(prompt, "def f(x):\n    return math.floor(x)", "f")
    body = function_program(prompt, "    return math.floor(x)", "f")
    for program in (whole, body):
        ns: dict = {}
        exec(program, ns)
        assert ns["f"](2.5) == 2


def round_trip(value):
    return load(dump([value])[0])[0][0]


def test_value_codec_round_trips_and_rejects_malformed_data():
    values = [None, True, 3, -2.5, "s", [1, [2]], (1, "a"), {1: (2, 3), "k": [None]}, {1, 2}, frozenset({3}),
              b"\x00\xff", 1 + 2j, 10**30]
    for v in values:
        assert round_trip(v) == v and type(round_trip(v)) is type(v)
    assert math.isnan(round_trip(float("nan")))
    with pytest.raises(Unsupported):
        dump([object()])
    for bad in ({"n": [{"k": "code", "x": []}], "v": []}, {"a": 1}, {"n": [{"k": "tuple", "x": 3}], "v": []},
                {"n": [], "v": [["r", 0]]}, {"n": [{"k": "dict", "x": [1]}], "v": []}, {"n": [], "v": [{"a": 1}]},
                {"n": [{"k": "tuple", "x": [["r", 1]]}, {"k": "tuple", "x": [["r", 0]]}], "v": []}):
        with pytest.raises(ValueError):
            load(bad)


def test_humaneval_task_set(humaneval):
    assert len(humaneval) == 164
    t = humaneval["HumanEval/0"]
    assert t["source"] == "humaneval" and t["env"] == "code" and t["kind"] == "function" and t["tools"] == []
    assert t["entry_point"] == "has_close_elements" and len(t["tests"]) == 7
    assert t["prompt"] in t["messages"][0]["content"]
    assert len(humaneval["HumanEval/32"]["tests"]) == 1  # the setup lines go with the block holding the assert


def test_split_check_groups_setup_with_the_next_assert():
    setup, blocks = split_check("X = 1\n\ndef check(f):\n    y = 2\n    assert f(y) == 3\n    assert f(0) == 1\n"
                                "    print('end')\n")
    assert setup == "X = 1\nf = candidate"
    assert blocks == ["y = 2\nassert f(y) == 3", "assert f(0) == 1\nprint('end')"]


SAMPLE = [0, 2, 10, 32, 38, 50, 81, 107, 129, 163]


def test_humaneval_canonical_solutions_pass(env, humaneval):
    for i in SAMPLE:
        task = humaneval[f"HumanEval/{i}"]
        res = answer(env, task, task["reference_solution"])
        assert res.passed and res.score == 1.0 and res.reasons == ["passed"], (i, res)
        assert res.details["n_passed"] == len(task["tests"]) == len(res.details["tests"])
        assert all(t["duration_s"] >= 0 for t in res.details["tests"])


def test_humaneval_wrong_solutions_fail(env, humaneval):
    task = humaneval["HumanEval/0"]
    for wrong in ("    pass\n", "    return None\n", "    return True\n", "    return len(numbers) > 1\n"):
        res = answer(env, task, wrong)
        assert not res.passed and res.score < 1 and res.error is None, wrong
    # HumanEval/2 (truncate_number) off by a constant: every test fails
    res = answer(env, humaneval["HumanEval/2"], "    return number % 1.0 + 0.1\n")
    assert not res.passed and res.score == 0 and res.reasons == ["wrong_answer"]
    # a chatty answer with a complete, correct function in a fenced block passes
    chat = ("Let me think.\n```python\ndef has_close_elements(numbers, threshold):\n"
            "    s = sorted(numbers)\n    return any(b - a < threshold for a, b in zip(s, s[1:]))\n```\nDone!")
    assert answer(env, task, chat).passed


def test_load_errors_and_missing_code(env, humaneval):
    task = humaneval["HumanEval/0"]
    res = answer(env, task, "```python\ndef has_close_elements(numbers, threshold)\n    return 1\n```")
    assert res.reasons == ["load_error"] and "SyntaxError" in res.details["load_error"] and res.score == 0
    res = answer(env, task, "```python\nimport not_a_module_xyz\n```")
    assert res.reasons == ["load_error"] and "ModuleNotFoundError" in res.details["load_error"]
    res = answer(env, task, "I don't know.")  # raw prose is run as code: it does not load
    assert not res.passed and res.reasons == ["load_error"]
    res = answer(env, task, "```python\n\n```")
    assert res.reasons == ["no_code"] and not res.passed


def test_generator_is_seeded_distinct_and_has_both_kinds(env):
    a = list(env.generate_tasks(2000, seed=3))
    assert [t["id"] for t in a[:50]] == [t["id"] for t in env.generate_tasks(50, seed=3)]
    assert len({t["id"] for t in a}) == 2000 and len({t["messages"][0]["content"] for t in a}) == 2000
    assert {t["kind"] for t in a} == {"function", "stdio"} and {t["source"] for t in a} == {"generated"}
    assert [t["id"] for t in env.generate_tasks(5, seed=4)] != [t["id"] for t in a[:5]]
    assert all(t["tests"] and t["reference_solution"] and t["env"] == "code" for t in a)


def test_generated_reference_solutions_pass_and_wrong_ones_fail(env):
    tasks = list(env.generate_tasks(60, seed=11))
    picked = [t for t in tasks if t["kind"] == "function"][:3] + [t for t in tasks if t["kind"] == "stdio"][:3]
    for task in picked:
        res = answer(env, task, f"```python\n{task['reference_solution']}```")
        assert res.passed, (task["family"], res)
    stdio = picked[-1]
    res = answer(env, stdio, "```python\nprint('definitely not it')\n```")
    assert not res.passed and res.reasons == ["wrong_output"] and "expected" in res.details["tests"][0]["error"]
    res = answer(env, stdio, "```python\nraise SystemExit(4)\n```")
    assert res.reasons == ["nonzero_exit"]


def test_partial_credit_and_a_hanging_test_does_not_sink_the_others(env):
    task = next(t for t in env.generate_tasks(200, seed=5) if t["family"] == "sum_multiples")
    ref = task["reference_solution"]
    hangs_on_zero = ref.replace("def sum_multiples(n):\n", "def sum_multiples(n):\n    while n == 0:\n        pass\n")
    res = answer(env, task, f"```python\n{hangs_on_zero}```")
    statuses = [t["status"] for t in res.details["tests"]]
    assert statuses[0] == "timeout" and statuses[1:] == ["passed"] * (len(statuses) - 1)
    assert res.reasons == ["timeout"] and res.score == pytest.approx((len(statuses) - 1) / len(statuses))


def test_single_turn_episode(env, humaneval):
    task = humaneval["HumanEval/2"]
    episode = CodeEnv(test_timeout_s=2.0, wall_timeout_s=8.0)
    messages, tools = episode.reset(task)
    assert messages == task["messages"] and tools == []
    step = episode.step({"role": "assistant", "content": task["reference_solution"]})
    assert step.done and step.reward == 1.0 and step.observations == [] and step.info["verify"]["passed"]
    with pytest.raises(RuntimeError):
        episode.step({"role": "assistant", "content": "again"})
    episode.reset(task)
    assert episode.step({"role": "assistant", "content": "    return 0.5\n"}).reward < 1.0


def test_bad_tasks_are_user_errors(env):
    good = {"id": "t", "kind": "function", "entry_point": "f", "tests": [{"name": "a", "code": "assert f() == 1"}]}
    for bad, key in [({**good, "kind": "sql"}, "kind"), ({**good, "tests": []}, "tests"),
                     ({**good, "tests": [{"name": "a"}]}, r"tests\[0\]"),
                     ({**good, "entry_point": "1x"}, "entry_point"), ({**good, "kind": "stdio"}, r"tests\[0\]")]:
        with pytest.raises(UserError, match=key):
            env.verify(Trajectory(bad, [{"role": "assistant", "content": "x"}]))
        with pytest.raises(UserError, match="code task 't'"):
            env.reset(bad)


def test_env_is_found_by_name_and_the_rlimit_backend_also_verifies(humaneval):
    assert load_env_class("code") is CodeEnv
    task = humaneval["HumanEval/0"]
    env = CodeEnv(backend="rlimit", test_timeout_s=2.0, wall_timeout_s=8.0)
    assert answer(env, task, task["reference_solution"]).passed
    assert not answer(env, task, "    return True\n").passed
