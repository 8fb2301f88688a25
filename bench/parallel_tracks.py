"""Wall time of the two RL tracks at once vs one after the other, in the same run.

    python bench/parallel_tracks.py                       # tiny random model, tiny budgets (minutes)
    python bench/parallel_tracks.py --config configs/rl_parallel.yaml   # the shipped config (SmolLM2, long)

Prints both wall times and the ratio sequential / parallel (> 1 means running the tracks at once saves time). On 2 CPU
cores both tracks compete for the same cores, so the gain comes from overlapping one track's waits (verification,
sampling, start-up) with the other's compute; on a cluster each track has its own GPUs and the ratio approaches 2.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(model: Path) -> list[str]:
    return [
        f"model={model}",
        f"chat.offline.data={ROOT / 'data_recipes/preference_tiny.yaml'}", "chat.win_rate.prompts=0",
        "chat.offline.train={max_steps: 4, batch_size: 4, learning_rate: 1.0e-3, report_to: [], max_length: 256}",
        f"logic.tasks={{recipe: {ROOT / 'data_recipes/rs_tasks.yaml'}, limit: 8}}",
        "logic.train={max_steps: 3, prompts_per_step: 2, num_generations: 2, learning_rate: 1.0e-2, report_to: [], "
        "save_steps: 100}",
        "logic.sampling={max_tokens: 16}", "logic.agent={max_turns: 1}", "logic.verify={workers: 1}",
        "logic.rollout={engine: hf, num_workers: 1, resources: {num_cpus: 0.5}}",
        "resources={chat: {num_cpus: 0.5}, logic: {num_cpus: 0.5}}",
    ]


def timed(config_path: str | None, overrides: list[str], out: Path, parallel: bool) -> float:
    from posttrain.config import load_config
    from posttrain.stages.rl import RLConfig, run

    cfg = load_config(RLConfig, config_path, [*overrides, f"output_dir={out}", f"parallel={str(parallel).lower()}"])
    start = time.perf_counter()
    run(cfg, source=config_path or "bench")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="an RL config (default: tiny model and budgets)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tracks-"))
    overrides: list[str] = []
    if args.config is None:
        from posttrain.models.tiny import make_tiny_model

        overrides = tiny_overrides(make_tiny_model(work / "tiny"))
    sequential = timed(args.config, overrides, work / "seq", parallel=False)
    parallel = timed(args.config, overrides, work / "par", parallel=True)
    print(f"sequential (one track after the other): {sequential:8.1f} s")
    print(f"parallel   (both tracks at once)       : {parallel:8.1f} s")
    print(f"speed-up sequential / parallel         : {sequential / parallel:8.2f}x")


if __name__ == "__main__":
    main()
