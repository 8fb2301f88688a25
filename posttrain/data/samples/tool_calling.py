"""Multi-turn tool-calling conversations: OpenAI-style tool schemas, structured assistant calls and tool results.

The tools are deterministic (capital lookup, unit conversion, arithmetic, element lookup, day of the week), and each
result is computed here by really running the tool, so every call and every final answer is correct.
Record shape (what the ``tool_calls`` format adapter reads)::

    {"tools": [{"type": "function", "function": {...}}, ...],
     "messages": [{"role": "user", ...},
                  {"role": "assistant", "content": "", "tool_calls": [{"name": ..., "arguments": {...}}]},
                  {"role": "tool", "name": ..., "content": "<JSON result>"},
                  {"role": "assistant", "content": "final answer"}]}
"""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

from posttrain.data.samples.facts import CAPITALS, CONVERSIONS, ELEMENTS, fmt_number, plural

SYSTEM = "You are a helpful assistant with access to tools. Call a tool when it helps you answer accurately."
UNITS = sorted({u for u, _, _ in CONVERSIONS} | {o for _, o, _ in CONVERSIONS})


def _tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}


TOOLS = {
    "get_capital": _tool("get_capital", "Look up the capital city of a country.",
                         {"country": {"type": "string", "description": "Country name, e.g. France"}}),
    "convert_units": _tool("convert_units", "Convert a quantity between units of the same dimension.", {
        "value": {"type": "number"}, "from_unit": {"type": "string", "enum": UNITS},
        "to_unit": {"type": "string", "enum": UNITS}}),
    "calculator": _tool("calculator", "Evaluate an arithmetic expression with +, -, * and parentheses.",
                        {"expression": {"type": "string"}}),
    "get_element": _tool("get_element", "Look up a chemical element by name.",
                         {"name": {"type": "string", "description": "Element name, e.g. oxygen"}}),
    "day_of_week": _tool("day_of_week", "Give the day of the week of a date in the Gregorian calendar.",
                         {"date": {"type": "string", "description": "ISO date, YYYY-MM-DD"}}),
}


# ---- the tools themselves (run to produce the results in the data) ------------------------------------------------

def get_capital(country: str) -> dict[str, Any]:
    return {"country": country, "capital": dict(CAPITALS)[country]}


def convert_units(value: float, from_unit: str, to_unit: str) -> dict[str, Any]:
    factor = next(f for u, o, f in CONVERSIONS if (u, o) == (from_unit, to_unit))
    return {"value": float(fmt_number(value * factor)), "unit": to_unit}


def calculator(expression: str) -> dict[str, Any]:
    if set(expression) - set("0123456789+-*() "):
        raise ValueError(expression)
    return {"result": eval(expression, {"__builtins__": {}})}  # noqa: S307 - digits and + - * ( ) only


def get_element(name: str) -> dict[str, Any]:
    _, symbol, number = next(e for e in ELEMENTS if e[0] == name)
    return {"name": name, "symbol": symbol, "atomic_number": number}


def day_of_week(date: str) -> dict[str, Any]:
    return {"date": date, "weekday": dt.date.fromisoformat(date).strftime("%A")}


RUN = {"get_capital": get_capital, "convert_units": convert_units, "calculator": calculator,
       "get_element": get_element, "day_of_week": day_of_week}


