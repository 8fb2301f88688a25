"""Values between the tests and the candidate: what HumanEval/MBPP-style tests compare must cross faithfully (big
ints, iterators, Decimal/Fraction, deep nesting, argument mutation, exceptions), and what cannot cross is a reported
reason, never a crash and never a pass. The codec itself, then the same cases through the real sandbox."""

from __future__ import annotations

import collections
from decimal import Decimal
from fractions import Fraction

import pytest

from envs.code import CodeEnv
from envs.code.judge.values import Unsupported, dump, load
from posttrain.environment import Trajectory


def round_trip(value):
    return load(dump([value])[0])[0][0]


def test_codec_keeps_types_sharing_cycles_and_depth():
    point = collections.namedtuple("Point", "x y")
    values = [10 ** 5000, -(10 ** 400), Decimal("0.30000000000000000001"), Fraction(1, 3), range(2, 10**30, 7),
              collections.deque([1, 2], maxlen=3), collections.Counter("abca"), collections.OrderedDict(b=1, a=2),
              collections.defaultdict(list, {1: [2]}), point(1, 2), bytearray(b"\x00x"), b"\xff", Ellipsis,
              {"a": 1}.keys(), {(1, 2): frozenset({3})}, float("inf"), -0.0, "\ud800", 3 + 4j]
    for v in values:
        back = round_trip(v)
        assert type(back) is type(v) or type(v).__name__ == "Point", (v, back)
        if not isinstance(v, type({}.keys())):
            assert back == v, (v, back)
    assert list(round_trip({"a": 1}.keys())) == ["a"] and round_trip(point(1, 2)).y == 2
    assert round_trip(collections.defaultdict(list))["missing"] == []
    shared = [1]
    back = round_trip([shared, shared, (shared,)])
    assert back[0] is back[1] is back[2][0]
    cyclic = []
    cyclic.append((cyclic,))
    back = round_trip(cyclic)
    assert back[0][0] is back
    deep = inner = []
    for _ in range(100_000):  # far deeper than any recursion limit: nothing in the codec recurses
        inner.append([])
        inner = inner[0]
    back, depth = round_trip(deep), 0
    while back:
        back, depth = back[0], depth + 1
    assert depth == 100_000


def test_codec_sends_mutated_arguments_back_into_the_callers_objects():
    xs, inner = [3, 1], []
    d = {"k": inner}
    message, originals = dump([(xs, d), {}])
    (args, _), objects = load(message)
    args[0].sort()
    args[1]["k"].append(7)
    args[1]["new"] = args[0]
    mutable = [o for o in objects if isinstance(o, (list, dict))]
    reply, _ = dump([args[0]], {id(o): i for i, o in enumerate(objects)}, mutable)
    result = load(reply, originals)[0][0]
    assert xs == [1, 3] and inner == [7] and d["k"] is inner and d["new"] is xs and result is xs


def test_codec_refuses_what_it_cannot_carry_and_malformed_graphs():
    for value in (object(), lambda: 1, [1, {2: object()}], collections.defaultdict(lambda: 0)):
        with pytest.raises(Unsupported):
            dump([value])
    bad = [{"n": [{"k": "tuple", "x": [["r", 0]]}], "v": [["r", 0]]},  # a tuple that holds itself
           {"n": [], "v": [["o", 3]]}, {"n": [], "v": [["h", 0]]}, {"n": [], "v": [["i", "zz"]]},
           {"n": [{"k": "ntuple", "x": [1], "f": ["not an identifier", ["a"]]}], "v": []},
           {"n": [{"k": "set", "x": [["r", 1]]}, {"k": "list", "x": []}], "v": []},  # unhashable member
           {"n": [{"k": "ddict", "x": [], "f": "os.system"}], "v": []}, {"n": [], "v": [["F", 1, 0]]}]
    for message in bad:
        with pytest.raises((ValueError, TypeError, ZeroDivisionError)):
            load(message)


# ---- through the sandbox -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env():
    env = CodeEnv(backend="bwrap", test_timeout_s=3.0, wall_timeout_s=20.0)
    yield env
    env.close()


def check(env, solution: str, *tests: str, prompt: str = "def f(*args):\n    pass\n"):
    task = {"id": "values", "env": "code", "kind": "function", "messages": [], "tools": [], "prompt": prompt,
            "entry_point": "f", "test_setup": "import collections, itertools, math\n"
                                              "from decimal import Decimal\nfrom fractions import Fraction",
            "tests": [{"name": f"t{i}", "code": code} for i, code in enumerate(tests)]}
    return env.verify(Trajectory(task, [{"role": "assistant", "content": f"```python\n{solution}\n```"}]))


