"""Keep the rollout workers on the policy being trained: push the trainer's weights after every optimizer step.

The weights travel in memory (``RolloutPool.update_weights``: packed into one buffer, put once in Ray's object
store, loaded in place by every worker; a worker recreated after a crash reloads the latest ones). They are pushed in
the dtype the model is stored in (bf16 for SmolLM2), which is what the engines run, so a push costs half the bytes of
fp32; the packing buffer is kept between pushes and the cast happens in the packing copy.

A LoRA policy is pushed in one of two ways (``mode``):

    merged    the full weights with the adapter folded in (base + B·A, computed without touching the trainer's
              weights): any engine, the bytes of a full model per push
    adapter   only the adapter's tensors (a few MB), which the workers apply on top of the base they were started
              with (vLLM's LoRA support, peft layers in the transformers engine); the base is pushed once at the start
              when the workers may hold other weights

Pushes happen at the start of training (a resumed run's workers must get the checkpoint's weights, and a pool shared
between runs may hold another run's) and at the end of every optimizer step, before the held-out evaluation and the
next rollout read them. ``ensure`` is the check the trainer runs right before generating: a no-op when the last push
was for the current step. ``version`` is the optimizer step whose weights the workers hold: every episode records the
version that generated it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from transformers import TrainerCallback

from posttrain.rollout.packing import TensorPacker

PushMode = Literal["full", "merged", "adapter"]


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


def merged_state_dict(model: Any, with_adapter: bool = True) -> dict[str, Any]:
    """A peft LoRA model's weights as the base model names them, each LoRA layer's weight ``W + scale · B·A``
    (``with_adapter=False``: ``W``, the frozen base). New tensors where merged; the model is not changed."""
    import torch
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas = {}
    if with_adapter:
        with torch.no_grad():
            deltas = {name: module.get_delta_weight(adapter) for name, module in base.named_modules()
                      if isinstance(module, LoraLayer) for adapter in module.active_adapters}
    merged: dict[str, Any] = {}
    for key, tensor in base.state_dict(keep_vars=False).items():
        if ".lora_" in key:
            continue
        module, _, leaf = key.rpartition(".base_layer.")
        if module and leaf == "weight" and module in deltas:
            merged[f"{module}.weight"] = tensor + deltas[module].to(tensor.dtype)
        else:
            merged[key.replace(".base_layer.", ".")] = tensor
    return merged


def adapter_tensors(model: Any) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Only the adapter: its tensors as peft saves them, and its config as a dict."""
    from peft import get_peft_model_state_dict

    config = model.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"]) if isinstance(
        config.get("target_modules"), set) else config.get("target_modules")
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    return list(get_peft_model_state_dict(model).items()), config


def push_mode(model: Any, requested: Literal["auto", "merged", "adapter"]) -> PushMode:
    """What travels: full weights without LoRA; with LoRA the requested way (``auto``: the adapter)."""
    if not hasattr(model, "peft_config"):
        return "full"
    return "adapter" if requested in ("auto", "adapter") else "merged"


class WeightSync(TrainerCallback):
    def __init__(self, pool: Any, dtype: Any = None, mode: Literal["auto", "merged", "adapter"] = "auto",
                 send: Callable[[Callable[[], None], int], None] | None = None) -> None:
        """``send(job, step)`` runs a pool call where the pool is used (the rollout thread when rollouts run ahead of
        training); by default here and now. The weights are packed here and now either way."""
        self.pool, self.dtype, self.requested = pool, dtype, mode
        self.send = send or (lambda job, step: job())
        self.packer = TensorPacker()
        self.synced_step: int | None = None  # the optimizer step whose weights the workers hold
        self.mode: PushMode | None = None
        self.pushes = 0
        self.bytes_pushed = 0
        self.seconds = 0.0

    def push(self, model: Any, step: int) -> None:
        started = time.perf_counter()
        model = getattr(model, "module", model)  # DDP / accelerate wrappers
        first = self.mode is None
        self.mode = self.mode or push_mode(model, self.requested)
        if self.mode == "adapter":
            if first and not self._workers_hold_the_base(model):
                self._send_full(distinct_tensors(merged_state_dict(model, with_adapter=False)), step)
            tensors, config = adapter_tensors(model)
            packed = self.packer.pack(tensors, self.dtype)
            self.bytes_pushed += int(packed.buffer.nbytes)
            ref = self._put(packed)
            self.send(lambda: self.pool.update_adapter(ref, config), step)
        else:
            state = merged_state_dict(model) if self.mode == "merged" else model.state_dict()
            self._send_full(distinct_tensors(state), step)
        self.synced_step = step
        self.pushes += 1
        self.seconds += time.perf_counter() - started

    def _send_full(self, tensors: list[tuple[str, Any]], step: int) -> None:
        packed = self.packer.pack(tensors, self.dtype)
        self.bytes_pushed += int(packed.buffer.nbytes)
        ref = self._put(packed)
        self.send(lambda: self.pool.update_weights(ref), step)

    def _put(self, packed: Any) -> Any:
        """For a pool of Ray workers: into Ray's object store now (the packing buffer is reused by the next push, the
        object is not). An engine in this process (calibration's local engine) copies the tensors in at once."""
        if not hasattr(self.pool, "workers"):
            return packed
        import ray

        return ray.put(packed)

    def _workers_hold_the_base(self, model: Any) -> bool:
        """The workers were started from the folder the base was loaded from, and nothing was pushed since."""
        from pathlib import Path

        source = getattr(model.get_base_model().config, "_name_or_path", "")
        started = getattr(self.pool, "model_path", None)
        return bool(getattr(self.pool, "_latest_weights", None) is None and source and started
                    and Path(source).resolve() == Path(started).resolve())

    def ensure(self, model: Any, step: int) -> None:
        if self.synced_step != step:
            self.push(model, step)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.push(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.push(model, state.global_step)

    def stats(self) -> dict[str, Any]:
        return {"pushes": self.pushes, "mode": self.mode, "bytes": self.bytes_pushed,
                "seconds": round(self.seconds, 3),
                "seconds_per_push": round(self.seconds / self.pushes, 4) if self.pushes else None}
