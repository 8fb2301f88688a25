"""Raw text for mid-training: worked reasoning documents (the "reasoning" bucket) and general prose (the "replay"
bucket). Every number is computed and every fact comes from :mod:`posttrain.data.samples.facts`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from posttrain.data.samples.facts import (
    CAPITALS,
    CONVERSIONS,
    DEFINITIONS,
    ELEMENTS,
    ORDINALS,
    PLANETS,
    fmt_number,
    plural,
)


def euclid(rng: random.Random) -> str:
    g = rng.randint(2, 30)
    a, b = g * rng.randint(5, 40), g * rng.randint(2, 20)
    a, b = max(a, b), min(a, b)
    x, y, steps = a, b, []
    while y:
        steps.append(f"{x} = {x // y} × {y} + {x % y}")
        x, y = y, x % y
    return (f"Problem: find the greatest common divisor of {a} and {b}.\nReasoning: Euclid's algorithm replaces the "
            f"pair (a, b) by (b, a mod b) until the remainder is zero, because every common divisor of a and b also "
            f"divides a mod b. " + "; ".join(steps) + f". The last non-zero remainder is {x}, so gcd({a}, {b}) = {x}.")


def factorize(rng: random.Random) -> str:
    n = rng.randint(30, 2000)
    m, p, factors, steps = n, 2, [], []
    while p * p <= m:
        while m % p == 0:
            steps.append(f"{m} ÷ {p} = {m // p}")
            factors.append(p)
            m //= p
        p += 1
    if m > 1:
        factors.append(m)
        steps.append(f"{m} is prime")
    return (f"Problem: write {n} as a product of primes.\nReasoning: divide by the smallest prime that divides the "
            f"number, and repeat on the quotient; a number with no divisor up to its square root is prime. "
            + "; ".join(steps) + f". So {n} = {' × '.join(map(str, factors))}.")


def gauss_sum(rng: random.Random) -> str:
    n = rng.randint(10, 200)
    total = n * (n + 1) // 2
    pairs = f"{n // 2} pairs" if n % 2 == 0 else f"{(n - 1) // 2} pairs and the middle number {(n + 1) // 2}"
    return (f"Problem: add the whole numbers from 1 to {n}.\nReasoning: pair the first number with the last, the "
            f"second with the second to last, and so on; every pair sums to {n + 1}. There are {pairs}. The sum is "
            f"{n} × {n + 1} ÷ 2 = {total}. Check with the formula n(n + 1)/2: {n} × {n + 1} / 2 = {total}.")


def binary(rng: random.Random) -> str:
    n = rng.randint(5, 255)
    m, steps, bits = n, [], []
    while m:
        steps.append(f"{m} ÷ 2 = {m // 2} remainder {m % 2}")
        bits.append(str(m % 2))
        m //= 2
    digits = "".join(reversed(bits))
    return (f"Problem: write {n} in binary.\nReasoning: divide by 2 repeatedly and record the remainders; read them "
            f"from last to first. " + "; ".join(steps) + f". Reading the remainders upwards gives {digits}, and "
            f"indeed int('{digits}', 2) = {n}.")


def compare_fractions(rng: random.Random) -> str:
    b, d = rng.randint(2, 12), rng.randint(2, 12)
    a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
    left, right = a * d, c * b
    rel = "greater than" if left > right else "less than" if left < right else "equal to"
    return (f"Problem: which is larger, {a}/{b} or {c}/{d}?\nReasoning: compare the cross products, which is the "
            f"same as writing both fractions over the common denominator {b * d}: {a}/{b} = {left}/{b * d} and "
            f"{c}/{d} = {right}/{b * d}. Since {left} is {rel} {right}, {a}/{b} is {rel} {c}/{d}.")


def unit_chain(rng: random.Random) -> str:
    h = rng.randint(2, 48)
    return (f"Problem: how many seconds are there in {h} hours?\nReasoning: one hour has 60 minutes and one minute has "
            f"60 seconds, so one hour has 60 × 60 = 3600 seconds. Then {h} hours have {h} × 3600 = {h * 3600} "
            "seconds.")


REASONING: list[Callable[[random.Random], str]] = [euclid, factorize, gauss_sum, binary, compare_fractions, unit_chain]


def capitals_paragraph(rng: random.Random) -> str:
    picks = rng.sample(CAPITALS, 3)
    return " ".join(f"{cap} is the capital of {c[0].upper() + c[1:]}." for c, cap in picks) + (
        " A capital city is usually where a country's government meets.")


def element_paragraph(rng: random.Random) -> str:
    name, symbol, number = rng.choice(ELEMENTS)
    return (f"{name.capitalize()} is a chemical element with the symbol {symbol}. Its atomic number is {number}, which "
            f"means that every {name} atom has {number} proton{'s' if number > 1 else ''} in its nucleus. The atomic "
            "number decides where an element sits in the periodic table.")


def planet_paragraph(rng: random.Random) -> str:
    i = rng.randrange(len(PLANETS))
    neighbours = [PLANETS[j] for j in (i - 1, i + 1) if 0 <= j < len(PLANETS)]
    return (f"{PLANETS[i]} is the {ORDINALS[i]} planet from the Sun. Its neighbouring planet"
            f"{'s are' if len(neighbours) > 1 else ' is'} {' and '.join(neighbours)}. The Solar System has eight "
            "planets; the four inner ones are rocky and the four outer ones are giants.")


def definitions_paragraph(rng: random.Random) -> str:
    terms = rng.sample(list(DEFINITIONS), 3)
    return " ".join(f"{t[0].upper() + t[1:]} is {DEFINITIONS[t]}." for t in terms)


def units_paragraph(rng: random.Random) -> str:
    picks = rng.sample(CONVERSIONS, 3)
    return "Some unit conversions are exact by definition. " + " ".join(
        f"One {u} is {fmt_number(f)} {plural(o, f)}." for u, o, f in picks)


REPLAY: list[Callable[[random.Random], str]] = [capitals_paragraph, element_paragraph, planet_paragraph,
                                                definitions_paragraph, units_paragraph]


def _documents(makers: list[Callable[[random.Random], str]], n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out = []
    for attempt in range(50 * n):  # a maker whose few documents are used up is simply skipped
        if len(out) == n:
            break
        text = makers[attempt % len(makers)](rng)
        if text not in seen:
            seen.add(text)
            out.append({"text": text})
    return out


def reasoning(n: int = 240, seed: int = 0) -> list[dict[str, Any]]:
    return _documents(REASONING, n, seed)


def replay(n: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    return _documents(REPLAY, n, seed)