CORRECT = [
    ("import math\ndef f(n):\n    return math.factorial(n)", "assert candidate(2000) == math.factorial(2000)"),
    ("def f(x):\n    return x + 1", "assert candidate(10 ** 5000) == 10 ** 5000 + 1"),
    ("def f(n):\n    return map(lambda i: i * i, range(n))", "assert list(candidate(4)) == [0, 1, 4, 9]"),
    ("def f():\n    i = 0\n    while True:\n        yield i\n        i += 1",
     "g = candidate()\nassert next(g) == 0 and next(g) == 1\n"
     "assert list(itertools.islice(candidate(), 3)) == [0, 1, 2]"),
    ("def f(n):\n    return (c for c in 'abc'[:n])", "assert sorted(candidate(2), reverse=True) == ['b', 'a']"),
    ("from decimal import Decimal\ndef f():\n    return Decimal('0.1') + Decimal('0.2')",
     "assert candidate() == Decimal('0.3') and str(candidate()) == '0.3'"),
    ("from fractions import Fraction\ndef f(a, b):\n    return Fraction(a, b) * 3",
     "assert candidate(1, 9) == Fraction(1, 3)"),
    ("def f(n):\n    out = inner = []\n    for _ in range(n):\n        inner.append([])\n        inner = inner[0]\n"
     "    return out",
     "want = inner = []\nfor _ in range(900):\n    inner.append([])\n    inner = inner[0]\n"
     "assert candidate(900) == want"),
    ("def f(xs):\n    xs.sort()", "xs = [3, 1, 2]\ncandidate(xs)\nassert xs == [1, 2, 3]"),
    ("def f(d):\n    d['k'].append(1)\n    d['n'] = 2", "inner = []\nd = {'k': inner}\ncandidate(d)\n"
                                                    "assert d == {'k': [1], 'n': 2} and d['k'] is inner"),
    ("def f(xs):\n    xs.append(0)\n    return xs", "xs = []\nassert candidate(xs) is xs and xs == [0]"),
    ("def f(x):\n    raise ValueError('no')",
     "try:\n    candidate(1)\nexcept ValueError as e:\n    assert str(e) == 'no'\nelse:\n    assert False"),
    ("class Missing(KeyError):\n    pass\ndef f(x):\n    raise Missing(x)",
     "try:\n    candidate(1)\nexcept KeyError:\n    pass\nelse:\n    assert False"),
    ("import collections\ndef f(s):\n    return collections.Counter(s)",
     "assert candidate('aab') == {'a': 2, 'b': 1}\nassert candidate('aab').most_common(1) == [('a', 2)]"),
    ("import collections\nP = collections.namedtuple('P', 'x y')\ndef f():\n    return P(1, 2)",
     "assert candidate() == (1, 2) and candidate().x == 1"),
    ("def f():\n    a = [1]\n    return [a, a]", "r = candidate()\nassert r[0] is r[1]"),
    ("def f():\n    a = []\n    a.append(a)\n    return a", "r = candidate()\nassert r[0] is r"),
    ("def f(n):\n    return {i: str(i) for i in range(n)}.items()", "assert dict(candidate(2)) == {0: '0', 1: '1'}"),
    ("def f():\n    return range(3), b'x', bytearray(b'y'), frozenset({1}), 1j",
     "assert candidate() == (range(3), b'x', bytearray(b'y'), frozenset({1}), 1j)"),
]


@pytest.mark.parametrize("solution,test", CORRECT, ids=range(len(CORRECT)))
def test_correct_answers_of_every_kind_pass(env, solution, test):
    res = check(env, solution, test)
    assert res.passed, (res.reasons, res.details.get("tests"), res.details.get("load_error"))


def test_faithful_failures_and_reported_refusals(env):
    # what also fails in a single process: a generator is no list
    res = check(env, "def f(n):\n    return (i for i in range(n))", "assert candidate(3) == [0, 1, 2]")
    assert res.reasons == ["wrong_answer"]
    # a crash is not "raised an exception", even for a test that expects one
    res = check(env, "def f(x):\n    import os\n    os._exit(1)",
                "try:\n    candidate(1)\nexcept Exception:\n    pass\nelse:\n    assert False")
    assert not res.passed and res.reasons == ["crashed"]
    # what cannot cross is a reason of its own, in both directions, and the next test still runs
    res = check(env, "def f(x=None):\n    return (lambda: 1) if x is None else x", "candidate()",
                "assert candidate(lambda: 2) == 2", "assert candidate(3) == 3")
    assert [t["status"] for t in res.details["tests"]] == ["unsupported_value", "unsupported_value", "passed"]
    assert "function" in res.details["tests"][0]["error"]
    # a test that swallows exceptions cannot swallow an unsupported value into a pass
    res = check(env, "def f():\n    return object()", "try:\n    candidate()\nexcept Exception:\n    pass")
    assert res.reasons == ["unsupported_value"]
    # a value too large to send back
    res = check(env, "def f():\n    return 'x' * (40 << 20)", "assert candidate()")
    assert res.reasons == ["unsupported_value"] and "too large" in res.details["tests"][0]["error"]


def test_an_iterator_of_a_restarted_worker_is_reported(env):
    res = check(env, "def f(hang=False):\n    while hang:\n        pass\n    return iter([1, 2])",
                "g = candidate()\nassert next(g) == 1", "candidate(True)", "assert next(g) == 2")
    assert [t["status"] for t in res.details["tests"]] == ["passed", "timeout", "crashed"]
    assert "restarted" in res.details["tests"][2]["error"]
