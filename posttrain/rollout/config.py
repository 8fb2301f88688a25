"""The ``rollout`` section of every stage that generates: which engine, how many Ray workers, what each reserves.

Kept apart from the pool and the engines so that validating a config imports neither torch nor Ray.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from posttrain.config import Schema

EngineKind = Literal["vllm", "hf"]


class WorkerResources(Schema):
    """What Ray reserves for each worker for its whole life. Fractions are fine (e.g. two workers on 2 cores with
    ``num_cpus: 1``); on GPUs give ``num_gpus`` equal to the engine's ``tensor_parallel_size``."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


class RolloutConfig(Schema):
    """The ``rollout`` section of a stage config."""

    engine: EngineKind = "vllm"
    num_workers: int = Field(1, ge=1)
    resources: WorkerResources = Field(default_factory=WorkerResources)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to VLLMEngine / HFEngine")
    chunk_size: int | None = Field(None, ge=1, description="prompts per worker call; default: an equal share")
    max_chunk_failures: int = Field(3, ge=1, description="worker deaths one chunk may see before the batch fails")
