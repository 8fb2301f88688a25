"""Generate batch i+1 while batch i is verified: the caller's thread generates, one background thread finishes
(verifies and writes) batches, and a queue of ``depth`` batches between them bounds memory to ``depth + 2`` batches
(one being generated, ``depth`` waiting, one being finished).

A thread is enough for the second stage: verification itself runs in the verifier pool's processes, so the thread
only waits on pipes. If finishing fails, generation stops at the next batch and the error is raised in the caller;
if generation fails, the batches already generated are still finished (their shards are kept for a resume).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

B = TypeVar("B")

_DONE = object()


@dataclass
class OverlapTimes:
    """Seconds spent in each stage and end to end (the stages overlap, so wall < generate + finish when it works)."""

    generate_s: float = 0.0
    finish_s: float = 0.0
    wall_s: float = 0.0
    waits_s: float = 0.0  # time generation waited for the queue (the finishing stage was the bottleneck)
    batches: int = 0


def run_overlapped(batches: Iterable[B], generate: Callable[[B], Any], finish: Callable[[B, Any], None],
                   depth: int = 1) -> OverlapTimes:
    """``finish(batch, generate(batch))`` for every batch, the two stages running concurrently."""
    times = OverlapTimes()
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []

    def finisher() -> None:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            batch, result = item
            started = time.perf_counter()
            try:
                finish(batch, result)
            except BaseException as e:  # handed to the caller's thread, which raises it
                failure.append(e)
                return
            times.finish_s += time.perf_counter() - started

    def put(item: Any) -> bool:
        """Hand over, unless the finisher has died (then nothing would ever take the item)."""
        while thread.is_alive():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    thread = threading.Thread(target=finisher, name="posttrain-finish", daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        for batch in batches:
            if failure:
                break
            t0 = time.perf_counter()
            result = generate(batch)
            t1 = time.perf_counter()
            if not put((batch, result)):
                break
            t2 = time.perf_counter()
            times.generate_s += t1 - t0
            times.waits_s += t2 - t1
            times.batches += 1
    finally:
        put(_DONE)
        thread.join()
        times.wall_s = time.perf_counter() - start
    if failure:
        raise failure[0]
    return times
