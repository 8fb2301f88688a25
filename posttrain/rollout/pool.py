"""A pool of rollout workers: split prompt batches over them, stream results back, broadcast weight updates, and
survive a worker that dies.

Prompts are cut into chunks; each worker has at most two chunks queued at a time (so it never idles between them) and
the next chunk goes to whichever worker frees up first. A chunk's results arrive all at once, when its ``generate``
call returns, and are yielded exactly once. When a worker dies (killed, out of memory, node lost), every chunk it had
not returned goes back to the front of the queue, the worker is recreated with the same resources, and the latest
weights (path or tensors) are loaded into it before it takes work: no prompt is lost, none is answered twice.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.rollout.config import EngineKind, RolloutConfig, WorkerResources
from posttrain.rollout.engines import NamedTensors, Sample, named_items, per_prompt, weight_files
from posttrain.rollout.packing import PackedTensors, pack_tensors
from posttrain.rollout.sampling import SamplingParams
from posttrain.rollout.workers import RolloutWorker, start_ray, worker_options

MAX_QUEUED_PER_WORKER = 2


def _object_ref(named_tensors: Any) -> Any:
    """Tensors in Ray's object store, packed into one buffer (a ref already put there is used as it is)."""
    import ray

    if isinstance(named_tensors, ray.ObjectRef):
        return named_tensors
    packed = named_tensors if isinstance(named_tensors, PackedTensors) else pack_tensors(named_items(named_tensors))
    return ray.put(packed)


class RolloutError(RuntimeError):
    """Rollouts could not finish (workers kept dying or could not start)."""


@dataclass
class _Chunk:
    indices: list[int]
    failures: int = 0


