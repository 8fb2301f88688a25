"""Write the shipped rejection-sampling task sets under data_recipes/tasks/ with the environments' own generators.

    .venv/bin/python scripts/make_task_sets.py [OUT_DIR] [--per-set N]

For ``math`` and ``tool_calling``: a train set and a held-out set of N tasks each (default 32). The held-out set is
drawn with another seed and every task whose id or prompt is also in the train set is skipped, so the two never
overlap. Deterministic: re-running changes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posttrain.environment import make_env

SEEDS = {"train": 101, "heldout": 202}
ENVS = ("math", "tool_calling")


def _prompt(task: dict) -> str:
    return json.dumps(task["messages"], sort_keys=True)


def task_sets(env_name: str, n: int) -> dict[str, list[dict]]:
    env = make_env(env_name)
    try:
        train = list(env.generate_tasks(n, SEEDS["train"]))
        taken = {t["id"] for t in train} | {_prompt(t) for t in train}
        heldout: list[dict] = []
        extra = n
        while len(heldout) < n:  # draw more until n tasks are left after removing overlaps
            candidates = list(env.generate_tasks(n + extra, SEEDS["heldout"]))
            heldout = [t for t in candidates if t["id"] not in taken and _prompt(t) not in taken][:n]
            extra *= 2
    finally:
        env.close()
    return {"train": train, "heldout": heldout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path,
                        default=Path(__file__).resolve().parent.parent / "data_recipes" / "tasks")
    parser.add_argument("--per-set", type=int, default=32)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for env_name in ENVS:
        for split, tasks in task_sets(env_name, args.per_set).items():
            path = args.out / f"{env_name}_{split}.jsonl"
            path.write_text("".join(json.dumps(t, ensure_ascii=False, sort_keys=True) + "\n" for t in tasks),
                            encoding="utf-8")
            print(f"{path}: {len(tasks)} tasks, {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
