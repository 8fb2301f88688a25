"""Adaptive resampling in rejection sampling: prompts no first-pass sample solved get a second pass
(``resample_unsolved``), and rs rounds leave out prompts earlier rounds already verified ``skip_solved`` times. The
tiny model in a Ray worker (transformers engine), the parity plugin env of test_sample, real verification."""

from __future__ import annotations

import json
from pathlib import Path

from test_sample import base_overrides, write_parity_tasks

from posttrain.config import load_config


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted(folder.glob("batch_*.jsonl"))
            for line in shard.read_text().splitlines()]


def test_unsolved_prompts_get_a_second_pass(tiny_model_dir, tmp_path) -> None:
    import pyarrow.parquet as pq

    from posttrain.stages.sample import SampleConfig, run_sample

    recipe = write_parity_tasks(tmp_path / "tasks", 12, seed=3)
    out = tmp_path / "out"
    done = run_sample(load_config(SampleConfig, None, [*base_overrides(tiny_model_dir, out, recipe, "hf"),
                                                       "sampling.n=1", "resample_unsolved=4"]))
    first = _records(out / "shards")
    unsolved = sorted(r["index"] for r in first if not any(s["passed"] for s in r["samples"]))
    second = _records(out / "shards_unsolved")
    assert unsolved and sorted(r["index"] for r in second) == unsolved  # exactly the prompts their sample failed
    assert all(len(r["samples"]) == 4 and [s["sample_index"] for s in r["samples"]] == [1, 2, 3, 4] for r in second)
    counts = done.metrics["resample_unsolved"]
    solved_now = sum(any(s["passed"] for s in r["samples"]) for r in second)
    assert counts == {"prompts": len(unsolved), "samples": 4 * len(unsolved), "solved": solved_now}
    # Rows come from both passes; pass@1 is still the first pass's (one sample a prompt).
    rows = pq.read_table(out / "data.parquet").num_rows
    assert rows >= done.metrics["total"]["kept"] and done.metrics["total"]["samples"] == 12
    if solved_now:
        assert rows > done.metrics["total"]["kept"]


def test_rounds_skip_prompts_already_solved(tiny_model_dir, tmp_path) -> None:
    from posttrain.stages.rs import RSConfig, run_rs

    train = write_parity_tasks(tmp_path / "train", 12, seed=5)
    heldout = write_parity_tasks(tmp_path / "heldout", 4, seed=6)
    sample = [o for o in base_overrides(tiny_model_dir, tmp_path, train, "hf")
              if not o.startswith(("model=", "output_dir=", "rollout"))]
    cfg = load_config(RSConfig, None, [
        f"model={tiny_model_dir}", f"output_dir={tmp_path / 'rs'}", "rounds=2", "skip_solved=1", "rollout.engine=hf",
        "rollout.resources.num_cpus=0.5", "rollout.engine_kwargs={dtype: float32, max_model_len: 512}",
        *[f"sample.{o}" for o in sample], f"heldout.tasks.recipe={heldout}",
        "sft.train={max_steps: 1, batch_size: 4, learning_rate: 1.0e-3, max_length: 256, report_to: []}"])
    run_rs(cfg)
    out = tmp_path / "rs"
    round1 = _records(out / "round_1" / "data" / "shards")
    solved = {r["id"] for r in round1 if any(s["passed"] for s in r["samples"])}
    assert solved  # the tiny model solves some parity prompts
    subset = json.loads((out / "round_2" / "tasks" / "manifest.json").read_text())
    assert subset["metrics"] == {"rows": 12 - len(solved), "rows_source": 12}
    round2 = {r["id"] for r in _records(out / "round_2" / "data" / "shards")}
    assert round2 == {r["id"] for r in round1} - solved  # only the prompts round 1 did not solve
