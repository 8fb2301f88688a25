"""Procedural arithmetic and word problems with short worked solutions that end in ``\\boxed{answer}``.

Every number in a solution is computed here, so the worked steps and the boxed answer are correct by construction.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction
from typing import Any

NAMES = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jun", "Kofi", "Lena", "Mateo",
         "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
ITEMS = [("pencil", "pencils"), ("notebook", "notebooks"), ("apple", "apples"), ("ticket", "tickets"),
         ("sticker", "stickers"), ("muffin", "muffins"), ("marble", "marbles"), ("book", "books")]

Problem = tuple[str, list[str], str]  # question, solution steps, answer (LaTeX)


def change(rng: random.Random) -> Problem:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)[1]
    price, qty = rng.randint(2, 9), rng.randint(2, 9)
    total = price * qty
    paid = next(b for b in (20, 50, 100) if b > total)
    return (f"{name} buys {qty} {items} at ${price} each and pays with a ${paid} bill. How much change does "
            f"{name} get, in dollars?",
            [f"The {items} cost {qty} × {price} = {total} dollars.", f"The change is {paid} − {total} = "
             f"{paid - total} dollars."], str(paid - total))


def gain_loss(rng: random.Random) -> Problem:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)[1]
    a, b = rng.randint(10, 60), rng.randint(5, 40)
    c = rng.randint(1, a + b - 1)
    return (f"{name} has {a} {items}, gets {b} more, and then gives away {c}. How many {items} does {name} have now?",
            [f"After getting more: {a} + {b} = {a + b}.", f"After giving some away: {a + b} − {c} = {a + b - c}."],
            str(a + b - c))


def rectangle(rng: random.Random) -> Problem:
    w, h = rng.randint(2, 30), rng.randint(2, 30)
    if rng.random() < 0.5:
        return (f"A rectangle is {w} cm wide and {h} cm tall. What is its area in square centimetres?",
                [f"Area = width × height = {w} × {h} = {w * h}."], str(w * h))
    return (f"A rectangle is {w} m wide and {h} m long. What is its perimeter in metres?",
            [f"Perimeter = 2 × (width + length) = 2 × ({w} + {h}) = 2 × {w + h} = {2 * (w + h)}."], str(2 * (w + h)))


def average(rng: random.Random) -> Problem:
    n = rng.randint(3, 5)
    nums = [rng.randint(1, 50) for _ in range(n - 1)]
    last = n * rng.randint(max(nums), 60) - sum(nums)  # choose the last number so the mean is a whole number
    nums.append(last)
    s = sum(nums)
    return (f"What is the average of {', '.join(map(str, nums[:-1]))} and {nums[-1]}?",
            [f"Sum: {' + '.join(map(str, nums))} = {s}.", f"There are {n} numbers, so the average is {s} ÷ {n} = "
             f"{s // n}."], str(s // n))


def linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 12), rng.randint(-10, 15), rng.choice([v for v in range(-20, 31) if v])
    c = a * x + b
    sign = "+" if b >= 0 else "−"
    return (f"Solve for x: {a}x {sign} {abs(b)} = {c}.",
            [f"{'Subtract' if b >= 0 else 'Add'} {abs(b)} on both sides: {a}x = {c - b}.",
             f"Divide both sides by {a}: x = {c - b} ÷ {a} = {x}."], str(x))


def percent(rng: random.Random) -> Problem:
    p, n = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 75]), 20 * rng.randint(1, 30)
    r = p * n // 100
    return (f"What is {p}% of {n}?", [f"{p}% of {n} = {p}/100 × {n} = {p * n}/100 = {r}."], str(r))


def speed(rng: random.Random) -> Problem:
    s, t = rng.randint(3, 90), rng.randint(2, 8)
    return (f"A train travels at a constant {s} km/h for {t} hours. How many kilometres does it travel?",
            [f"Distance = speed × time = {s} × {t} = {s * t}."], str(s * t))


def remainder(rng: random.Random) -> Problem:
    k, n = rng.randint(3, 9), rng.randint(20, 99)
    q, r = divmod(n, k)
    name = rng.choice(NAMES)
    return (f"{name} shares {n} cookies equally among {k} friends, giving each friend as many whole cookies as "
            f"possible. How many cookies are left over?",
            [f"{n} ÷ {k} = {q} with remainder {r}, since {k} × {q} = {k * q} and {n} − {k * q} = {r}.",
             f"Each friend gets {q} cookies and {r} are left over."], str(r))


def order_of_operations(rng: random.Random) -> Problem:
    a, b, c, d = (rng.randint(2, 20) for _ in range(4))
    return (f"Compute {a} + {b} × {c} − {d}.",
            [f"Multiplication first: {b} × {c} = {b * c}.", f"Then left to right: {a} + {b * c} = {a + b * c}, and "
             f"{a + b * c} − {d} = {a + b * c - d}."], str(a + b * c - d))


def fractions(rng: random.Random) -> Problem:
    b, d = rng.randint(2, 9), rng.randint(2, 9)
    a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
    total = Fraction(a, b) + Fraction(c, d)
    common = b * d
    ans = str(total.numerator) if total.denominator == 1 else f"\\frac{{{total.numerator}}}{{{total.denominator}}}"
    steps = [f"Use the common denominator {b} × {d} = {common}: {a}/{b} = {a * d}/{common} and {c}/{d} = "
             f"{c * b}/{common}.", f"Add: ({a * d} + {c * b})/{common} = {a * d + c * b}/{common}."]
    if (a * d + c * b, common) != (total.numerator, total.denominator):
        simple = f"{total.numerator}/{total.denominator}" if total.denominator != 1 else str(total.numerator)
        steps.append(f"Simplify: {a * d + c * b}/{common} = {simple}.")
    return f"Add the fractions {a}/{b} + {c}/{d} and simplify.", steps, ans


TEMPLATES: list[Callable[[random.Random], Problem]] = [
    change, gain_loss, rectangle, average, linear, percent, speed, remainder, order_of_operations, fractions,
]


def generate(n: int = 260, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        question, steps, answer = TEMPLATES[len(rows) % len(TEMPLATES)](rng)
        if question in seen:
            continue
        seen.add(question)
        solution = "\n".join(steps) + f"\nSo the answer is \\boxed{{{answer}}}"
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": solution}], "answer": answer})
    return rows
