"""Weight push to the rollout workers: posttrain's packed buffer vs a dict of tensors through Ray, in the same run.

What the Logic track does after every optimizer step: take the training model's state dict (fp32), cast it to the
workers' dtype (bf16), put it in Ray's object store and have every worker load it. posttrain packs the tensors into
one reused buffer (``TensorPacker``; workers read it from shared memory without a copy); the baseline is what a
hand-written loop does, and what posttrain did before: ``ray.put`` of a ``{name: tensor}`` dict, which Ray pickles
tensor by tensor and every worker unpickles into fresh copies. Same pool, same workers, same engine load step.

    .venv/bin/python bench/weight_push.py                          # SmolLM2-135M-Instruct, one transformers worker
    .venv/bin/python bench/weight_push.py --engine vllm --workers 2

Each push is timed from the state dict to every worker done loading; the two ways alternate, and each reports its
median over ``--repeats`` pushes (after one warm-up push each).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a known model name or an HF folder")
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()

    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from posttrain.models.loading import resolve_model
    from posttrain.rl.weight_sync import distinct_tensors
    from posttrain.rollout.packing import TensorPacker
    from posttrain.rollout.pool import RolloutPool

    path = resolve_model(args.model, key="--model")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # what the trainer holds
    dtype = torch.bfloat16
    packer = TensorPacker()
    pool = RolloutPool(path, num_workers=args.workers, engine=args.engine, resources={"num_cpus": 1})

    def packed() -> None:
        pool.update_weights(packer.pack(distinct_tensors(model.state_dict()), dtype))

    def tensor_dict() -> None:
        ref = ray.put({name: t.detach().to(dtype) for name, t in distinct_tensors(model.state_dict())})
        ray.get([worker.update_weights.remote(ref) for worker in pool.workers])

    times: dict[str, list[float]] = {"packed": [], "dict": []}
    ways: list[tuple[str, Any]] = [("packed", packed), ("dict", tensor_dict)]
    try:
        for _, push in ways:  # warm-up: first allocations, first loads
            push()
        for i in range(args.repeats):
            for name, push in ways if i % 2 == 0 else ways[::-1]:
                start = time.perf_counter()
                push()
                times[name].append(time.perf_counter() - start)
    finally:
        pool.shutdown()

    mb = sum(t.numel() * dtype.itemsize for _, t in distinct_tensors(model.state_dict())) / 1e6
    ours, base = statistics.median(times["packed"]), statistics.median(times["dict"])
    print(f"model {path}, {mb:.0f} MB per push ({dtype}), {args.workers} {args.engine} worker(s), "
          f"{args.repeats} pushes each")
    for name, label in [("packed", "posttrain (packed buffer)"), ("dict", "dict of tensors")]:
        print(f"  {label:28s} median {statistics.median(times[name]):6.3f} s   "
              f"runs {', '.join(f'{t:.2f}' for t in times[name])}")
    print(f"  speed-up (dict / packed): {base / ours:.2f}x")


if __name__ == "__main__":
    main()
