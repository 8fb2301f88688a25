"""Small Python function tasks with correct solutions in ```python blocks.

Each task carries its tests (plain asserts); :func:`generate` runs every solution against its tests and refuses to emit
one that fails, so the sample data cannot contain a wrong solution.
"""

from __future__ import annotations

import random
import textwrap
from typing import Any

Task = tuple[str, str, list[str]]  # prompt, solution code, test asserts


def sum_of_multiples(a: int, b: int) -> Task:
    expected = {n: sum(i for i in range(1, n) if i % a == 0 or i % b == 0) for n in (1, 10, 30, 100)}
    return (f"Write a Python function `sum_of_multiples(n)` that returns the sum of all positive integers below `n` "
            f"that are divisible by {a} or {b}.",
            f"def sum_of_multiples(n):\n    return sum(i for i in range(1, n) if i % {a} == 0 or i % {b} == 0)\n",
            [f"assert sum_of_multiples({n}) == {v}" for n, v in expected.items()])


def multiply_all(k: int) -> Task:
    return (f"Write a Python function `multiply_all(nums)` that returns a new list with every number in `nums` "
            f"multiplied by {k}.",
            f"def multiply_all(nums):\n    return [x * {k} for x in nums]\n",
            ["assert multiply_all([]) == []", f"assert multiply_all([1, -2, 3]) == {[k, -2 * k, 3 * k]}"])


def keep_divisible(k: int) -> Task:
    nums = list(range(1, 25))
    return (f"Write a Python function `keep_divisible(nums)` that returns the numbers in `nums` that are divisible by "
            f"{k}, in their original order.",
            f"def keep_divisible(nums):\n    return [x for x in nums if x % {k} == 0]\n",
            [f"assert keep_divisible({nums}) == {[x for x in nums if x % k == 0]}", "assert keep_divisible([]) == []"])


def long_words(k: int) -> Task:
    words = ["a", "tree", "garden", "sky", "mountain", "river", "cat", "elephant"]
    return (f"Write a Python function `long_words(words)` that returns the words from the list `words` that are "
            f"longer than {k} characters, keeping their order.",
            f"def long_words(words):\n    return [w for w in words if len(w) > {k}]\n",
            [f"assert long_words({words}) == {[w for w in words if len(w) > k]}"])


def count_letter(ch: str) -> Task:
    text = "A quick brown fox jumps over the lazy dog, and Another Dog naps."
    return (f"Write a Python function `count_letter(text)` that counts how many times the letter '{ch}' appears in "
            f"`text`, ignoring case.",
            f"def count_letter(text):\n    return text.lower().count({ch!r})\n",
            [f"assert count_letter({text!r}) == {text.lower().count(ch)}", "assert count_letter('') == 0"])


def starting_with(ch: str) -> Task:
    words = ["apple", "Banana", "cherry", "avocado", "blueberry", "Apricot", "date", "coconut", "grape", "kiwi"]
    keep = [w for w in words if w.lower().startswith(ch)]
    return (f"Write a Python function `starting_with(words)` that returns the words in `words` that start with the "
            f"letter '{ch}' (upper or lower case), keeping their order.",
            f"def starting_with(words):\n    return [w for w in words if w[:1].lower() == {ch!r}]\n",
            [f"assert starting_with({words}) == {keep}", "assert starting_with([]) == []"])


def sum_of_powers(p: int) -> Task:
    return (f"Write a Python function `sum_of_powers(nums)` that returns the sum of each number in `nums` raised to "
            f"the power {p}.",
            f"def sum_of_powers(nums):\n    return sum(x ** {p} for x in nums)\n",
            [f"assert sum_of_powers([1, 2, 3]) == {1 + 2 ** p + 3 ** p}", "assert sum_of_powers([]) == 0"])


def fizz_buzz(x: int, y: int, w1: str, w2: str) -> Task:
    def ref(n: int) -> list[str]:
        return [w1 + w2 if i % x == 0 and i % y == 0 else w1 if i % x == 0 else w2 if i % y == 0 else str(i)
                for i in range(1, n + 1)]
    code = textwrap.dedent(f"""\
        def fizz_buzz(n):
            out = []
            for i in range(1, n + 1):
                if i % {x} == 0 and i % {y} == 0:
                    out.append({w1 + w2!r})
                elif i % {x} == 0:
                    out.append({w1!r})
                elif i % {y} == 0:
                    out.append({w2!r})
                else:
                    out.append(str(i))
            return out
        """)
    return (f"Write a Python function `fizz_buzz(n)` that returns a list of strings for the numbers 1 to `n`: "
            f"'{w1}' for multiples of {x}, '{w2}' for multiples of {y}, '{w1}{w2}' for multiples of both, and the "
            f"number itself as a string otherwise.", code, [f"assert fizz_buzz(15) == {ref(15)}"])


