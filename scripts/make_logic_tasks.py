"""Regenerate the Logic track's shipped task files under data_recipes/samples/ (deterministic).

    .venv/bin/python scripts/make_logic_tasks.py [OUT_DIR]

Training and held-out tasks come from the environments' own seeded generators (different seeds, and the held-out
prompts are checked not to repeat a training prompt):

* ``logic_{math,code,tool_calling}_tasks.jsonl`` and ``..._heldout.jsonl``: the Logic track's mix
  (data_recipes/logic_tasks.yaml and logic_tasks_heldout.yaml);
* ``logic_easy_math_tasks.jsonl`` and ``..._heldout.jsonl``: one-digit additions and subtractions written as math-env
  tasks (the env's own task format and instruction), small enough for SmolLM2-135M to solve some of the time, so a
  short CPU run shows the held-out reward move (data_recipes/logic_easy_math*.yaml, docs/logic_track.md).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from posttrain.environment import make_env

MIX = {"math": (48, 12), "code": (24, 8), "tool_calling": (24, 8)}  # env -> (training tasks, held-out tasks)
TRAIN_SEED, HELDOUT_SEED = 0, 1000


def easy_math(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` distinct one-digit sums and differences as math-env tasks."""
    from envs.math.problems import Problem
    from envs.math.tasks import make_task

    rng, seen = random.Random(seed), set()
    while len(seen) < n:
        a, b, op = rng.randint(1, 9), rng.randint(1, 9), rng.choice("+-")
        a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        result = a + b if op == "+" else a - b
        yield make_task(Problem("easy_arithmetic", f"What is ${a} {op} {b}$?", str(result),
                                [f"${a} {op} {b} = {result}$"]))


def split(tasks: Iterable[dict[str, Any]], n_train: int) -> tuple[list[dict], list[dict]]:
    tasks = list(tasks)
    return tasks[:n_train], tasks[n_train:]


def write(path: Path, tasks: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(t, sort_keys=True, ensure_ascii=False) + "\n" for t in tasks),
                    encoding="utf-8")
    print(f"{path}: {len(tasks)} tasks, {path.stat().st_size / 1024:.1f} KiB")


def check_unseen(train: list[dict], heldout: list[dict], name: str) -> None:
    seen = {json.dumps(t["messages"], sort_keys=True) for t in train}
    repeated = [t["id"] for t in heldout if json.dumps(t["messages"], sort_keys=True) in seen]
    if repeated:
        raise SystemExit(f"{name}: held-out task {repeated[0]} repeats a training prompt")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "data_recipes/samples"
    out.mkdir(parents=True, exist_ok=True)
    sets = {}
    for env_name, (n_train, n_heldout) in MIX.items():
        env = make_env(env_name)
        try:
            train = list(env.generate_tasks(n_train, TRAIN_SEED))
            heldout = [t for t in env.generate_tasks(n_heldout + n_train, HELDOUT_SEED)
                       if json.dumps(t["messages"], sort_keys=True)
                       not in {json.dumps(x["messages"], sort_keys=True) for x in train}][:n_heldout]
        finally:
            env.close()
        sets[env_name] = (train, heldout)
    sets["easy_math"] = split(easy_math(96, TRAIN_SEED), 64)  # 81 sums + 45 differences exist; 96 distinct ones
    for name, (train, heldout) in sets.items():
        check_unseen(train, heldout, name)
        write(out / f"logic_{name}_tasks.jsonl", train)
        write(out / f"logic_{name}_heldout.jsonl", heldout)


if __name__ == "__main__":
    main()
