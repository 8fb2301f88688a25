"""Verification on a Ray cluster: the same pool as :class:`posttrain.verify_pool.VerifyPool` (one verification per
worker at a time, a per-item timeout, a crash or timeout is that item's failure and the worker is replaced, never a
pass), with the workers as Ray actors placed where their resources are (CPU nodes of a cluster, away from the GPU
rollout workers) instead of processes of this machine.

    verify: {workers: 16, ray: {num_cpus: 1, resources: {cpu_node: 0.01}}}   # any stage that verifies
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.environment import Trajectory, VerifyResult, load_env_class
from posttrain.errors import UserError

MAX_START_FAILURES = 3


class RayVerifiers(Schema):
    """Where the verifier actors run: what each reserves (a cluster places them on nodes that have it)."""

    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved by each verifier actor")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {cpu_node: 1}")


def _verify_one(env: Any, env_name: str, trajectory: Trajectory) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = env.verify(trajectory)
        if not isinstance(result, VerifyResult):
            result = VerifyResult.failure(f"{env_name}.verify returned {type(result).__name__}, not VerifyResult")
    except UserError as e:
        result = VerifyResult.failure(e.message, reason="bad_task")
    except Exception as e:  # a verifier bug is this item's error, not the pool's death
        result = VerifyResult.failure(f"{type(e).__name__}: {e}")
    data = result.to_dict()
    data["details"] = {**data["details"], "verify_s": round(time.perf_counter() - started, 4)}
    return data


class _Verifier:
    """One environment in a Ray actor."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any]) -> None:
        from posttrain.environment import make_env

        self.env_name, self.env = env_name, make_env(env_name, **env_kwargs)

    def ready(self) -> bool:
        return True

    def verify(self, trajectory: Trajectory) -> dict[str, Any]:
        return _verify_one(self.env, self.env_name, trajectory)


@dataclass
class _Slot:
    actor: Any
    ref: Any = None  # the verification in flight
    item: int | None = None
    deadline: float = 0.0


class RayVerifyPool:
    """Verifier actors for one environment; the API of :class:`posttrain.verify_pool.VerifyPool`."""

    def __init__(self, env: str, *, workers: int = 2, max_in_flight: int | None = None, timeout_s: float = 120.0,
                 env_kwargs: dict[str, Any] | None = None, placement: RayVerifiers | None = None) -> None:
        import ray

        from posttrain.rollout.workers import start_ray

        if workers < 1:
            raise UserError(f"verification workers must be >= 1, got {workers}")
        load_env_class(env)  # a wrong name fails here, with the loader's message
        start_ray()
        self.env, self.env_kwargs, self.timeout_s = env, dict(env_kwargs or {}), timeout_s
        self.placement = placement or RayVerifiers()
        self.max_in_flight = max(max_in_flight or 4 * workers, workers)
        self._cls = ray.remote(_Verifier)
        self._slots = [_Slot(self._start()) for _ in range(workers)]
        try:  # an environment that cannot start is the caller's error, before any item
            ray.get([s.actor.ready.remote() for s in self._slots])
        except ray.exceptions.RayActorError as e:
            self.close()
            cause = getattr(e, "cause", None) or e
            raise UserError(f"environment {env!r} could not start in a verifier actor: {cause}") from None
        self._closed = False

    def _start(self) -> Any:
        options = {"num_cpus": self.placement.num_cpus, "max_restarts": 0, "max_task_retries": 0}
        if self.placement.resources:
            options["resources"] = dict(self.placement.resources)
        return self._cls.options(**options).remote(self.env, self.env_kwargs)

    def _replace(self, slot: _Slot) -> None:
        import ray

        ray.kill(slot.actor, no_restart=True)
        slot.actor, slot.ref, slot.item = self._start(), None, None

    def verify_many(self, trajectories: Iterable[Trajectory | Mapping[str, Any]], *,
                    ordered: bool = False) -> Iterator[tuple[int, VerifyResult]]:
        """Yield ``(index, result)`` for every input, as they finish (or in input order with ``ordered=True``)."""
        from posttrain.verify_pool import trajectory_from_row

        if self._closed:
            raise RuntimeError("RayVerifyPool is closed")
        source = enumerate(trajectories)
        queue: deque[tuple[int, Trajectory]] = deque()
        finished: dict[int, VerifyResult] = {}
        next_index = in_flight = 0
        exhausted = False
        try:
            while True:
                while not exhausted and in_flight < self.max_in_flight:
                    try:
                        index, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    in_flight += 1
                    try:
                        queue.append((index, item if isinstance(item, Trajectory)
                                      else trajectory_from_row(item, f"item {index}")))
                    except UserError as e:
                        finished[index] = VerifyResult.failure(e.message, reason="bad_row")
                self._dispatch(queue)
                ready = sorted(finished) if not ordered else []
                while ordered and next_index in finished:
                    ready.append(next_index)
                    next_index += 1
                for index in ready:
                    in_flight -= 1
                    yield index, finished.pop(index)
                if exhausted and in_flight == 0:
                    return
                if not ready:
                    self._collect(finished)
        finally:
            for slot in self._slots:
                if slot.item is not None:  # abandoned mid-item (the caller stopped early): start clean
                    self._replace(slot)

    def verify_all(self, trajectories: Iterable[Trajectory | Mapping[str, Any]]) -> list[VerifyResult]:
        return [result for _, result in self.verify_many(trajectories, ordered=True)]

    def _dispatch(self, queue: deque[tuple[int, Trajectory]]) -> None:
        for slot in self._slots:
            if queue and slot.item is None:
                index, trajectory = queue.popleft()
                slot.ref, slot.item = slot.actor.verify.remote(trajectory), index
                slot.deadline = time.monotonic() + self.timeout_s

    def _collect(self, finished: dict[int, VerifyResult]) -> None:
        """Wait for the next result or deadline; a dead actor or a late one fails its item and is replaced."""
        import ray

        busy = [s for s in self._slots if s.item is not None]
        if not busy:
            return
        timeout = max(0.0, min(s.deadline for s in busy) - time.monotonic())
        done, _ = ray.wait([s.ref for s in busy], num_returns=1, timeout=timeout)
        for slot in busy:
            if slot.ref in done:
                try:
                    finished[slot.item] = VerifyResult(**ray.get(slot.ref))
                    slot.ref, slot.item = None, None
                except ray.exceptions.RayError as e:
                    finished[slot.item] = VerifyResult.failure(
                        f"the verifier actor died on this item: {type(e).__name__}", reason="crash")
                    self._replace(slot)
            elif time.monotonic() > slot.deadline:
                finished[slot.item] = VerifyResult.failure(f"verification took longer than {self.timeout_s:g}s",
                                                           reason="timeout")
                self._replace(slot)

    def close(self) -> None:
        import ray

        if getattr(self, "_closed", True) and not getattr(self, "_slots", None):
            return
        self._closed = True
        for slot in self._slots:
            ray.kill(slot.actor, no_restart=True)
        self._slots = []

    def __enter__(self) -> RayVerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
