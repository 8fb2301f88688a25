"""The Logic track on the same tasks four ways, in one run: on-policy (the baseline), rollouts one step ahead
(``max_staleness: 1``), LoRA instead of full fine-tuning, and dynamic sampling (zero-variance groups replaced).

    python bench/rl_budget.py                       # SmolLM2-135M-Instruct, 8 steps each (~15 min on 2 idle cores)
    python bench/rl_budget.py --model tiny --steps 3   # the tiny random model: plumbing only (a minute or two)
    python bench/rl_budget.py --only sync,async --repeats 2

Each run is its own process (so its peak RSS is its own: the trainer process's ``ru_maxrss``; the rollout worker is a
separate Ray actor, the same in every run) and trains the same prompts (easy one-digit arithmetic, the same seed and
batch shape) with the same rollout worker (transformers engine, 1 CPU) and a held-out evaluation at the end. Printed:
steps/s and episodes/s of the training loop, held-out reward after the last step, peak RSS, and the ratios against the
on-policy run measured in the same invocation (async episodes/s / sync episodes/s is the overlap's gain; LoRA peak RSS
/ full peak RSS its memory). With ``--repeats`` the runs alternate and the fastest of each is compared (outside load
on a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "sync": {},
    "async": {"max_staleness": 1},
    "lora": {"lora": {"r": 16, "alpha": 32, "dropout": 0.0}, "weight_push": "adapter"},
    "dynamic": {"dynamic_sampling": {"max_rounds": 2}},
}


def config(model: str, out: Path, steps: int, extra: dict[str, Any]) -> dict[str, Any]:
    lr = 2e-4 if "lora" in extra else 2e-5  # LoRA trains a few parameters: the usual 10x larger step
    return {
        "model": model, "output_dir": str(out),
        "tasks": {"recipe": str(ROOT / "data_recipes/logic_easy_math.yaml")},
        "heldout": {"tasks": {"recipe": str(ROOT / "data_recipes/logic_easy_math_heldout.yaml"), "limit": 16},
                    "every_steps": steps, "at_start": False},
        "train": {"max_steps": steps, "prompts_per_step": 4, "num_generations": 4, "learning_rate": lr,
                  "loss_type": "dapo", "save_steps": 10_000, "report_to": []},
        "sampling": {"temperature": 0.7, "max_tokens": 48}, "agent": {"max_turns": 1},
        "verify": {"workers": 1}, "rollout": {"engine": "hf", "resources": {"num_cpus": 1}},
        **extra,
    }


def one(name: str, model: str, steps: int) -> dict[str, Any]:
    """Runs in a child process: one configuration, its numbers as JSON on the last line."""
    from posttrain.stages.rl_logic import run_logic_track

    with tempfile.TemporaryDirectory(prefix=f"rl-budget-{name}-") as tmp:
        start = time.perf_counter()
        done = run_logic_track(config(model, Path(tmp) / "out", steps, RUNS[name]), source="bench")
        wall = time.perf_counter() - start
        m = done.metrics
        episodes, loop = m["episodes_played"], m["duration_s"]  # dynamic sampling plays the refills too
        return {"run": name, "loop_s": loop, "wall_s": round(wall, 1), "episodes": episodes,
                "steps_per_s": round(steps / loop, 4), "episodes_per_s": round(episodes / loop, 3),
                "heldout_reward": (m.get("heldout_after") or {}).get("heldout/reward"),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "pushed_mb": round(m["weight_sync"]["bytes"] / 2**20, 2),
                "staleness_mean": m["rollouts"].get("staleness_mean"),
                "zero_variance_fraction": (m.get("dynamic_sampling") or {}).get("zero_variance_fraction")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model folder, a known name, or 'tiny'")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", default=",".join(RUNS), help="comma-separated runs among " + ", ".join(RUNS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.model, args.steps)))
        return
    model = args.model
    if model == "tiny":
        from posttrain.models.tiny import make_tiny_model

        model = str(make_tiny_model(Path(tempfile.mkdtemp(prefix="rl-budget-tiny-")) / "tiny"))
    names = [n for n in args.only.split(",") if n]
    best: dict[str, dict[str, Any]] = {}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--model", model, "--steps",
                                   str(args.steps)], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(result))
            if name not in best or result["loop_s"] < best[name]["loop_s"]:
                best[name] = result
    base = best.get("sync")
    print(f"\n{'run':8} {'steps/s':>8} {'episodes/s':>10} {'held-out':>9} {'peak RSS MB':>12} {'pushed MB':>10}")
    for name, r in best.items():
        print(f"{name:8} {r['steps_per_s']:8.4f} {r['episodes_per_s']:10.3f} {r['heldout_reward'] or 0:9.3f} "
              f"{r['peak_rss_mb']:12.1f} {r['pushed_mb']:10.2f}")
    if base:
        for name, r in best.items():
            if name != "sync":
                print(f"{name} / sync: episodes/s {r['episodes_per_s'] / base['episodes_per_s']:.3f}x, peak RSS "
                      f"{r['peak_rss_mb'] / base['peak_rss_mb']:.3f}x, held-out reward "
                      f"{(r['heldout_reward'] or 0):.3f} vs {(base['heldout_reward'] or 0):.3f}")


if __name__ == "__main__":
    main()
