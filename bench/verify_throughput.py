"""Verification throughput on HumanEval's 164 canonical solutions: bwrap sandbox vs the bare runner.

The bare runner is the ``rlimit`` backend: the same judge/worker harness, the same rlimits and timeouts, started as a
plain subprocess instead of inside bwrap's namespaces. Both run through the same VerifyPool, with 1 and 2 workers.
Every canonical solution must pass under both.

    python bench/verify_throughput.py [--workers 1 2] [--limit 164]
"""

from __future__ import annotations

import argparse
import statistics
import time

from envs.code import CodeEnv
from posttrain.environment import Trajectory
from posttrain.verify_pool import VerifyPool


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(pools: dict[tuple[str, int], VerifyPool], trajectories: list[Trajectory], rounds: int) -> list[dict]:
    """Rounds interleave the configurations, so load from other work on the machine hits them alike."""
    runs: dict[tuple[str, int], list[tuple[float, list]]] = {key: [] for key in pools}
    for _ in range(rounds):
        for key, pool in pools.items():
            started = time.perf_counter()
            results = pool.verify_all(trajectories)
            runs[key].append((time.perf_counter() - started, results))
    rows = []
    for (backend, workers), done in runs.items():
        results = [r for _, rs in done for r in rs]
        failed = sorted({t.task["id"] for _, rs in done for t, r in zip(trajectories, rs, strict=True)
                         if not r.passed})
        latencies = [r.details["verify_s"] for r in results]
        rows.append({"backend": backend, "workers": workers, "n": len(trajectories), "failed": failed,
                     "passed": len(trajectories) - len(failed),
                     "per_s": statistics.median(len(trajectories) / seconds for seconds, _ in done),
                     "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * percentile(latencies, 0.99),
                     "seconds": statistics.median(seconds for seconds, _ in done)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=164, help="how many HumanEval problems (all 164 by default)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the problems per configuration")
    args = parser.parse_args()

    tasks = CodeEnv().task_set("humaneval")[:args.limit]
    trajectories = [Trajectory(t, [*t["messages"], {"role": "assistant", "content": t["reference_solution"]}])
                    for t in tasks]
    pools = {(backend, w): VerifyPool("code", workers=w, timeout_s=120, env_kwargs={"backend": backend})
             for w in args.workers for backend in ("bwrap", "rlimit")}
    try:
        for pool in pools.values():
            pool.verify_all(trajectories[:4])  # warm: workers started, sandbox checked
        rows = measure(pools, trajectories, args.rounds)
    finally:
        for pool in pools.values():
            pool.close()

    print(f"\n{'backend':<8} {'workers':>7} {'passed':>9} {'verif/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'time s':>7}"
          f"   (median of {args.rounds} rounds)")
    for r in rows:
        print(f"{r['backend']:<8} {r['workers']:>7} {r['passed']:>5}/{r['n']:<3} {r['per_s']:>8.1f} "
              f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['seconds']:>7.1f}")
    by = {(r["backend"], r["workers"]): r for r in rows}
    for w in args.workers:
        ratio = by["bwrap", w]["per_s"] / by["rlimit", w]["per_s"]
        verdict = "meets" if ratio >= 0.7 else "BELOW"
        print(f"sandboxed / bare throughput, {w} worker(s): {ratio:.2f}x ({verdict} the 0.7x target)")
    if len(args.workers) > 1:
        lo, hi = min(args.workers), max(args.workers)
        print(f"scaling {lo} -> {hi} workers (bwrap): {by['bwrap', hi]['per_s'] / by['bwrap', lo]['per_s']:.2f}x")
    failed = {r["backend"]: r["failed"] for r in rows if r["failed"]}
    print(f"canonical solutions passing: {'all' if not failed else 'NOT all'} "
          f"({min(r['passed'] for r in rows)}/{len(trajectories)} in every run)")
    assert not failed, f"canonical solutions failed: {failed}"


if __name__ == "__main__":
    main()