def clamp(lo: int, hi: int) -> Task:
    return (f"Write a Python function `clamp(x)` that returns `x` limited to the range from {lo} to {hi} "
            "(inclusive).",
            f"def clamp(x):\n    return max({lo}, min({hi}, x))\n",
            [f"assert clamp({lo - 5}) == {lo}", f"assert clamp({hi + 5}) == {hi}", f"assert clamp({lo}) == {lo}"])


def chunk(k: int) -> Task:
    items = list(range(1, 11))
    return (f"Write a Python function `chunk(items)` that splits the list `items` into consecutive pieces of {k} "
            "elements (the last piece may be shorter).",
            f"def chunk(items):\n    return [items[i:i + {k}] for i in range(0, len(items), {k})]\n",
            [f"assert chunk({items}) == {[items[i:i + k] for i in range(0, len(items), k)]}", "assert chunk([]) == []"])


def rotate(k: int) -> Task:
    items = [1, 2, 3, 4, 5, 6, 7]
    r = k % len(items)
    return (f"Write a Python function `rotate_left(items)` that returns the list `items` rotated to the left by {k} "
            "positions (wrapping around; an empty list stays empty).",
            f"def rotate_left(items):\n    if not items:\n        return []\n    k = {k} % len(items)\n"
            "    return items[k:] + items[:k]\n",
            [f"assert rotate_left({items}) == {items[r:] + items[:r]}", "assert rotate_left([]) == []"])


FIXED: list[Task] = [
    ("Write a Python function `is_palindrome(s)` that returns True if `s` reads the same backwards as forwards, "
     "ignoring case and any character that is not a letter or digit.",
     "def is_palindrome(s):\n    cleaned = [c.lower() for c in s if c.isalnum()]\n"
     "    return cleaned == cleaned[::-1]\n",
     ["assert is_palindrome('A man, a plan, a canal: Panama')", "assert not is_palindrome('hello')"]),
    ("Write a Python function `reverse_words(sentence)` that reverses the order of the words in a sentence "
     "(words are separated by whitespace; the result uses single spaces).",
     "def reverse_words(sentence):\n    return ' '.join(reversed(sentence.split()))\n",
     ["assert reverse_words('the quick  brown fox') == 'fox brown quick the'", "assert reverse_words('') == ''"]),
    ("Write a Python function `factorial(n)` that returns n! for a non-negative integer `n`.",
     "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result\n",
     ["assert factorial(0) == 1", "assert factorial(5) == 120", "assert factorial(10) == 3628800"]),
    ("Write a Python function `fibonacci(n)` that returns the n-th Fibonacci number, with fibonacci(0) == 0 and "
     "fibonacci(1) == 1.",
     "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
     ["assert fibonacci(0) == 0", "assert fibonacci(1) == 1", "assert fibonacci(10) == 55"]),
    ("Write a Python function `gcd(a, b)` that returns the greatest common divisor of two positive integers using "
     "Euclid's algorithm.",
     "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n",
     ["assert gcd(48, 18) == 6", "assert gcd(17, 5) == 1", "assert gcd(100, 75) == 25"]),
    ("Write a Python function `is_prime(n)` that returns True if the integer `n` is a prime number.",
     "def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n"
     "            return False\n        i += 1\n    return True\n",
     ["assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]"]),
    ("Write a Python function `flatten(lists)` that turns a list of lists into one list, keeping the order.",
     "def flatten(lists):\n    return [x for sub in lists for x in sub]\n",
     ["assert flatten([[1, 2], [], [3]]) == [1, 2, 3]", "assert flatten([]) == []"]),
    ("Write a Python function `remove_duplicates(items)` that removes repeated elements from a list, keeping the "
     "first occurrence of each and the original order.",
     "def remove_duplicates(items):\n    seen = set()\n    out = []\n    for x in items:\n        if x not in seen:\n"
     "            seen.add(x)\n            out.append(x)\n    return out\n",
     ["assert remove_duplicates([3, 1, 3, 2, 1]) == [3, 1, 2]"]),
    ("Write a Python function `digit_sum(n)` that returns the sum of the decimal digits of a non-negative integer.",
     "def digit_sum(n):\n    return sum(int(d) for d in str(n))\n",
     ["assert digit_sum(0) == 0", "assert digit_sum(9045) == 18"]),
    ("Write a Python function `running_total(nums)` that returns the list of running sums of `nums`.",
     "def running_total(nums):\n    out, total = [], 0\n    for x in nums:\n        total += x\n"
     "        out.append(total)\n    return out\n",
     ["assert running_total([1, 2, 3, 4]) == [1, 3, 6, 10]", "assert running_total([]) == []"]),
    ("Write a Python function `count_vowels(text)` that counts the vowels (a, e, i, o, u) in `text`, ignoring case.",
     "def count_vowels(text):\n    return sum(1 for c in text.lower() if c in 'aeiou')\n",
     ["assert count_vowels('Hello World') == 3", "assert count_vowels('xyz') == 0"]),
    ("Write a Python function `second_largest(nums)` that returns the second largest distinct value in `nums`, or "
     "None if there is no such value.",
     "def second_largest(nums):\n    values = sorted(set(nums), reverse=True)\n"
     "    return values[1] if len(values) > 1 else None\n",
     ["assert second_largest([4, 1, 4, 3]) == 3", "assert second_largest([7, 7]) is None"]),
    ("Write a Python function `word_frequencies(text)` that returns a dict mapping each lower-cased word (split on "
     "whitespace) to the number of times it occurs.",
     "def word_frequencies(text):\n    counts = {}\n    for word in text.lower().split():\n"
     "        counts[word] = counts.get(word, 0) + 1\n    return counts\n",
     ["assert word_frequencies('a b A c b a') == {'a': 3, 'b': 2, 'c': 1}", "assert word_frequencies('') == {}"]),
    ("Write a Python function `capitalize_words(text)` that capitalizes the first letter of every word and "
     "lower-cases the rest (words are separated by single spaces).",
     "def capitalize_words(text):\n    return ' '.join(w[:1].upper() + w[1:].lower() for w in text.split(' '))\n",
     ["assert capitalize_words('hello wORLD') == 'Hello World'"]),
]


