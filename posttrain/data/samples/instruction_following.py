"""Instruction-following samples: a factual request plus a format constraint that the response really satisfies.

Each record names its constraint (``constraint: {"id", "args"}``) and :data:`CHECKERS` holds the function that checks
it; :func:`generate` checks every response before emitting it (and the tests check the committed files again).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

from posttrain.data.samples.facts import CAPITALS, DEFINITIONS, ELEMENTS, PLANETS

END_PHRASE = "Is there anything else I can help with?"


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


CHECKERS: dict[str, Callable[..., bool]] = {
    "bullets": lambda text, n: len(_lines(text)) == n and all(ln.startswith("- ") for ln in _lines(text)),
    "numbered": lambda text, n: [ln.split(". ", 1)[0] for ln in _lines(text)] == [str(i) for i in range(1, n + 1)],
    "lowercase": lambda text: text == text.lower() and any(c.isalpha() for c in text),
    "uppercase": lambda text: text == text.upper() and any(c.isalpha() for c in text),
    "no_commas": lambda text: "," not in text,
    "quoted": lambda text: len(text) > 2 and text.startswith('"') and text.endswith('"'),
    "json_keys": lambda text, keys: _is_json_object(text) and sorted(json.loads(text)) == sorted(keys),
    "end_phrase": lambda text, phrase: text.rstrip().endswith(phrase),
    "max_words": lambda text, n: 0 < len(text.split()) <= n,
    "title": lambda text: re.match(r"<<[^<>\n]+>>\n", text) is not None,
    "keyword_twice": lambda text, word: len(re.findall(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE)) >= 2,
    "paragraphs": lambda text, n: len([p for p in text.split("***") if p.strip()]) == n and text.count("***") == n - 1,
}


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _bare(term: str) -> str:
    first, _, rest = term.partition(" ")
    return rest if first in ("a", "an", "the") else term


def _join(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def _sentence(s: str) -> str:
    return s[0].upper() + s[1:] + "."


def make(rng: random.Random, kind: str) -> tuple[str, str, dict[str, Any]]:
    """One (prompt, response, checker args) for a constraint kind."""
    country, capital = rng.choice(CAPITALS)
    name, symbol, number = rng.choice(ELEMENTS)
    term = rng.choice(list(DEFINITIONS))
    if kind == "bullets":
        n = rng.randint(2, 5)
        picks = rng.sample(CAPITALS, n)
        return (f"Give the capitals of {_join([c for c, _ in picks])}. Answer in exactly {n} bullet points that "
                "start with '- '.", "\n".join(f"- {cap} is the capital of {c}." for c, cap in picks), {"n": n})
    if kind == "numbered":
        n = rng.randint(2, 6)
        if rng.random() < 0.3:
            return (f"List the first {n} planets in order from the Sun as a numbered list (1., 2., ...), one per "
                    "line, with nothing else.", "\n".join(f"{i}. {p}" for i, p in enumerate(PLANETS[:n], 1)),
                    {"n": n})
        picks = rng.sample(ELEMENTS, n)
        return (f"Give the chemical symbols of {_join([e[0] for e in picks])} as a numbered list (1., 2., ...), "
                "one per line, in that order.", "\n".join(f"{i}. {e[0].capitalize()}: {e[1]}"
                                                          for i, e in enumerate(picks, 1)), {"n": n})
    if kind == "lowercase":
        return (f"What is the capital of {country}? Write your whole answer in lowercase letters.",
                f"the capital of {country} is {capital}.".lower(), {})
    if kind == "uppercase":
        return (f"What is the capital of {country}? Write your whole answer in capital letters.",
                f"THE CAPITAL OF {country} IS {capital}.".upper(), {})
    if kind == "no_commas":
        (c1, k1), (c2, k2) = rng.sample(CAPITALS, 2)
        return (f"What are the capitals of {c1} and {c2}? Do not use any commas in your answer.",
                f"The capital of {c1} is {k1} and the capital of {c2} is {k2}.", {})
    if kind == "quoted":
        return (f"What is {term}? Wrap your entire answer in double quotation marks.",
                f'"{_sentence(term)[:-1]} is {DEFINITIONS[term]}."', {})
    if kind == "json_keys":
        return (f"What is the capital of {country}? Reply only with a JSON object with the keys \"country\" and "
                "\"capital\".", json.dumps({"country": country, "capital": capital}, ensure_ascii=False),
                {"keys": ["country", "capital"]})
    if kind == "end_phrase":
        return (f"Explain what {term} is. End your answer with the exact phrase \"{END_PHRASE}\"",
                f"{_sentence(term)[:-1]} is {DEFINITIONS[term]}. {END_PHRASE}", {"phrase": END_PHRASE})
    if kind == "max_words":
        n = rng.randint(8, 15)
        return (f"In at most {n} words: what is the chemical symbol for {name}?",
                f"The chemical symbol for {name} is {symbol}.", {"n": n})
    if kind == "title":
        return (f"Write a one-sentence note about the element {name}. Start with a title wrapped in double angular "
                "brackets, such as <<title>>, on its own line.",
                f"<<{name.capitalize()}>>\n{name.capitalize()} is a chemical element with the symbol {symbol} and "
                f"atomic number {number}.", {})
    if kind == "keyword_twice":
        word = _bare(term).split(" (")[0]
        return (f"Explain what {term} is, using the phrase \"{word}\" at least twice.",
                f"{_sentence(term)[:-1]} is {DEFINITIONS[term]}. That is the meaning of the term \"{word}\".",
                {"word": word})
    if kind == "paragraphs":
        return (f"Write two short paragraphs separated by the markdown divider ***: the first about the "
                f"capital of {country}, the second about the element {name}.",
                f"The capital of {country} is {capital}.\n\n***\n\n{name.capitalize()} has the chemical symbol "
                f"{symbol} and the atomic number {number}.", {"n": 2})
    raise ValueError(kind)


def generate(per_kind: int = 16, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for kind in CHECKERS:
        made = 0
        while made < per_kind:
            prompt, response, args = make(rng, kind)
            if prompt in seen:
                continue
            if not CHECKERS[kind](response, **args):
                raise AssertionError(f"sample for {kind} does not satisfy its own constraint: {response!r}")
            seen.add(prompt)
            made += 1
            rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                         "constraint": {"id": kind, "args": args}})
    rng.shuffle(rows)
    return rows