class RolloutPool:
    """Workers started once per run; ``generate``/``stream`` many batches; ``update_weights*`` between batches.

    Not thread-safe: one batch or weight update at a time. Starts a private local Ray instance if none is running.
    """

    def __init__(self, model_path: str | Path, num_workers: int = 1, engine: EngineKind = "vllm",
                 resources: WorkerResources | dict[str, Any] | None = None,
                 engine_kwargs: dict[str, Any] | None = None, chunk_size: int | None = None,
                 max_chunk_failures: int = 3) -> None:
        import ray
        from transformers import AutoTokenizer

        weight_files(model_path)  # fail fast, before any actor starts
        if engine not in ("vllm", "hf"):
            raise UserError(f"rollout engine {engine!r}: expected 'vllm' or 'hf'")
        start_ray()
        self.model_path = str(Path(model_path).resolve())
        self.engine = engine
        self.resources = resources if isinstance(resources, WorkerResources) else WorkerResources(**(resources or {}))
        self.engine_kwargs = dict(engine_kwargs or {})
        if self.resources.num_gpus == 0:
            self.engine_kwargs.setdefault("num_threads", max(1, int(self.resources.num_cpus)))
        self.chunk_size = chunk_size
        self.max_chunk_failures = max_chunk_failures
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.restarts = 0
        # what a recreated worker reloads: ("path", str), ("tensors", ref), or the adapter on top: ("adapter", refs)
        self._latest_weights: tuple[str, Any] | None = None
        self._restores: dict[int, Any] = {}  # worker index -> ref of the weight reload a recreated worker runs first
        self._actor_cls = ray.remote(RolloutWorker)
        self.workers = [self._new_worker() for _ in range(num_workers)]
        try:
            infos = ray.get([w.info.remote() for w in self.workers])
        except ray.exceptions.RayError as e:
            self.shutdown()
            raise RolloutError(f"rollout workers failed to start: {e}") from e
        self.max_model_len = min(info["max_model_len"] for info in infos)

    @classmethod
    def from_config(cls, model_path: str | Path, config: RolloutConfig) -> RolloutPool:
        return cls(model_path, num_workers=config.num_workers, engine=config.engine, resources=config.resources,
                   engine_kwargs=config.engine_kwargs, chunk_size=config.chunk_size,
                   max_chunk_failures=config.max_chunk_failures)

    def _new_worker(self) -> Any:
        return self._actor_cls.options(**worker_options(self.resources)).remote(
            self.model_path, self.engine, self.engine_kwargs)

    def _replace_worker(self, index: int) -> None:
        """Kill (if not dead) and recreate worker ``index``; queue the latest weights as its first call (calls from
        one caller run in order, so they land before any batch sent afterwards)."""
        import ray

        ray.kill(self.workers[index], no_restart=True)
        worker = self.workers[index] = self._new_worker()
        self.restarts += 1
        if self._latest_weights is not None:
            kind, value = self._latest_weights
            if kind == "adapter":  # the model path's weights are the base; the adapter goes on top
                self._restores[index] = worker.update_adapter.remote(*value)
            else:
                method = worker.update_weights_from_path if kind == "path" else worker.update_weights
                self._restores[index] = method.remote(value)

    def _check_restore(self, index: int) -> None:
        """Before trusting a recreated worker's first results, make sure it did load the latest weights."""
        import ray

        ref = self._restores.pop(index, None)
        if ref is not None:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:
                raise RolloutError(f"a recreated rollout worker could not load the latest weights: {e}") from e

    # -- generation ---------------------------------------------------------------------------------------------

    def stream(self, prompts: Sequence[Sequence[int]],
               sampling: SamplingParams | Sequence[SamplingParams]) -> Iterator[tuple[int, list[Sample]]]:
        """Yield ``(prompt_index, samples)`` as chunks finish, in completion order, each prompt exactly once.

        One ``SamplingParams`` with a seed gives prompt ``i`` the seed ``seed + i``, so results do not depend on how
        the prompts were split over workers; a list of params (one per prompt) is used as given.
        """
        import ray

        if isinstance(sampling, SamplingParams) and sampling.seed is not None:
            params = [sampling.with_updates(seed=sampling.seed + i) for i in range(len(prompts))]
        else:
            params = per_prompt(sampling, len(prompts))
        if not prompts:
            return
        size = self.chunk_size or math.ceil(len(prompts) / len(self.workers))
        queue = deque(_Chunk(list(range(s, min(s + size, len(prompts))))) for s in range(0, len(prompts), size))
        inflight: dict[Any, tuple[int, Any, _Chunk]] = {}  # ref -> (worker index, worker handle, chunk)

        def dispatch() -> None:
            # Next chunk to the least-loaded worker, until every worker has MAX_QUEUED_PER_WORKER or none are left.
            while queue:
                load = [sum(1 for v in inflight.values() if v[0] == w) for w in range(len(self.workers))]
                w = min(range(len(self.workers)), key=load.__getitem__)
                if load[w] >= MAX_QUEUED_PER_WORKER:
                    return
                chunk = queue.popleft()
                worker = self.workers[w]
                ref = worker.generate.remote([list(prompts[i]) for i in chunk.indices],
                                             [params[i] for i in chunk.indices])
                inflight[ref] = (w, worker, chunk)

        dispatch()
        while inflight:
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            w, worker, chunk = inflight.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                chunk.failures += 1
                if chunk.failures >= self.max_chunk_failures:
                    raise RolloutError(f"prompts {chunk.indices[0]}..{chunk.indices[-1]}: {chunk.failures} workers "
                                       f"died while generating them; last error: {e}") from e
                queue.appendleft(chunk)
                if self.workers[w] is worker:  # the first failure seen from this worker: replace it once
                    self._replace_worker(w)
            else:
                self._check_restore(w)
                yield from zip(chunk.indices, results, strict=True)
            dispatch()

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Sample]]:
        """All results in prompt order (see :meth:`stream`)."""
        results: list[list[Sample] | None] = [None] * len(prompts)
        for i, samples in self.stream(prompts, sampling):
            results[i] = samples
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    # -- weights ------------------------------------------------------------------------------------------------

    def update_weights_from_path(self, path: str | Path) -> None:
        """Every worker loads the checkpoint folder (which must be readable from every worker's node)."""
        weight_files(path)
        path = str(Path(path).resolve())
        self._latest_weights = ("path", path)
        self._broadcast("update_weights_from_path", path)

    def update_weights(self, named_tensors: NamedTensors) -> None:
        """Every worker loads these tensors (packed into one buffer, put in Ray's object store once and read from
        there by every worker without a copy; kept there for recreated workers)."""
        ref = _object_ref(named_tensors)
        self._latest_weights = ("tensors", ref)
        self._broadcast("update_weights", ref)

    def update_adapter(self, named_tensors: NamedTensors, config: dict[str, Any]) -> None:
        """Every worker generates with this LoRA adapter on the weights it was started with (the base): only the
        adapter's tensors travel (packed, put once). Kept for recreated workers."""
        refs = (_object_ref(named_tensors), config)
        self._latest_weights = ("adapter", refs)
        self._broadcast("update_adapter", *refs)

    def _broadcast(self, method: str, *args: Any) -> None:
        import ray

        self._restores.clear()  # superseded: every worker gets the new weights now
        refs = [(w, getattr(worker, method).remote(*args)) for w, worker in enumerate(self.workers)]
        for w, ref in refs:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                self._replace_worker(w)  # the new worker loads the latest weights before its first batch

    def shutdown(self) -> None:
        import ray

        for worker in getattr(self, "workers", []):
            ray.kill(worker, no_restart=True)
        self.workers = []
        self._latest_weights = None

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
