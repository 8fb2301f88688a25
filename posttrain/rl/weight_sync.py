"""Keep the rollout workers on the policy being trained: push the trainer's weights after every optimizer step.

The weights travel in memory (``RolloutPool.update_weights``: packed into one buffer, put once in Ray's object
store, loaded in place by every worker; a worker recreated after a crash reloads the latest ones). They are pushed in
the dtype the model is stored in (bf16 for SmolLM2), which is what the engines run, so a push costs half the bytes of
fp32; the packing buffer is kept between pushes and the cast happens in the packing copy.

Pushes happen at the start of training (a resumed run's workers must get the checkpoint's weights, and a pool shared
between runs may hold another run's) and at the end of every optimizer step, before the held-out evaluation and the
next rollout read them. ``ensure`` is the check the trainer runs right before generating: a no-op when the last push
was for the current step.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from posttrain.rollout.packing import TensorPacker


def distinct_tensors(state_dict: dict[str, Any]) -> list[tuple[str, Any]]:
    """The state dict without a second name for the same storage: a tied ``lm_head`` is the embedding (a fifth of
    SmolLM2's bytes), and both engines re-tie it from the embedding when it is loaded."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    found = []
    for name, tensor in state_dict.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            found.append((name, tensor))
    return found


class WeightSync(TrainerCallback):
    def __init__(self, pool: Any, dtype: Any = None) -> None:
        self.pool, self.dtype = pool, dtype
        self.packer = TensorPacker()
        self.synced_step: int | None = None  # the optimizer step whose weights the workers hold
        self.pushes = 0
        self.seconds = 0.0

    def push(self, model: Any, step: int) -> None:
        started = time.perf_counter()
        model = getattr(model, "module", model)  # DDP / accelerate wrappers
        self.pool.update_weights(self.packer.pack(distinct_tensors(model.state_dict()), self.dtype))
        self.synced_step = step
        self.pushes += 1
        self.seconds += time.perf_counter() - started

    def ensure(self, model: Any, step: int) -> None:
        if self.synced_step != step:
            self.push(model, step)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.push(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.push(model, state.global_step)

    def stats(self) -> dict[str, Any]:
        return {"pushes": self.pushes, "seconds": round(self.seconds, 3),
                "seconds_per_push": round(self.seconds / self.pushes, 4) if self.pushes else None}
