"""The Ray actor that owns one engine, and starting Ray inside the current process.

A worker is created once per run and then serves many batches: vLLM's start-up (~20 s on CPU) is paid once. Each
worker is its own process, so its vLLM engine core runs in-process there and accepts weights as tensors.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.rollout.config import EngineKind, WorkerResources
from posttrain.rollout.engines import NamedTensors, Sample, make_engine
from posttrain.rollout.sampling import SamplingParams


def start_ray(num_cpus: int | None = None, temp_dir: str | Path | None = None) -> None:
    """Start a private local Ray instance in this process unless one is running (never touches other Ray instances).

    With ``RAY_ADDRESS`` set (as inside ``ray job submit``, or by a user), connect to that cluster instead.
    A fresh temp dir each time: a stale ``ray_current_cluster`` file in a reused one makes ``ray.init`` hang.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, configure_logging=False)
        return
    temp_dir = str(temp_dir) if temp_dir is not None else tempfile.mkdtemp(prefix="ray-")
    ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, _temp_dir=temp_dir,
             log_to_driver=False, configure_logging=False)


class RolloutWorker:
    """One engine behind a Ray actor. Use through :class:`posttrain.rollout.pool.RolloutPool`."""

    def __init__(self, model_path: str, engine: EngineKind, engine_kwargs: dict[str, Any]) -> None:
        self.engine = make_engine(engine, model_path, **engine_kwargs)
        self.served = {"calls": 0, "prompts": 0, "tokens": 0}

    def info(self) -> dict[str, Any]:
        """Ready check and facts the pool needs (awaiting this waits for the engine to have started), plus what this
        worker has generated so far."""
        return {"pid": os.getpid(), "max_model_len": self.engine.max_model_len, **self.served}

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Sample]]:
        out = self.engine.generate(prompts, sampling)
        self.served["calls"] += 1
        self.served["prompts"] += len(prompts)
        self.served["tokens"] += sum(len(s.token_ids) for samples in out for s in samples)
        return out

    def update_weights_from_path(self, path: str) -> None:
        self.engine.update_weights_from_path(path)

    def update_weights(self, named_tensors: NamedTensors) -> None:
        self.engine.update_weights(named_tensors)

    def update_adapter(self, named_tensors: NamedTensors, config: dict[str, Any]) -> None:
        self.engine.update_adapter(named_tensors, config)


def worker_options(resources: WorkerResources) -> dict[str, Any]:
    """Ray actor options for a worker. Restarts are handled by the pool (it must also re-apply the latest weights)."""
    return {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus, "max_restarts": 0,
            "max_task_retries": 0}
