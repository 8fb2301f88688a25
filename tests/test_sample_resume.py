"""Fault tolerance of `posttrain sample` (transformers engine in a Ray worker; vLLM is not the point here):

* a `posttrain sample` process killed with SIGKILL mid-run resumes from its shards, and the final dataset equals an
  uninterrupted run's;
* a rollout worker killed mid-run (``ray.kill``) is replaced by the pool: every sample of every prompt is in the
  shards exactly once, and the dataset again equals the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_sample import base_overrides, write_parity_tasks

from posttrain.config import load_config

N_PROMPTS, BATCH = 16, 2  # 8 batches: enough that a kill lands with work still to do


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_parity_tasks(tmp_path_factory.mktemp("tasks"), N_PROMPTS, seed=3)


@pytest.fixture(scope="module")
def hf_pool(tiny_model_dir):
    from posttrain.rollout.pool import RolloutPool

    pool = RolloutPool(tiny_model_dir, engine="hf", resources={"num_cpus": 0.5},
                       engine_kwargs={"dtype": "float32", "max_model_len": 512})
    yield pool
    pool.shutdown()


def _overrides(model: Path, out: Path, recipe: Path) -> list[str]:
    return [*base_overrides(model, out, recipe, "hf"), f"batch_size={BATCH}", "sampling.n=2"]


@pytest.fixture(scope="module")
def reference(hf_pool, tiny_model_dir, recipe, tmp_path_factory) -> list[dict]:
    """The dataset of an uninterrupted run."""
    from posttrain.stages.sample import SampleConfig, run_sample

    out = tmp_path_factory.mktemp("reference")
    cfg = load_config(SampleConfig, None, _overrides(tiny_model_dir, out, recipe))
    manifest = run_sample(cfg, pool=hf_pool).manifest
    assert manifest["metrics"]["rows"] > 0
    return _rows(out)


def _rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "data.parquet").to_pylist()


def _when_shards(out: Path, count: int, action, timeout: float = 600.0) -> threading.Thread:
    """Run ``action`` as soon as ``count`` shards exist in ``out/shards`` (polling, in a thread)."""
    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(list((out / "shards").glob("batch_*.jsonl"))) >= count:
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_sample_run_resumes_from_its_shards(hf_pool, tiny_model_dir, recipe, reference, tmp_path) -> None:
    from posttrain.stages.sample import SampleConfig, run_sample

    out = tmp_path / "out"
    overrides = _overrides(tiny_model_dir, out, recipe)
    # The CLI in its own process group (its Ray instance and workers included), killed without warning.
    code = "from posttrain.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "sample", *overrides], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        watcher = _when_shards(out, 1, lambda: os.killpg(proc.pid, signal.SIGKILL))
        proc.wait(timeout=600)
        watcher.join(timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = len(list((out / "shards").glob("batch_*.jsonl")))
    assert 1 <= done < N_PROMPTS // BATCH and not (out / "data.parquet").exists()

    manifest = run_sample(load_config(SampleConfig, None, overrides), pool=hf_pool).manifest
    assert manifest["metrics"]["batches"] == {"total": 8, "from_earlier_run": done, "generated": 8 - done}
    assert _rows(out) == reference


def test_a_killed_rollout_worker_loses_and_duplicates_nothing(hf_pool, tiny_model_dir, recipe, reference,
                                                              tmp_path) -> None:
    import ray

    from posttrain.stages.sample import SampleConfig, run_sample

    out = tmp_path / "out"
    victim = hf_pool.workers[0]
    killed = threading.Event()

    def kill() -> None:
        ray.kill(victim, no_restart=True)
        killed.set()

    watcher = _when_shards(out, 2, kill)
    cfg = load_config(SampleConfig, None, _overrides(tiny_model_dir, out, recipe))
    manifest = run_sample(cfg, pool=hf_pool).manifest
    watcher.join(timeout=5)
    assert killed.is_set() and manifest["metrics"]["rollout_restarts"] >= 1 and hf_pool.workers[0] is not victim

    prompts = [json.loads(line) for shard in sorted((out / "shards").glob("batch_*.jsonl"))
               for line in shard.read_text().splitlines()]
    pairs = [(p["index"], s["sample_index"]) for p in prompts for s in p["samples"]]
    assert sorted(pairs) == [(i, j) for i in range(N_PROMPTS) for j in range(2)]  # none lost, none twice
    assert _rows(out) == reference
