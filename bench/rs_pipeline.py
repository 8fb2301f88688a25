"""How much does `posttrain sample` cost over its slower half? Wall time of the overlapped pipeline (generate batch i+1
while batch i is verified) against generation alone and verification alone, on the same tasks, model, seeds and
running workers, in one process:

    .venv/bin/python bench/rs_pipeline.py [--config configs/sample.yaml] [KEY=VALUE ...]

1. generation alone: every batch through the rollout pool and agent loop, nothing verified;
2. verification alone: those episodes through the verifier pools (one per environment, already started);
3. ``sample``: the whole stage (into a temp folder), timed over its generate/verify section.

Same seeds per prompt, so phases 1 and 3 generate the same tokens. The rollout workers reload their weights before
each generating phase, which also empties vLLM's prefix cache: no phase profits from another's cache. Prints
``sample / max(generation, verification)`` (target <= 1.15x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    from posttrain.config import load_config
    from posttrain.models.loading import resolve_model
    from posttrain.rollout.pool import RolloutPool
    from posttrain.stages.sample import SampleConfig, generate_batch, run_sample, verify_batch
    from posttrain.tasks import Verifiers, load_tasks, make_batches

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/sample.yaml")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the sample config")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp:
        cfg = load_config(SampleConfig, args.config, [*args.overrides, f"output_dir={tmp}/sample", "resume=false"])
        model = resolve_model(cfg.model)
        rows, _ = load_tasks(cfg.tasks, Path(tmp) / "tasks")
        params = cfg.sampling.per_bucket({r.bucket for r in rows})
        batches = make_batches(rows, cfg.batch_size)
        print(f"{len(rows)} prompts x n={sorted({p.n for p in params.values()})} in {len(batches)} batches of "
              f"<= {cfg.batch_size}; engine {cfg.rollout.engine}, {cfg.rollout.num_workers} worker(s)")

        pool = RolloutPool.from_config(model, cfg.rollout)
        verifiers = Verifiers.start(cfg.verify, {b.env for b in batches}, cfg.envs)
        try:
            warm = batches[0].__class__(index=0, env=batches[0].env, rows=batches[0].rows[:2])
            verify_batch(verifiers[warm.env], warm, generate_batch(pool, warm, params, cfg))  # start-up costs out

            pool.update_weights_from_path(model)
            start = time.perf_counter()
            episodes = [generate_batch(pool, b, params, cfg) for b in batches]
            gen_s = time.perf_counter() - start
            tokens = sum(sum(ep.mask) for eps in episodes for ep in eps)

            start = time.perf_counter()
            for batch, eps in zip(batches, episodes, strict=True):
                verify_batch(verifiers[batch.env], batch, eps)
            verify_s = time.perf_counter() - start
            n_episodes = sum(len(eps) for eps in episodes)
            del episodes
        finally:
            verifiers.close()

        try:
            pool.update_weights_from_path(model)
            start = time.perf_counter()
            manifest = run_sample(cfg, pool=pool).manifest
            stage_s = time.perf_counter() - start
        finally:
            pool.shutdown()

    timing = manifest["metrics"]["timing"]
    sample_s = timing["wall_s"]
    slower = max(gen_s, verify_s)
    print(f"episodes: {n_episodes}, model tokens: {tokens}")
    print(f"generation alone:   {gen_s:8.2f} s  ({tokens / gen_s:.0f} model tokens/s)")
    print(f"verification alone: {verify_s:8.2f} s  ({n_episodes / verify_s:.1f} episodes/s)")
    print(f"sample (overlapped):{sample_s:8.2f} s  (generate {timing['generate_s']:.2f} s, verify "
          f"{timing['verify_s']:.2f} s in parallel; whole stage incl. task build, hashing, verifier start-up and "
          f"writing the dataset: {stage_s:.2f} s)")
    print(f"ratio sample / max(generation, verification) = {sample_s / slower:.3f}x (target <= 1.15x)")


if __name__ == "__main__":
    main()