def _tasks(rng: random.Random) -> list[Task]:
    tasks: list[Task] = list(FIXED)
    pairs = [(a, b) for a in range(2, 10) for b in range(a + 1, 12)]
    tasks += [sum_of_multiples(a, b) for a, b in rng.sample(pairs, 40)]
    tasks += [multiply_all(k) for k in range(2, 14)]
    tasks += [keep_divisible(k) for k in range(2, 14)]
    tasks += [long_words(k) for k in range(1, 8)]
    tasks += [count_letter(ch) for ch in "abcdefghijklmnopqrstuvwxyz" if ch in "aeiodgnrst"]
    tasks += [sum_of_powers(p) for p in range(2, 8)]
    tasks += [starting_with(ch) for ch in "abcdgkx"]
    words = [("Fizz", "Buzz"), ("Ping", "Pong"), ("Foo", "Bar"), ("Tick", "Tock"), ("Hip", "Hop")]
    combos = [(x, y) for x in range(2, 6) for y in range(x + 1, 8)]
    tasks += [fizz_buzz(x, y, *rng.choice(words)) for x, y in rng.sample(combos, 14)]
    tasks += [clamp(lo, lo + span) for lo in (-10, 0, 5, 20) for span in (5, 10, 50)]
    tasks += [chunk(k) for k in range(2, 8)]
    tasks += [rotate(k) for k in range(1, 12)]
    return tasks


def _check(code: str, tests: list[str]) -> None:
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own generated solution, checked before it is written out
    for test in tests:
        exec(test, namespace)  # noqa: S102


def generate(seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for prompt, code, tests in _tasks(rng):
        _check(code, tests)
        name = code.split("(", 1)[0].removeprefix("def ")
        example = max(tests, key=len).removeprefix("assert ")  # the most informative of its tests
        answer = f"Here is `{name}`:\n\n```python\n{code}```\n\nFor example: `{example}`."
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                     "tests": tests})
    rng.shuffle(rows)
    return rows
