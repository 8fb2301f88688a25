"""A seeded generator of static tool-call tasks over a small catalogue of functions (weather, currency, units,
timers, reminders, search, stocks, translation): single calls, parallel calls, a choice among several tools, and
requests no tool can serve. Cheap and deterministic: the quick start and tests use it; real data comes through the
``xlam``, ``openai_tool_calls`` and ``bfcl`` recipe formats.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

from posttrain.errors import UserError

SYSTEM = ("You can call the functions below. When a request needs them, answer with the function calls only; when no "
          "function fits, answer in plain text without calling any.")


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


TOOLS = {
    "get_weather": _fn("get_weather", "Current weather for a city.", {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                                             "default": "celsius"}}, ["city"]),
    "convert_currency": _fn("convert_currency", "Convert an amount between currencies.", {
        "amount": {"type": "number"}, "source": {"type": "string", "description": "ISO code, e.g. USD"},
        "target": {"type": "string", "description": "ISO code, e.g. EUR"}}, ["amount", "source", "target"]),
    "convert_units": _fn("convert_units", "Convert a quantity between units of length or mass.", {
        "value": {"type": "number"}, "source_unit": {"type": "string"}, "target_unit": {"type": "string"}},
        ["value", "source_unit", "target_unit"]),
    "set_timer": _fn("set_timer", "Start a countdown timer.", {
        "minutes": {"type": "integer", "minimum": 1}, "label": {"type": "string"}}, ["minutes"]),
    "create_reminder": _fn("create_reminder", "Create a reminder at a date and time.", {
        "text": {"type": "string"}, "date": {"type": "string", "description": "YYYY-MM-DD"},
        "time": {"type": "string", "description": "HH:MM"}}, ["text", "date"]),
    "stock_price": _fn("stock_price", "The latest price of a stock.", {"ticker": {"type": "string"}}, ["ticker"]),
    "translate": _fn("translate", "Translate a text into another language.", {
        "text": {"type": "string"}, "language": {"type": "string"}}, ["text", "language"]),
    "search_restaurants": _fn("search_restaurants", "Find restaurants in a city.", {
        "city": {"type": "string"}, "cuisine": {"type": "string"}, "max_results": {"type": "integer", "minimum": 1,
                                                                                   "default": 5}}, ["city"]),
}
CITIES = ["Paris", "Lisbon", "Seoul", "Nairobi", "Lima", "Oslo", "Hanoi", "Toronto", "Cairo", "Perth"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "KRW", "BRL", "INR", "CAD"]
UNITS = [("km", "miles"), ("miles", "km"), ("kg", "pounds"), ("pounds", "kg"), ("meters", "feet")]
TICKERS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOG"]
LANGUAGES = ["French", "Korean", "Spanish", "German", "Swahili", "Japanese"]
PHRASES = ["good morning", "where is the station", "thank you very much", "the bill, please", "see you tomorrow"]
CUISINES = ["ramen", "tapas", "vegan", "seafood", "pizza", "dim sum"]
CHITCHAT = ["Write a haiku about autumn.", "What is the capital of Australia?", "Tell me a fun fact about owls.",
            "Summarise the plot of Hamlet in one sentence.", "How many legs does a spider have?"]


def call(name: str, **arguments: list[Any]) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def weather(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    city = rng.choice(CITIES)
    if rng.random() < 0.5:
        return f"What's the weather like in {city} right now?", [call("get_weather", city=[city],
                                                                         unit=["celsius", ""])], ["get_weather"]
    return (f"How hot is it in {city}? Give it to me in fahrenheit.",
            [call("get_weather", city=[city], unit=["fahrenheit"])], ["get_weather"])


def currency(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    amount = rng.choice([5, 20, 75, 120.5, 999, 1500])
    source, target = rng.sample(CURRENCIES, 2)
    return (f"Convert {amount} {source} to {target}.",
            [call("convert_currency", amount=[amount], source=[source], target=[target])], ["convert_currency"])


def parallel_weather(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    a, b = rng.sample(CITIES, 2)
    return (f"Check the weather in {a} and in {b}.",
            [call("get_weather", city=[a], unit=["celsius", ""]), call("get_weather", city=[b], unit=["celsius", ""])],
            ["get_weather", "stock_price"])


def units(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    value = rng.choice([3, 10, 42, 100, 2.5])
    source, target = rng.choice(UNITS)
    return (f"How many {target} is {value} {source}?",
            [call("convert_units", value=[value], source_unit=[source], target_unit=[target])],
            ["convert_units", "convert_currency"])


def timer_and_reminder(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    minutes = rng.choice([5, 10, 15, 25, 45])
    day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    text = rng.choice(["call the dentist", "water the plants", "pay rent", "buy milk"])
    return (f"Set a {minutes}-minute timer, and remind me to {text} on {day}.",
            [call("set_timer", minutes=[minutes]), call("create_reminder", text=[text], date=[day])],
            ["set_timer", "create_reminder", "get_weather"])


def choose_tool(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    if rng.random() < 0.5:
        ticker = rng.choice(TICKERS)
        return f"What is {ticker} trading at?", [call("stock_price", ticker=[ticker])], \
            ["stock_price", "convert_currency", "get_weather"]
    phrase, language = rng.choice(PHRASES), rng.choice(LANGUAGES)
    return (f"Translate '{phrase}' into {language}.", [call("translate", text=[phrase], language=[language])],
            ["translate", "search_restaurants", "set_timer"])


def restaurants(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    city, cuisine, count = rng.choice(CITIES), rng.choice(CUISINES), rng.choice([3, 5, 10])
    return (f"Find me {count} {cuisine} places in {city}.",
            [call("search_restaurants", city=[city], cuisine=[cuisine], max_results=[count])], ["search_restaurants"])


def no_tool_fits(rng: random.Random) -> tuple[str, list[dict[str, Any]], list[str]]:
    return rng.choice(CHITCHAT), [], rng.sample(sorted(TOOLS), 3)


FAMILIES: dict[str, Callable[[random.Random], tuple[str, list[dict[str, Any]], list[str]]]] = {
    "single": weather, "currency": currency, "parallel": parallel_weather, "units": units,
    "multiple": timer_and_reminder, "choice": choose_tool, "restaurants": restaurants, "irrelevant": no_tool_fits}


def make_task(family: str, query: str, ground_truth: list[dict[str, Any]], tool_names: list[str]) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": query}]
    digest = hashlib.sha1(json.dumps([query, tool_names], sort_keys=True).encode()).hexdigest()[:12]
    return {"id": f"tcm-{family}-{digest}", "env": "tool_call_match", "messages": messages,
            "tools": [TOOLS[n] for n in tool_names], "ground_truth": ground_truth, "order": "any", "family": family}


def generate_tasks(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` distinct tasks (by id), the same ones for the same seed."""
    if n < 0:
        raise UserError(f"number of tasks must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    names = sorted(FAMILIES)
    for made in range(n):
        for _ in range(500):
            family = rng.choice(names)
            query, truth, tools = FAMILIES[family](rng)
            rng.shuffle(tools)
            task = make_task(family, query, truth, tools)
            if task["id"] not in seen:
                break
        else:
            raise UserError(f"tool_call_match generator: could only make {made} distinct tasks, {n} were asked for")
        seen.add(task["id"])
        yield task
