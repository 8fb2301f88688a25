"""Recipe formats (kind ``task``) that turn well-known math data into ``math`` tasks.

* ``gsm8k``: ``question``, ``answer`` ending in ``#### 42`` (GSM8K). The gold answer is what follows ``####``
  (thousands separators dropped); the worked solution, without GSM8K's ``<<48/2=24>>`` calculator notes, becomes the
  reference solution ending in ``\\boxed{42}``.
* ``math_boxed``: ``problem``, ``solution`` with the final answer in ``\\boxed{...}`` (the MATH dataset); an ``answer``
  column, when present (MATH-500), is the gold answer; otherwise the last ``\\boxed{}`` (or ``\\fbox{}``) of the
  solution is. ``level`` and ``type``/``subject`` are kept.

A row without a usable answer raises :class:`MalformedRow` (counted by the build, never a task whose gold is empty).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from envs.math.tasks import INSTRUCTION
from posttrain.data.sources import MalformedRow

CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)
BOX = re.compile(r"\\(?:boxed|fbox)\s*")


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedRow(f"missing key {key!r} (a non-empty string)")
    return value.strip()


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces balanced; ``\\boxed 5`` too)."""
    found = None
    for match in BOX.finditer(text):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    found = text[start + 1:i]
                    break
        else:
            word = re.match(r"[^\s$]+", text[start:])
            if word:
                found = word.group()
    return found.strip() if found is not None and found.strip() else None


def _task(source: str, record: dict[str, Any], question: str, answer: str, solution: str,
          extra: dict[str, Any]) -> dict[str, Any]:
    prompt = f"{question}\n\n{INSTRUCTION}"
    given = record.get("id", record.get("unique_id"))
    ident = str(given) if isinstance(given, str | int) and str(given).strip() else \
        hashlib.sha1(prompt.encode()).hexdigest()[:12]
    return {"id": f"{source}-{ident}", "env": "math", "source": source,
            "messages": [{"role": "user", "content": prompt}], "tools": [], "answer": answer, "solution": solution,
            **extra}


def from_gsm8k(record: dict[str, Any]) -> dict[str, Any]:
    question, worked = _text(record, "question"), _text(record, "answer")
    match = GSM8K_ANSWER.search(worked)
    if match is None:
        raise MalformedRow("answer: no '#### <final answer>' line (GSM8K's format)")
    answer = re.sub(r"(?<=\d),(?=\d{3})", "", match.group(1)).strip().rstrip(".")
    if not answer:
        raise MalformedRow("answer: nothing after '####'")
    steps = CALCULATOR_NOTE.sub("", worked[:match.start()]).strip()
    solution = (steps + "\n\n" if steps else "") + f"The answer is $\\boxed{{{answer}}}$."
    return _task("gsm8k", record, question, answer, solution, {"family": "gsm8k"})


def from_math(record: dict[str, Any]) -> dict[str, Any]:
    problem, solution = _text(record, "problem"), _text(record, "solution")
    given = record.get("answer")
    answer = given.strip() if isinstance(given, str) and given.strip() else last_boxed(solution)
    if answer is None:
        raise MalformedRow("solution: no \\boxed{...} final answer (and no 'answer' column)")
    if last_boxed(solution) is None:
        solution = f"{solution}\n\nThe answer is $\\boxed{{{answer}}}$."
    extra = {"family": str(record.get("type") or record.get("subject") or "math")}
    if record.get("level") is not None:
        extra["level"] = str(record["level"])
    return _task("math", record, problem, answer, solution, extra)
