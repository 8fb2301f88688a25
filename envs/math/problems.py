"""Procedural math problems: each family draws numbers from a seeded ``random.Random`` and returns a
:class:`Problem` with the statement, the exact answer (LaTeX) and a short worked solution.

Answers are computed with exact arithmetic (``fractions.Fraction``, ``decimal.Decimal``), never floats, so the gold
answer is right by construction.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction


@dataclass
class Problem:
    family: str
    question: str
    answer: str  # LaTeX, no delimiters: "12", "-\frac{7}{3}", "12.35", "x + 14"
    steps: list[str]


def latex_number(value: Fraction | int) -> str:
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def paren(value: int) -> str:
    return f"({value})" if value < 0 else str(value)


def decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")  # normalize() alone would write 120 as 1.2E+2


def x_term(coeff: int) -> str:
    """``3x``, ``x``, ``-x``."""
    return {1: "x", -1: "-x"}.get(coeff, f"{coeff}x")


def signed(value: int) -> str:
    """`` + 4`` or `` - 4``, to follow a term."""
    return f" + {value}" if value >= 0 else f" - {-value}"


def arithmetic(rng: random.Random) -> Problem:
    a, b, c, d = (rng.randint(2, 40) for _ in range(4))
    shape = rng.randrange(4)
    if shape == 0:
        expr, steps, result = f"{a} + {b} \\times {c}", [f"{b} \\times {c} = {b * c}"], a + b * c
        steps.append(f"{a} + {b * c} = {result}")
    elif shape == 1:
        result = (a + b) * c - d
        expr = f"({a} + {b}) \\times {c} - {d}"
        steps = [f"{a} + {b} = {a + b}", f"{a + b} \\times {c} = {(a + b) * c}", f"{(a + b) * c} - {d} = {result}"]
    elif shape == 2:
        result = a * b - c * d
        expr = f"{a} \\times {b} - {c} \\times {d}"
        steps = [f"{a} \\times {b} = {a * b}", f"{c} \\times {d} = {c * d}", f"{a * b} - {c * d} = {result}"]
    else:
        result = (a - b) * (c + d)
        expr = f"({a} - {b}) \\times ({c} + {d})"
        steps = [f"{a} - {b} = {a - b}", f"{c} + {d} = {c + d}", f"{paren(a - b)} \\times {c + d} = {result}"]
    return Problem("arithmetic", f"Compute ${expr}$.", str(result), [f"${s}$" for s in steps])


def proper_fraction(rng: random.Random) -> Fraction:
    while True:
        value = Fraction(rng.randint(1, 12), rng.randint(2, 12))
        if value.denominator > 1:
            return value


def reduced(numerator: int, denominator: int) -> str:
    """``\frac{10}{44} = \frac{5}{22}``, or just the fraction when it is already in lowest terms."""
    value = Fraction(numerator, denominator)
    if (value.numerator, value.denominator) == (numerator, denominator):
        return latex_number(value)
    return f"\\frac{{{numerator}}}{{{denominator}}} = {latex_number(value)}"


def fractions_(rng: random.Random) -> Problem:
    x, y = proper_fraction(rng), proper_fraction(rng)
    op = rng.choice("+-*/")
    fx, fy = latex_number(x), latex_number(y)
    if op == "+":
        result, sym = x + y, "+"
    elif op == "-":
        result, sym = x - y, "-"
    elif op == "*":
        result, sym = x * y, "\\times"
    else:
        result, sym = x / y, "\\div"
    question = f"Compute ${fx} {sym} {fy}$ and write the result as a fraction in lowest terms."
    if op in "+-":
        den = x.denominator * y.denominator // math.gcd(x.denominator, y.denominator)
        nx, ny = x.numerator * den // x.denominator, y.numerator * den // y.denominator
        raw = nx + ny if op == "+" else nx - ny
        steps = [f"The common denominator is ${den}$: ${fx} = \\frac{{{nx}}}{{{den}}}$ and "
                 f"${fy} = \\frac{{{ny}}}{{{den}}}$.",
                 f"${nx} {op} {ny} = {raw}$, so the result is ${reduced(raw, den)}$."]
    elif op == "*":
        steps = [f"Multiply numerators and denominators: "
                 f"${reduced(x.numerator * y.numerator, x.denominator * y.denominator)}$."]
    else:
        steps = [f"Dividing by ${fy}$ is multiplying by ${latex_number(1 / y)}$.",
                 f"${fx} \\times {latex_number(1 / y)} = {latex_number(result)}$."]
    return Problem("fractions", question, latex_number(result), steps)


def linear_equation(rng: random.Random) -> Problem:
    x = rng.randint(-15, 15)
    a = rng.choice([n for n in range(-9, 10) if n not in (0,)])
    c = rng.choice([n for n in range(-9, 10) if n != a])
    b = rng.randint(-30, 30)
    d = (a - c) * x + b
    lhs = x_term(a) + signed(b)
    rhs = x_term(c) + signed(d) if c else str(d)
    steps = [f"Move the $x$ terms left and the constants right: $({a} - {paren(c)})x = {d} - {paren(b)}$.",
             f"So ${a - c}x = {d - b}$, and $x = \\frac{{{d - b}}}{{{a - c}}} = {x}$."]
    return Problem("linear_equation", f"Solve for $x$: ${lhs} = {rhs}$.", str(x), steps)


def percentage(rng: random.Random) -> Problem:
    kind = rng.randrange(3)
    if kind == 0:
        p, n = rng.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50, 60, 75, 80]), rng.randint(2, 400) * 4
        result = decimal_text(Decimal(p * n) / 100)
        return Problem("percentage", f"What is {p}% of {n}?", result,
                       [f"${p}\\% \\times {n} = \\frac{{{p} \\times {n}}}{{100}} = {result}$."])
    if kind == 1:
        price, p = rng.randint(10, 500), rng.choice([10, 15, 20, 25, 30, 40, 50])
        result = Decimal(price) * (100 - p) / 100
        return Problem("percentage", f"A jacket costs {price} dollars and is on sale for {p}% off. What is the "
                       "sale price in dollars?", decimal_text(result),
                       [f"The discount is ${p}\\%$ of ${price}$, which is ${decimal_text(Decimal(price) * p / 100)}$.",
                        f"The sale price is ${price} - {decimal_text(Decimal(price) * p / 100)} = "
                        f"{decimal_text(result)}$ dollars."])
    whole = rng.choice([20, 25, 40, 50, 80, 200, 250, 400, 500])
    part = rng.randint(1, whole - 1)
    result = decimal_text(Decimal(part * 100) / whole)  # 100/whole terminates for these wholes
    return Problem("percentage", f"{part} is what percent of {whole}?", result,
                   [f"$\\frac{{{part}}}{{{whole}}} \\times 100 = {result}$, so it is ${result}\\%$."])


NAMES = ["Maya", "Liam", "Aisha", "Kenji", "Sofia", "Omar", "Elena", "Noah", "Priya", "Lucas", "Zoe", "Mateo"]
ITEMS = [("notebooks", "notebook"), ("pens", "pen"), ("apples", "apple"), ("tickets", "ticket"), ("books", "book")]


def word_problem(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    kind = rng.randrange(4)
    if kind == 0:
        (items, item), n, price = rng.choice(ITEMS), rng.randint(2, 12), rng.randint(1, 9)
        n = min(n, 100 // price)  # a 100-dollar bill at most (12 x 9 would need more)
        cost = n * price
        bill = next(b for b in (10, 20, 50, 100) if b >= cost)
        return Problem("word_problem", f"{name} buys {n} {items} at {price} dollars per {item} and pays with a "
                       f"{bill}-dollar bill. How many dollars of change does {name} get?", str(bill - cost),
                       [f"The {items} cost ${n} \\times {price} = {cost}$ dollars.",
                        f"The change is ${bill} - {cost} = {bill - cost}$ dollars."])
    if kind == 1:
        speed, hours, extra = rng.randint(30, 120), rng.randint(2, 9), rng.randint(5, 60)
        total = speed * hours + extra
        return Problem("word_problem", f"{name} drives at {speed} km/h for {hours} hours, then walks another "
                       f"{extra} km. How many kilometres does {name} cover in total?", str(total),
                       [f"Driving: ${speed} \\times {hours} = {speed * hours}$ km.",
                        f"Total: ${speed * hours} + {extra} = {total}$ km."])
    if kind == 2:
        boxes, per, more = rng.randint(3, 15), rng.randint(4, 30), rng.randint(2, 9)
        total = boxes * per
        return Problem("word_problem", f"{name} shares {total} marbles equally among {boxes} boxes and then adds "
                       f"{more} more marbles to each box. How many marbles are in each box now?", str(per + more),
                       [f"Each box first gets ${total} \\div {boxes} = {per}$ marbles.",
                        f"After adding {more}: ${per} + {more} = {per + more}$."])
    age, k, years = rng.randint(3, 20), rng.randint(2, 4), rng.randint(1, 15)
    parent = age * k
    total = age + parent + 2 * years
    return Problem("word_problem", f"{name} is {age} years old and {name}'s aunt is {k} times as old. What will the "
                   f"sum of their ages be in {years} years?", str(total),
                   [f"The aunt is ${age} \\times {k} = {parent}$ years old.",
                    f"In {years} years the sum is $({age} + {years}) + ({parent} + {years}) = {total}$."])


def decimals(rng: random.Random) -> Problem:
    x = Decimal(rng.randint(11, 999)) / 100
    y = Decimal(rng.randint(11, 99)) / 10
    if rng.random() < 0.5:
        result = x + y
        return Problem("decimals", f"Compute ${x} + {y}$.", decimal_text(result),
                       [f"Line up the decimal points: ${x} + {y} = {decimal_text(result)}$."])
    n = rng.randint(2, 12)
    result = x * n
    return Problem("decimals", f"Compute ${x} \\times {n}$.", decimal_text(result),
                   [f"${x} \\times {n} = {decimal_text(result)}$."])


def powers_roots(rng: random.Random) -> Problem:
    a, r, e = rng.randint(2, 15), rng.randint(2, 20), rng.randint(2, 4)
    b = rng.randint(2, 5)
    result = a**2 - r + b**e
    return Problem("powers_roots", f"Compute ${a}^2 - \\sqrt{{{r * r}}} + {b}^{e}$.", str(result),
                   [f"${a}^2 = {a * a}$, $\\sqrt{{{r * r}}} = {r}$ and ${b}^{e} = {b**e}$.",
                    f"${a * a} - {r} + {b**e} = {result}$."])


def simplify(rng: random.Random) -> Problem:
    p, q, r, s = rng.randint(2, 9), rng.randint(1, 12), rng.randint(2, 9), rng.randint(1, 12)
    coeff, const = p - r, p * q + r * s
    if coeff == 0:
        coeff, p = 1, r + 1
        const = p * q + r * s
    answer = x_term(coeff) + signed(const)
    return Problem("simplify", f"Simplify ${p}(x + {q}) - {r}(x - {s})$.", answer,
                   [f"Expand: ${p}x + {p * q} - {r}x + {r * s}$.",
                    f"Combine like terms: $({p} - {r})x + ({p * q} + {r * s}) = {answer}$."])


def statistics(rng: random.Random) -> Problem:
    count = rng.randint(4, 7)
    values = [rng.randint(1, 60) for _ in range(count)]
    values[-1] += -sum(values) % count  # a whole-number mean
    mean = Fraction(sum(values), count)
    listed = ", ".join(map(str, values))
    return Problem("statistics", f"What is the mean of the numbers {listed}?", latex_number(mean),
                   [f"The sum is ${' + '.join(map(str, values))} = {sum(values)}$.",
                    f"Dividing by {count}: ${reduced(sum(values), count)}$."])


def gcd_lcm(rng: random.Random) -> Problem:
    g = rng.randint(2, 12)
    a, b = g * rng.randint(2, 15), g * rng.randint(2, 15)
    while a == b:
        b += g
    if rng.random() < 0.5:
        big, small, steps = max(a, b), min(a, b), []
        while small:  # Euclid's algorithm, one line per division
            steps.append(f"${big} = {big // small} \\times {small} + {big % small}$")
            big, small = small, big % small
        return Problem("gcd_lcm", f"What is the greatest common divisor of {a} and {b}?", str(big),
                       [*steps, f"The last non-zero remainder is the answer: $\\gcd({a}, {b}) = {big}$."])
    result = a * b // math.gcd(a, b)
    return Problem("gcd_lcm", f"What is the least common multiple of {a} and {b}?", str(result),
                   [f"$\\gcd({a}, {b}) = {math.gcd(a, b)}$.",
                    f"$\\operatorname{{lcm}} = \\frac{{{a} \\times {b}}}{{{math.gcd(a, b)}}} = {result}$."])


def system_of_equations(rng: random.Random) -> Problem:
    x, y = rng.randint(-10, 15), rng.randint(-10, 15)
    s, d = x + y, x - y
    return Problem("system", f"If $x + y = {s}$ and $x - y = {d}$, what is $x \\cdot y$?", str(x * y),
                   [f"Adding the equations: $2x = {s + d}$, so $x = {x}$; then $y = {s} - {paren(x)} = {y}$.",
                    f"$x \\cdot y = {paren(x)} \\times {paren(y)} = {x * y}$."])


FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    "arithmetic": arithmetic,
    "fractions": fractions_,
    "linear_equation": linear_equation,
    "percentage": percentage,
    "word_problem": word_problem,
    "decimals": decimals,
    "powers_roots": powers_roots,
    "simplify": simplify,
    "statistics": statistics,
    "gcd_lcm": gcd_lcm,
    "system": system_of_equations,
}
