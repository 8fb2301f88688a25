"""Math task records: the seeded generator, and the reference trajectory (worked solution) of a task."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from envs.math.problems import FAMILIES, Problem
from posttrain.errors import UserError

INSTRUCTION = "Give a short solution and put your final answer in \\boxed{}."
MAX_DRAWS = 200  # draws allowed per task before deciding the generator has run out of distinct problems


def make_task(problem: Problem) -> dict[str, Any]:
    prompt = f"{problem.question}\n\n{INSTRUCTION}"
    digest = hashlib.sha1(prompt.encode()).hexdigest()[:12]
    solution = "\n".join(problem.steps) + f"\n\nThe answer is $\\boxed{{{problem.answer}}}$."
    return {
        "id": f"math-{problem.family}-{digest}",
        "env": "math",
        "messages": [{"role": "user", "content": prompt}],
        "tools": [],
        "answer": problem.answer,
        "solution": solution,
        "family": problem.family,
    }


def generate_tasks(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` distinct tasks (by prompt), the same ones for the same ``seed``."""
    if n < 0:
        raise UserError(f"number of tasks must be >= 0, got {n}")
    rng = random.Random(seed)
    families = sorted(FAMILIES)
    seen: set[str] = set()
    for made in range(n):
        for _ in range(MAX_DRAWS):
            task = make_task(FAMILIES[rng.choice(families)](rng))
            if task["id"] not in seen:
                break
        else:
            raise UserError(f"math generator: could only make {made} distinct tasks, {n} were asked for")
        seen.add(task["id"])
        yield task


def reference_trajectory(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's prompt followed by its worked solution as the assistant turn."""
    if not isinstance(task.get("solution"), str):
        raise UserError(f"math task {task.get('id', '?')}: no 'solution' text to build a reference trajectory from")
    return [*task["messages"], {"role": "assistant", "content": task["solution"]}]