def _calls(*calls: tuple[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One assistant turn with these calls, the tool messages answering them, and the raw results."""
    results = [RUN[name](**args) for name, args in calls]
    turn = {"role": "assistant", "content": "", "tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
    tool_msgs = [{"role": "tool", "name": n, "content": json.dumps(r, ensure_ascii=False)}
                 for (n, _), r in zip(calls, results, strict=True)]
    return turn, tool_msgs, results


def _record(rng: random.Random, needed: list[str], messages: list[dict[str, Any]]) -> dict[str, Any]:
    extra = rng.sample([t for t in TOOLS if t not in needed], rng.randint(0, 1))
    names = needed + extra
    rng.shuffle(names)
    return {"tools": [TOOLS[n] for n in names], "messages": [{"role": "system", "content": SYSTEM}, *messages]}


def capital_single(rng: random.Random, country: str) -> dict[str, Any]:
    turn, tools, (r,) = _calls(("get_capital", {"country": country}))
    return _record(rng, ["get_capital"], [{"role": "user", "content": f"What's the capital of {country}?"}, turn,
                                          *tools, {"role": "assistant", "content": f"The capital of {country} is "
                                                                                   f"{r['capital']}."}])


def capital_pair(rng: random.Random, a: str, b: str) -> dict[str, Any]:
    turn, tools, (ra, rb) = _calls(("get_capital", {"country": a}), ("get_capital", {"country": b}))
    return _record(rng, ["get_capital"], [
        {"role": "user", "content": f"What are the capitals of {a} and {b}?"}, turn, *tools,
        {"role": "assistant", "content": f"The capital of {a} is {ra['capital']}, and the capital of {b} is "
                                         f"{rb['capital']}."}])


def conversion(rng: random.Random, unit: str, other: str, value: int) -> dict[str, Any]:
    turn, tools, (r,) = _calls(("convert_units", {"value": value, "from_unit": unit, "to_unit": other}))
    shown = fmt_number(r["value"])
    return _record(rng, ["convert_units"], [
        {"role": "user", "content": f"Convert {value} {plural(unit, value)} to {plural(other, 2)}."}, turn, *tools,
        {"role": "assistant", "content": f"{value} {plural(unit, value)} is {shown} {plural(other, r['value'])}."}])


def sum_then_convert(rng: random.Random, unit: str, other: str, a: int, b: int) -> dict[str, Any]:
    turn1, tools1, (s,) = _calls(("calculator", {"expression": f"{a} + {b}"}))
    turn2, tools2, (r,) = _calls(("convert_units", {"value": s["result"], "from_unit": unit, "to_unit": other}))
    return _record(rng, ["calculator", "convert_units"], [
        {"role": "user", "content": f"I walked {a} {plural(unit, a)} yesterday and {b} {plural(unit, b)} today. "
                                    f"How far is that in total, in {plural(other, 2)}?"},
        turn1, *tools1, turn2, *tools2,
        {"role": "assistant", "content": f"In total you walked {s['result']} {plural(unit, s['result'])}, which is "
                                         f"{fmt_number(r['value'])} {plural(other, r['value'])}."}])


def arithmetic(rng: random.Random) -> dict[str, Any]:
    a, b, c = rng.randint(12, 999), rng.randint(12, 999), rng.randint(2, 99)
    expr = f"({a} + {b}) * {c}"
    turn, tools, (r,) = _calls(("calculator", {"expression": expr}))
    return _record(rng, ["calculator"], [
        {"role": "user", "content": f"What is ({a} + {b}) × {c}?"}, turn, *tools,
        {"role": "assistant", "content": f"({a} + {b}) × {c} = {r['result']}."}])


def element_then_date(rng: random.Random, name: str, date: str) -> dict[str, Any]:
    turn1, tools1, (e,) = _calls(("get_element", {"name": name}))
    turn2, tools2, (d,) = _calls(("day_of_week", {"date": date}))
    return _record(rng, ["get_element", "day_of_week"], [
        {"role": "user", "content": f"What is the symbol and atomic number of {name}?"}, turn1, *tools1,
        {"role": "assistant", "content": f"The symbol of {name} is {e['symbol']} and its atomic number is "
                                         f"{e['atomic_number']}."},
        {"role": "user", "content": f"Thanks. Also, what day of the week was {date}?"}, turn2, *tools2,
        {"role": "assistant", "content": f"{date} was a {d['weekday']}."}])


def generate(seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    countries = [c for c, _ in CAPITALS]
    rows = [capital_single(rng, c) for c in countries]
    pairs = [(a, b) for i, a in enumerate(countries) for b in countries[i + 1:]]
    rows += [capital_pair(rng, *rng.sample(pair, 2)) for pair in rng.sample(pairs, 30)]
    rows += [conversion(rng, u, o, v) for u, o, _ in CONVERSIONS for v in rng.sample([2, 3, 5, 7, 10, 12], 2)]
    rows += [sum_then_convert(rng, u, o, a, b) for u, o in (("mile", "kilometre"), ("kilometre", "metre"))
             for a, b in rng.sample([(a, b) for a in range(2, 10) for b in range(2, 10)], 8)]
    rows += [arithmetic(rng) for _ in range(30)]
    start = dt.date(1990, 1, 1).toordinal()
    rows += [element_then_date(rng, rng.choice(ELEMENTS)[0],
                               dt.date.fromordinal(start + rng.randint(0, 15000)).isoformat()) for _ in range(30)]
    rng.shuffle(rows)
    return rows
