"""Simple helpful Q&A from templates over true facts: capitals, unit conversions, definitions, elements, planets."""

from __future__ import annotations

import random
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

SYSTEM = "You are a helpful assistant. Answer clearly and briefly."


def _chat(user: str, assistant: str, rng: random.Random) -> dict[str, Any]:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    return {"messages": messages}


def capitals(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    asks = ["What is the capital of {c}?", "Which city is the capital of {c}?", "Tell me the capital city of {c}."]
    for i, (country, capital) in enumerate(CAPITALS):
        q = rng.choice(asks).format(c=country)
        out.append(_chat(q, f"The capital of {country} is {capital}.", rng))
        other, other_cap = CAPITALS[(i + 7) % len(CAPITALS)]
        out.append({"messages": [
            {"role": "user", "content": f"What is the capital of {country}?"},
            {"role": "assistant", "content": f"The capital of {country} is {capital}."},
            {"role": "user", "content": f"And the capital of {other}?"},
            {"role": "assistant", "content": f"The capital of {other} is {other_cap}."},
        ]})
    return out


def conversions(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for unit, other, factor in CONVERSIONS:
        for value in rng.sample([2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 50], 4):
            result = fmt_number(value * factor)
            q = f"How many {plural(other, 2)} are in {value} {plural(unit, value)}?"
            a = (f"There are {result} {plural(other, 2)} in {value} {plural(unit, value)}, because 1 {unit} equals "
                 f"{fmt_number(factor)} {plural(other, factor)} and {value} × {fmt_number(factor)} = {result}.")
            out.append(_chat(q, a, rng))
    for celsius in range(-20, 105, 5):
        f = celsius * 9 // 5 + 32  # exact: celsius is a multiple of 5
        q = f"Convert {celsius} °C to Fahrenheit."
        a = f"{celsius} °C is {f} °F. Multiply by 9/5 and add 32: {celsius} × 9/5 + 32 = {f}."
        out.append(_chat(q, a, rng))
    return out


def definitions(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for term, meaning in DEFINITIONS.items():
        bare = term.split(" ", 1)[1] if term.split(" ", 1)[0] in ("a", "an", "the") else term
        for q in (f"What is {term}?", f"Define {bare} in one sentence."):
            out.append(_chat(q, f"{term[0].upper()}{term[1:]} is {meaning}.", rng))
    return out


def elements(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for name, symbol, number in ELEMENTS:
        out.append(_chat(f"What is the chemical symbol for {name}?",
                         f"The chemical symbol for {name} is {symbol}. Its atomic number is {number}.", rng))
        out.append(_chat(f"Which element has the atomic number {number}?",
                         f"Atomic number {number} is {name}, with the symbol {symbol}.", rng))
    return out


def planets(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i, planet in enumerate(PLANETS):
        out.append(_chat(f"Which planet is {ORDINALS[i]} from the Sun?",
                         f"{planet} is the {ORDINALS[i]} planet from the Sun.", rng))
        out.append(_chat(f"In which position from the Sun is {planet}?",
                         f"{planet} is the {ORDINALS[i]} planet from the Sun.", rng))
    out.append(_chat("List the planets of the Solar System in order from the Sun.",
                     "In order from the Sun: " + ", ".join(PLANETS) + ".", rng))
    out.append(_chat("What is the largest planet in the Solar System?",
                     "Jupiter is the largest planet in the Solar System.", rng))
    return out


def generate(seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = capitals(rng) + conversions(rng) + definitions(rng) + elements(rng) + planets(rng)
    rng.shuffle(rows)
    return rows
