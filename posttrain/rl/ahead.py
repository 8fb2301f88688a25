"""Rollouts that run ahead of training (asynchronous, off-policy by at most ``max_staleness`` optimizer steps).

With ``max_staleness: s > 0`` the episodes of step k + 1 .. k + s are generated (and verified) on the rollout workers
while the trainer trains step k, so neither waits for the other:

    main thread   train k ---------------> train k+1 ------------->       (each step's batch taken from its future)
    rollout thread   gen k+s (weights k) | push k+1 | gen k+s+1 (weights k+1) | push k+2 | ...

One thread makes every call on the pool and the verifiers, in the order they were asked for: generation batches,
weight pushes (``WeightSync.send``), held-out evaluations. So a push never lands while a worker is mid-request, and the
episodes of step j are generated with the weights of step j - s exactly (fewer steps old after a start or a new
epoch, where nothing was queued yet). Every episode records that version; the trainer's importance-sampling correction
uses the log-probs of the policy that generated it (TRL's ``vllm_importance_sampling_*``, with the workers'
log-probs). A batch older than the bound (which the order above never produces, but a caller could) is dropped,
counted, and generated again with the current weights.

``max_staleness: 0`` is the on-policy loop, unchanged: each batch is generated when the trainer asks for it, after the
previous step's push.

Which prompts come next is known early because the trainer's own sampler decides it: the trainer pulls the next
steps' batches from its dataloader ahead of time (``LogicGRPOTrainer.get_batch_samples``) and hands them here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from posttrain.rl.rollout_func import PoolRollout, log_refill
from posttrain.rollout.agent_loop import Episode


@dataclass
class _Pending:
    step: int
    rows: list[int]
    future: Future


class RolloutThread:
    """One thread for every pool and verifier call, run in submission order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posttrain-rollouts")
        self.pool_version: int | None = None  # the step whose weights the workers hold (set by pushes, in order)

    def submit(self, job: Callable[[], Any]) -> Future:
        return self._executor.submit(job)

    def run(self, job: Callable[[], Any]) -> Any:
        """Run ``job`` after everything queued before it, and wait for it."""
        return self.submit(job).result()

    def send_push(self, job: Callable[[], None], step: int) -> None:
        """A weight push (``WeightSync.send``): queued behind the generation already asked for."""
        def push() -> None:
            job()
            self.pool_version = step
        self.submit(push)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class AheadRollout:
    """The ``rollout_func`` when rollouts run ahead: each step's episodes from a future started ``max_staleness``
    steps earlier (or generated now when there is none)."""

    def __init__(self, rollout: PoolRollout, thread: RolloutThread, max_staleness: int,
                 verify: Callable[[Sequence[Episode]], None]) -> None:
        self.rollout, self.thread, self.max_staleness, self.verify = rollout, thread, max_staleness, verify
        self.pending: deque[_Pending] = deque()
        self.lock = threading.Lock()
        self.stats = {"batches": 0, "from_ahead": 0, "generated_on_demand": 0, "dropped_stale": 0,
                      "dropped_not_asked": 0, "episodes": 0, "staleness_sum": 0}

    def ahead(self, step: int, rows: list[int], group: int) -> None:
        """Start generating the batch of optimizer step ``step`` (``rows``: its dataset rows, in batch order)."""
        with self.lock:
            if any(p.step == step for p in self.pending):
                return
            self.pending.append(_Pending(step, rows, self.thread.submit(lambda: self._play(rows, step, group))))

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        inputs = trainer.rollout_inputs
        rows, step = [x["row"] for x in inputs], trainer.state.global_step
        current = trainer.weight_sync.synced_step
        played = None
        with self.lock:
            while self.pending and self.pending[0].step < step:  # asked for, never used (the run changed course)
                self.pending.popleft().future.cancel()
                self.stats["dropped_not_asked"] += 1
            mine = self.pending.popleft() if self.pending and self.pending[0].step == step else None
        refill: dict[str, int] = {}
        if mine is not None and mine.rows == rows:
            played, refill = mine.future.result()
            self.stats["from_ahead"] += 1
            if current is not None and any(current - ep.policy_version > self.max_staleness for _, ep in played):
                self.stats["dropped_stale"] += 1  # the bound is a promise: generate again with today's weights
                played = None
        if played is None:
            played, refill = self.thread.run(lambda: self._play(rows, step, trainer.num_generations))
            self.stats["generated_on_demand"] += 1
        log_refill(trainer, refill)
        self.stats["batches"] += 1
        self.stats["episodes"] += len(played)
        self.stats["staleness_sum"] += sum(current - ep.policy_version for _, ep in played
                                           if current is not None and ep.policy_version is not None)
        staleness = [current - ep.policy_version for _, ep in played if current is not None
                     and ep.policy_version is not None]
        if staleness and hasattr(trainer, "_log_metric"):
            trainer._log_metric("async/staleness", sum(staleness) / len(staleness))
        return self.rollout.fields(played)

    def _play(self, rows: list[int], step: int,
              group: int) -> tuple[list[tuple[int, Episode]], dict[str, int]]:
        """On the rollout thread: generate, stamp the weights' version, verify (so the reward only reads verdicts)."""
        version = self.thread.pool_version
        played, refill = self.rollout.play(rows, step, group)
        for _, ep in played:
            ep.policy_version = version
        self.verify([ep for _, ep in played])
        return played, refill

    def summary(self) -> dict[str, Any]:
        s = dict(self.stats)
        s["staleness_mean"] = round(s.pop("staleness_sum") / s["episodes"], 4) if s["episodes"] else None
        return {"max_staleness": self.max_staleness, **s}
