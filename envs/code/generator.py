"""Seeded procedural code tasks: small Python problems of two kinds, with reference solutions and hidden tests.

Each family is a problem template with random parameters (divisors, offsets, moduli, formats, ...), so the same
family yields many distinct problems. A family gives the reference solution as code; the expected outputs of the
hidden tests are computed by running that very code here (trusted, ours), so tests and reference always agree.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from envs.code.humaneval import function_message
from posttrain.environment import Task
from posttrain.errors import UserError

STDIO_INSTRUCTIONS = ("Write a complete Python program that reads standard input and writes standard output. "
                      "Answer with the program in one ```python code block.")
N_TESTS = 6


@dataclass
class Spec:
    key: tuple  # what makes two problems the same
    kind: str  # "function" | "stdio"
    name: str  # function name (function kind)
    signature: str  # "(n: int) -> int" (function kind)
    description: str
    code: str  # reference solution: the function, or for stdio a `solve(text) -> str` function
    inputs: list[Any]  # argument tuples (function) or stdin texts (stdio)


def _words(rng: random.Random, n: int, alphabet: str = string.ascii_lowercase) -> list[str]:
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(n)]


def _ints(rng: random.Random, n: int, lo: int = -50, hi: int = 50) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


# ---- function families -----------------------------------------------------------------------------------------

def sum_multiples(rng: random.Random) -> Spec:
    a, b = rng.sample(range(2, 16), 2)
    return Spec(("sum_multiples", a, b), "function", "sum_multiples", "(n: int) -> int",
                f"Return the sum of all positive integers below n that are divisible by {a} or by {b}.",
                f"def sum_multiples(n):\n    return sum(i for i in range(1, n) if i % {a} == 0 or i % {b} == 0)\n",
                [(0,), (1,)] + [(rng.randint(2, 3000),) for _ in range(N_TESTS - 2)])


def count_chars(rng: random.Random) -> Spec:
    chars = "".join(sorted(rng.sample(string.ascii_lowercase, rng.randint(2, 6))))
    return Spec(("count_chars", chars), "function", "count_chars", "(s: str) -> int",
                f"Return how many characters of s are one of {chars!r} (lowercase only; case matters).",
                f"def count_chars(s):\n    return sum(1 for c in s if c in {chars!r})\n",
                [("",)] + [(" ".join(_words(rng, rng.randint(1, 6), string.ascii_letters)),)
                           for _ in range(N_TESTS - 1)])


def rotate_left(rng: random.Random) -> Spec:
    k = rng.randint(1, 12)
    return Spec(("rotate_left", k), "function", "rotate_left", "(xs: list) -> list",
                f"Return a new list: xs rotated left by {k} positions (wrapping around as often as needed; [] for []).",
                f"def rotate_left(xs):\n    if not xs:\n        return []\n    k = {k} % len(xs)\n"
                "    return xs[k:] + xs[:k]\n",
                [([],)] + [(_ints(rng, rng.randint(1, 15)),) for _ in range(N_TESTS - 1)])


def recurrence(rng: random.Random) -> Spec:
    a, b, p, q = rng.randint(0, 9), rng.randint(0, 9), rng.randint(1, 5), rng.randint(1, 5)
    m = rng.choice([97, 1000, 10007, 1_000_007])
    return Spec(("recurrence", a, b, p, q, m), "function", "sequence_term", "(n: int) -> int",
                f"f(0) = {a}, f(1) = {b}, and f(n) = ({p} * f(n-1) + {q} * f(n-2)) mod {m} for n >= 2. "
                "Return f(n) for 0 <= n <= 10000.",
                f"def sequence_term(n):\n    x, y = {a}, {b}\n    for _ in range(n):\n"
                f"        x, y = y, ({p} * y + {q} * x) % {m}\n    return x\n",
                [(0,), (1,)] + [(rng.randint(2, 5000),) for _ in range(N_TESTS - 2)])


def filter_map(rng: random.Random) -> Spec:
    c, d = rng.choice([i for i in range(-5, 6) if i]), rng.randint(-9, 9)
    m = rng.randint(2, 7)
    r = rng.randint(0, m - 1)
    return Spec(("filter_map", c, d, m, r), "function", "filter_map", "(xs: list[int]) -> list[int]",
                f"Keep the numbers x of xs (in order) with x % {m} == {r} (Python's %), and return x * {c} + {d} "
                "for each of them.",
                f"def filter_map(xs):\n    return [x * {c} + {d} for x in xs if x % {m} == {r}]\n",
                [([],)] + [(_ints(rng, rng.randint(1, 20)),) for _ in range(N_TESTS - 1)])


def caesar(rng: random.Random) -> Spec:
    k = rng.randint(1, 25)
    return Spec(("caesar", k), "function", "caesar", "(s: str) -> str",
                f"Shift every lowercase ASCII letter of s forward by {k} in the alphabet (wrapping z to a); "
                "leave every other character unchanged.",
                "def caesar(s):\n    return ''.join(chr((ord(c) - 97 + " + str(k) + ") % 26 + 97) "
                "if 'a' <= c <= 'z' else c for c in s)\n",
                [("",)] + [(" ".join(_words(rng, rng.randint(1, 5), string.ascii_letters + "!?")),)
                           for _ in range(N_TESTS - 1)])


def digit_sum(rng: random.Random) -> Spec:
    base = rng.randint(2, 16)
    return Spec(("digit_sum", base), "function", "digit_sum", "(n: int) -> int",
                f"Return the sum of the digits of the non-negative integer n written in base {base}.",
                f"def digit_sum(n):\n    total = 0\n    while n:\n        total += n % {base}\n        n //= {base}\n"
                "    return total\n",
                [(0,)] + [(rng.randint(1, 10**9),) for _ in range(N_TESTS - 1)])


def run_length(rng: random.Random) -> Spec:
    count_first, sep = rng.random() < 0.5, rng.choice(["", "-", ",", " "])
    item = "f'{n}{ch}'" if count_first else "f'{ch}{n}'"
    shape = "count then character" if count_first else "character then count"
    return Spec(("run_length", count_first, sep), "function", "run_length", "(s: str) -> str",
                f"Run-length encode s: each maximal run of one character becomes {shape}, runs joined by {sep!r}.",
                "def run_length(s):\n    out = []\n    i = 0\n    while i < len(s):\n        j = i\n"
                "        while j < len(s) and s[j] == s[i]:\n            j += 1\n        ch, n = s[i], j - i\n"
                f"        out.append({item})\n        i = j\n    return {sep!r}.join(out)\n",
                [("",)] + [("".join(rng.choice("aab") * rng.randint(1, 4) for _ in range(rng.randint(1, 8))),)
                           for _ in range(N_TESTS - 1)])


def poly_eval(rng: random.Random) -> Spec:
    coeffs = [rng.randint(-9, 9) for _ in range(rng.randint(2, 5))]
    terms = " + ".join(f"({c}) * x**{i}" for i, c in enumerate(coeffs))
    return Spec(("poly_eval", tuple(coeffs)), "function", "poly_value", "(x: int) -> int",
                f"Return the value of the polynomial {terms} at the integer x.",
                f"def poly_value(x):\n    return sum(c * x**i for i, c in enumerate({coeffs!r}))\n",
                [(0,)] + [(rng.randint(-30, 30),) for _ in range(N_TESTS - 1)])


def long_words(rng: random.Random) -> Spec:
    k = rng.randint(1, 8)
    return Spec(("long_words", k), "function", "count_long_words", "(text: str) -> int",
                f"Return how many whitespace-separated words of text have more than {k} characters.",
                f"def count_long_words(text):\n    return sum(1 for w in text.split() if len(w) > {k})\n",
                [("",)] + [(" ".join(_words(rng, rng.randint(1, 12))),) for _ in range(N_TESTS - 1)])


def clamp_sort(rng: random.Random) -> Spec:
    lo = rng.randint(-30, 10)
    hi = lo + rng.randint(1, 40)
    desc = rng.random() < 0.5
    order = "descending" if desc else "ascending"
    return Spec(("clamp_sort", lo, hi, desc), "function", "clamp_sort", "(xs: list[int]) -> list[int]",
                f"Clamp every number of xs into [{lo}, {hi}] and return them sorted in {order} order.",
                f"def clamp_sort(xs):\n    return sorted((min(max(x, {lo}), {hi}) for x in xs), reverse={desc})\n",
                [([],)] + [(_ints(rng, rng.randint(1, 15)),) for _ in range(N_TESTS - 1)])


def pair_sums(rng: random.Random) -> Spec:
    t = rng.randint(-10, 30)
    return Spec(("pair_sums", t), "function", "count_pairs", "(xs: list[int]) -> int",
                f"Return the number of index pairs i < j with xs[i] + xs[j] == {t}.",
                f"def count_pairs(xs):\n    return sum(1 for i in range(len(xs)) for j in range(i + 1, len(xs)) "
                f"if xs[i] + xs[j] == {t})\n",
                [([],)] + [(_ints(rng, rng.randint(2, 25), -10, 30),) for _ in range(N_TESTS - 1)])


def window_max(rng: random.Random) -> Spec:
    k = rng.randint(1, 6)
    return Spec(("window_max", k), "function", "max_window_sum", "(xs: list[int]) -> int",
                f"Return the largest sum of {k} consecutive elements of xs, or None if xs has fewer than {k} elements.",
                f"def max_window_sum(xs):\n    if len(xs) < {k}:\n        return None\n"
                f"    return max(sum(xs[i:i + {k}]) for i in range(len(xs) - {k} + 1))\n",
                [([],)] + [(_ints(rng, rng.randint(k, k + 12)),) for _ in range(N_TESTS - 1)])


# ---- stdin/stdout families: the reference is `solve(text) -> str`; the program prints solve(stdin) ---------------

def stdio_threshold_sum(rng: random.Random) -> Spec:
    t, cmp = rng.randint(-20, 20), rng.choice([">", "<", ">=", "<="])
    agg = rng.choice(["sum", "count", "max"])
    what = {"sum": "the sum of", "count": "how many there are of", "max": "the largest of (or 'none' if none)"}[agg]
    result = {"sum": "sum(picked)", "count": "len(picked)", "max": "max(picked) if picked else 'none'"}[agg]
    return Spec(("stdio_threshold_sum", t, cmp, agg), "stdio", "", "",
                f"The first line holds N; the next N lines hold one integer each. Print {what} the integers x "
                f"with x {cmp} {t}.",
                f"def solve(text):\n    nums = [int(x) for x in text.split()]\n"
                f"    picked = [x for x in nums[1:1 + nums[0]] if x {cmp} {t}]\n    return str({result})\n",
                [_lines_of_ints(rng) for _ in range(N_TESTS)])


def _lines_of_ints(rng: random.Random) -> str:
    xs = _ints(rng, rng.randint(0, 12))
    return "\n".join([str(len(xs)), *map(str, xs)]) + "\n"


def stdio_words(rng: random.Random) -> Spec:
    k, upper = rng.randint(1, 6), rng.random() < 0.5
    change = "upper-cased" if upper else "reversed (letters in reverse order)"
    fn = "w.upper()" if upper else "w[::-1]"
    return Spec(("stdio_words", k, upper), "stdio", "", "",
                f"For every input line, print one line: its whitespace-separated words of length at least {k}, "
                f"each {change}, joined by single spaces (an empty line if there are none).",
                f"def solve(text):\n    return '\\n'.join(' '.join({fn} for w in line.split() if len(w) >= {k}) "
                "for line in text.splitlines())\n",
                ["\n".join(" ".join(_words(rng, rng.randint(0, 6))) for _ in range(rng.randint(1, 5))) + "\n"
                 for _ in range(N_TESTS)])


def stdio_arith(rng: random.Random) -> Spec:
    op, m = rng.choice(["a + b", "a - b", "a * b", "max(a, b)", "min(a, b)", "a ^ b"]), rng.randint(2, 2000)
    return Spec(("stdio_arith", op, m), "stdio", "", "",
                f"Each input line holds two integers a and b. For each line print ({op}) mod {m} "
                "(a non-negative result, as Python's % gives; ^ is bitwise xor).",
                f"def solve(text):\n    out = []\n    for line in text.splitlines():\n        if line.strip():\n"
                f"            a, b = map(int, line.split())\n            out.append(str(({op}) % {m}))\n"
                "    return '\\n'.join(out)\n",
                ["\n".join(f"{rng.randint(-10**6, 10**6)} {rng.randint(-10**6, 10**6)}"
                           for _ in range(rng.randint(1, 6))) + "\n" for _ in range(N_TESTS)])


def stdio_letter_counts(rng: random.Random) -> Spec:
    k = rng.randint(1, 4)
    letters = "".join(sorted(rng.sample("abcdefg", rng.randint(1, 7))))
    return Spec(("stdio_letter_counts", k, letters), "stdio", "", "",
                f"Read all of standard input. For every letter of {letters!r} that occurs at least {k} times, print "
                "a line 'letter count', in alphabetical order.",
                f"def solve(text):\n    return '\\n'.join(f'{{c}} {{text.count(c)}}' for c in "
                f"{letters!r} if text.count(c) >= {k})\n",
                [" ".join(_words(rng, rng.randint(1, 10), "abcdefg")) + "\n" for _ in range(N_TESTS)])


def stdio_grid(rng: random.Random) -> Spec:
    by_rows, mark = rng.random() < 0.5, rng.choice("#*@")
    what = "row" if by_rows else "column"
    count = (f"[row.count({mark!r}) for row in rows]" if by_rows
             else f"[sum(row[j] == {mark!r} for row in rows) for j in range(len(rows[0]))] if rows else []")
    return Spec(("stdio_grid", by_rows, mark), "stdio", "", "",
                f"The input is a rectangular grid of '.' and {mark!r} characters, one row per line. Print, on one "
                f"line separated by spaces, the number of {mark!r} in each {what}, in order.",
                f"def solve(text):\n    rows = [r for r in text.splitlines() if r]\n"
                f"    return ' '.join(map(str, {count}))\n",
                [_grid(rng, mark) for _ in range(N_TESTS)])


def _grid(rng: random.Random, mark: str) -> str:
    w = rng.randint(1, 8)
    return "\n".join("".join(rng.choice("." + mark) for _ in range(w)) for _ in range(rng.randint(1, 6))) + "\n"


def stdio_prefix(rng: random.Random) -> Spec:
    fn, c = rng.choice(["max", "min", "sum"]), rng.choice([-3, -2, -1, 1, 2, 3, 5, 10])
    step = {"max": "max(acc, y)", "min": "min(acc, y)", "sum": "acc + y"}[fn]
    return Spec(("stdio_prefix", fn, c), "stdio", "", "",
                f"One line of space-separated integers x is given. Print the running {fn} of the values x * {c} "
                "after each number (the first value is the first number's), space-separated on one line.",
                "def solve(text):\n    out = []\n    for i, x in enumerate(map(int, text.split())):\n"
                f"        y = x * {c}\n        acc = y if i == 0 else {step}\n        out.append(acc)\n"
                "    return ' '.join(map(str, out))\n",
                [" ".join(map(str, _ints(rng, rng.randint(1, 12)))) + "\n" for _ in range(N_TESTS)])


FUNCTION_FAMILIES: list[Callable[[random.Random], Spec]] = [
    sum_multiples, count_chars, rotate_left, recurrence, filter_map, caesar, digit_sum, run_length, poly_eval,
    long_words, clamp_sort, pair_sums, window_max,
]
STDIO_FAMILIES: list[Callable[[random.Random], Spec]] = [
    stdio_threshold_sum, stdio_words, stdio_arith, stdio_letter_counts, stdio_grid, stdio_prefix,
]
STDIO_MAIN = "\n\nimport sys\nprint(solve(sys.stdin.read()))\n"


def _task(spec: Spec) -> Task:
    namespace: dict[str, Any] = {}
    task_id = "code-gen/" + hashlib.sha256(repr(spec.key).encode()).hexdigest()[:16]
    if spec.kind == "function":
        exec(spec.code, namespace)  # our own reference code: its answers are the expected values
        ref = namespace[spec.name]
        stub = f'def {spec.name}{spec.signature}:\n    """{spec.description}"""\n'
        tests = [{"name": f"{task_id}#{i}", "code": f"assert candidate({', '.join(map(repr, args))}) == "
                  f"{ref(*args)!r}"} for i, args in enumerate(spec.inputs)]
        return {"id": task_id, "env": "code", "source": "generated", "family": spec.key[0], "kind": "function",
                "messages": [{"role": "user", "content": function_message(stub)}], "tools": [],
                "prompt": stub, "entry_point": spec.name, "test_setup": "", "tests": tests,
                "reference_solution": spec.code}
    exec(spec.code, namespace)
    tests = [{"name": f"{task_id}#{i}", "input": text, "output": namespace["solve"](text) + "\n"}
             for i, text in enumerate(spec.inputs)]
    content = f"{STDIO_INSTRUCTIONS}\n\n{spec.description}"
    return {"id": task_id, "env": "code", "source": "generated", "family": spec.key[0], "kind": "stdio",
            "messages": [{"role": "user", "content": content}], "tools": [], "tests": tests,
            "reference_solution": spec.code + STDIO_MAIN}


def generate_tasks(n: int, seed: int) -> Iterator[Task]:
    """``n`` distinct problems (no two with the same family and parameters), the same for the same seed."""
    if n < 0:
        raise UserError(f"number of tasks must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[tuple] = set()
    attempts = 0
    while len(seen) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(f"could not generate {n} distinct code tasks (only {len(seen)} found); ask for fewer")
        # Half of each kind: stdin/stdout programs are a different skill from writing one function.
        families = FUNCTION_FAMILIES if rng.random() < 0.5 else STDIO_FAMILIES
        spec = rng.choice(families)(rng)
        if spec.key in seen:
            continue
        seen.add(spec.key)
        yield _task(spec)
