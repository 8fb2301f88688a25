"""Rollout throughput: the Ray rollout layer vs bare vLLM ``LLM.generate`` vs transformers ``generate``.

Same model, same prompts, same per-prompt seeds (so the engines sample the same number of tokens), measured in one run,
one after another so they do not share the CPU. Start-up is excluded; each engine gets one warm-up call first, and each
measurement is the best of ``--repeats`` runs (this box is shared; the best run is the least disturbed).

    .venv/bin/python bench/rollout_throughput.py                                  # the tiny model
    .venv/bin/python bench/rollout_throughput.py --model smollm2-135m-instruct    # the real one (bf16)

Bare vLLM runs in its usual multi-process layout with both cores (OMP_NUM_THREADS=2, VLLM_CPU_OMP_THREADS_BIND=0-1);
the rollout pool runs one worker holding both CPUs (``--workers``/``--num-cpus`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?", "Explain photosynthesis in one paragraph.", "Write a haiku about the sea.",
    "What is 17 times 23?", "Give three tips for learning a language.", "Why is the sky blue?",
    "Write a Python function that reverses a string.", "Summarize the plot of Hamlet.",
]


def build_prompts(tokenizer, n: int) -> list[list[int]]:
    chats = [[{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (request {i})"}] for i in range(n)]
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)
            for c in chats]


def best_of(repeats: int, run) -> tuple[float, int]:
    """(best tokens/s, tokens) over ``repeats`` runs of ``run() -> tokens``."""
    best, tokens = 0.0, 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = run()
        best = max(best, tokens / (time.perf_counter() - start))
    return best, tokens


def bench_bare_vllm(model: Path, prompts, max_tokens: int, seed: int, dtype: str, repeats: int) -> tuple[float, int]:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model), dtype=dtype, enforce_eager=True, kv_cache_memory_bytes=2 << 30, seed=0,
              max_model_len=2048, disable_log_stats=True)
    params = [SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=seed + i, logprobs=0)
              for i in range(len(prompts))]
    inputs = [{"prompt_token_ids": p} for p in prompts]

    def run() -> int:
        outs = llm.generate(inputs, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs)

    llm.generate(inputs[:2], params[:2], use_tqdm=False)  # warm-up
    result = best_of(repeats, run)
    llm.llm_engine.engine_core.shutdown()  # free the cores and memory before the next engine
    return result


def bench_pool(model: Path, prompts, max_tokens: int, seed: int, dtype: str, repeats: int, workers: int,
               num_cpus: float) -> tuple[float, int]:
    import ray

    from posttrain.rollout.pool import RolloutPool
    from posttrain.rollout.sampling import SamplingParams
    from posttrain.rollout.workers import start_ray

    start_ray(num_cpus=max(2, int(workers * num_cpus)))
    pool = RolloutPool(model, num_workers=workers, engine="vllm", resources={"num_cpus": num_cpus},
                       engine_kwargs={"dtype": dtype, "max_model_len": 2048, "kv_cache_gib": 2})
    params = SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=seed)  # prompt i gets seed + i

    def run() -> int:
        return sum(len(s.token_ids) for samples in pool.generate(prompts, params) for s in samples)

    pool.generate(prompts[:2], params)  # warm-up
    result = best_of(repeats, run)
    pool.shutdown()
    ray.shutdown()
    return result


def bench_hf(model: Path, prompts, max_tokens: int, seed: int, dtype: str, repeats: int) -> tuple[float, int]:
    from posttrain.rollout.hf_engine import HFEngine
    from posttrain.rollout.sampling import SamplingParams

    engine = HFEngine(model, dtype=dtype, num_threads=2, batch_size=len(prompts))
    params = SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=seed)

    def run() -> int:
        return sum(len(s.token_ids) for samples in engine.generate(prompts, params) for s in samples)

    engine.generate(prompts[:2], params)  # warm-up
    return best_of(repeats, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="'tiny' (built here), a model folder or a known model name")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--num-cpus", type=float, default=2.0, help="CPUs each rollout worker holds")
    parser.add_argument("--skip-hf", action="store_true", help="skip transformers generate (slow on big batches)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    os.environ.setdefault("VLLM_CACHE_ROOT", str(work / "vllm-cache"))
    if args.model == "tiny":
        from posttrain.models.tiny import make_tiny_model

        model, dtype = make_tiny_model(work / "tiny"), "float32"
    else:
        from posttrain.models.loading import resolve_model

        model, dtype = resolve_model(args.model, key="--model"), "bfloat16"
    prompts = build_prompts(AutoTokenizer.from_pretrained(model), args.prompts)
    common = (model, prompts, args.max_tokens, 1234, dtype, args.repeats)

    print(f"model={args.model} ({dtype}) prompts={args.prompts} max_tokens={args.max_tokens} best of {args.repeats}",
          flush=True)
    runs = {"bare vLLM LLM.generate": lambda: bench_bare_vllm(*common),
            f"Ray rollout pool ({args.workers} worker(s))": lambda: bench_pool(*common, args.workers, args.num_cpus)}
    if not args.skip_hf:
        runs["transformers generate"] = lambda: bench_hf(*common)
    results = {}
    for name, run in runs.items():  # printed as they come: a long run that dies half-way still reports
        tps, tokens = results[name] = run()
        print(f"  {name:<34} {tps:8.1f} tok/s  ({tokens} tokens)", flush=True)
    names = list(results)
    pool_tps, bare_tps = results[names[1]][0], results[names[0]][0]
    ratios = {"pool / bare vLLM": pool_tps / bare_tps}
    if not args.skip_hf:
        ratios["pool / transformers"] = pool_tps / results["transformers generate"][0]
    for name, value in ratios.items():
        print(f"  {name:<34} {value:8.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "prompts": args.prompts, "max_tokens": args.max_tokens,
                                        "tokens_per_s": {k: v[0] for k, v in results.items()},
                                        "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
