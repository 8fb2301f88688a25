"""The Ray rollout pool with real vLLM CPU workers: batches split over workers and streamed back, weight updates
broadcast to every worker, a killed worker replaced with no prompt lost or answered twice (and with the latest weights),
and the multi-turn agent loop running through the pool.

Ray runs locally inside the test process (private temp dir, shut down at the end); two vLLM workers are started once
for the whole module.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
import torch
from test_agent_loop import _check_episode, eos_bias_weights

from posttrain.errors import UserError
from posttrain.rollout.agent_loop import run_episodes
from posttrain.rollout.hf_engine import HFEngine
from posttrain.rollout.pool import RolloutConfig, RolloutPool
from posttrain.rollout.sampling import SamplingParams

MAX_LEN = 2048


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory):
    import ray

    from posttrain.rollout.workers import start_ray

    root = tmp_path_factory.getbasetemp() / "vllm"  # shared by this session's vLLM starts: a warm model-info cache
    root.mkdir(exist_ok=True)
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    with pytest.MonkeyPatch.context() as mp:  # workers inherit these from the Ray instance started here
        mp.setenv("VLLM_CACHE_ROOT", str(root / "cache"))
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
        mp.setenv("TMPDIR", str(root))
        start_ray(num_cpus=2, temp_dir=ray_dir)
        try:
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Same architecture and tokenizer as the tiny model, different random weights (built once per session)."""
    from posttrain.models.tiny import make_tiny_model

    path = tmp_path_factory.getbasetemp() / "tiny-seed1"
    return path if (path / "config.json").is_file() else make_tiny_model(path, seed=1)


@pytest.fixture(scope="module")
def pool(tiny_model_dir, ray_session):
    config = RolloutConfig(num_workers=2, resources={"num_cpus": 1},
                           engine_kwargs={"dtype": "float32", "max_model_len": MAX_LEN})
    pool = RolloutPool.from_config(tiny_model_dir, config)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_model_dir) -> HFEngine:
    return HFEngine(tiny_model_dir, dtype="float32", max_model_len=MAX_LEN)


@pytest.fixture(scope="module")
def prompts(reference) -> list[list[int]]:
    tok = reference.tokenizer
    return [tok.apply_chat_template([{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}],
                                    add_generation_prompt=True, tokenize=True, return_dict=False) for i in range(8)]


def _served(pool) -> list[int]:
    import ray

    return [info["prompts"] for info in ray.get([w.info.remote() for w in pool.workers])]


def _same(a, b) -> bool:
    return all(x.token_ids == y.token_ids and x.logprobs == pytest.approx(y.logprobs, abs=1e-3)
               for xs, ys in zip(a, b, strict=True) for x, y in zip(xs, ys, strict=True))


def test_batches_are_split_over_workers_and_streamed(pool, reference, prompts) -> None:
    greedy = SamplingParams(temperature=0, max_tokens=12)
    before = _served(pool)
    out = pool.generate(prompts, greedy)
    assert [b - a for a, b in zip(before, _served(pool), strict=True)] == [4, 4]  # an equal share each
    assert _same(out, reference.generate(prompts, greedy))  # what vLLM returns through Ray is the real thing

    streamed = list(pool.stream(prompts, greedy))
    assert sorted(i for i, _ in streamed) == list(range(8))
    assert _same([s for _, s in sorted(streamed, key=lambda x: x[0])], out)

    # one seed for the batch: prompt i gets seed + i, so results do not depend on how prompts are split
    sampled = SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=3)
    whole = pool.generate(prompts, sampled)
    pool.chunk_size = 1
    try:
        assert _same(pool.generate(prompts, sampled), whole)
    finally:
        pool.chunk_size = None
    assert all(len(s) == 2 for s in whole) and whole[0][0].token_ids != whole[0][1].token_ids


def test_weight_updates_reach_every_worker(pool, reference, prompts, tiny_model_dir, second_model_dir) -> None:
    greedy = SamplingParams(temperature=0, max_tokens=12)
    pool.update_weights_from_path(second_model_dir)
    reference.update_weights_from_path(second_model_dir)
    after_path = pool.generate(prompts, greedy)  # 4 prompts per worker: both workers must have the new weights
    assert _same(after_path, reference.generate(prompts, greedy))

    from transformers import AutoModelForCausalLM

    first = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).state_dict()
    pool.update_weights(first)
    reference.update_weights(first)
    after_tensors = pool.generate(prompts, greedy)
    assert _same(after_tensors, reference.generate(prompts, greedy)) and not _same(after_tensors, after_path)

    # what the RL trainer pushes every step: the state dict packed and cast to bf16 in one reused buffer
    from posttrain.rl.weight_sync import distinct_tensors
    from posttrain.rollout.packing import TensorPacker

    second = AutoModelForCausalLM.from_pretrained(str(second_model_dir), dtype=torch.float32).state_dict()
    packed = TensorPacker().pack(distinct_tensors(second), torch.bfloat16)
    pool.update_weights(packed)
    reference.update_weights(packed)
    after_packed = pool.generate(prompts, greedy)
    assert _same(after_packed, reference.generate(prompts, greedy)) and not _same(after_packed, after_tensors)

    with pytest.raises(UserError, match="checkpoint folder not found"):
        pool.update_weights_from_path(second_model_dir / "missing")


def test_killed_worker_is_replaced_and_its_prompts_requeued(pool, prompts, second_model_dir) -> None:
    import ray

    pool.update_weights_from_path(second_model_dir)  # the replacement must come back with these weights
    params = SamplingParams(temperature=1.0, max_tokens=32, n=2, seed=21)
    many = prompts + prompts[:4]
    pool.chunk_size = 1  # many small calls, so the kill lands mid-batch
    try:
        expected = pool.generate(many, params)
        restarts = pool.restarts
        seen: dict[int, int] = {}
        results = {}
        for i, samples in pool.stream(many, params):
            if not seen:
                ray.kill(pool.workers[0], no_restart=True)  # mid-batch: worker 0 still has queued prompts
            seen[i] = seen.get(i, 0) + 1
            results[i] = samples
    finally:
        pool.chunk_size = None
    assert pool.restarts == restarts + 1
    assert seen == {i: 1 for i in range(len(many))}  # every prompt exactly once
    assert all(len(results[i]) == 2 for i in results)  # with its n samples
    # Same seeds, same weights: the re-queued prompts came out exactly as before, including those the replacement
    # worker generated (it served some), so it did load the latest weights before taking work.
    assert _same([results[i] for i in range(len(many))], expected)
    assert _served(pool)[0] >= 1


def test_agent_loop_runs_through_the_pool(pool, reference, tiny_model_dir) -> None:
    """Multi-turn episodes through Ray + vLLM, with the end-of-turn token made likely (tensor update broadcast)."""
    eos = reference.tokenizer.convert_tokens_to_ids("<|im_end|>")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    pool.update_weights(eos_bias_weights(model, eos, margin=0.9))
    from posttrain.environment import make_env

    tasks = list(make_env("tool_calling").generate_tasks(3, seed=1))
    episodes = run_episodes(pool, "tool_calling", tasks, SamplingParams(max_tokens=12, n=2, seed=4), max_turns=3)
    assert len(episodes) == 6
    for ep in episodes:
        assert ep.end_reason in {"done", "max_turns"} and ep.error is None
        _check_episode(ep, reference.tokenizer)
    assert "stop" in {r for ep in episodes for r in ep.finish_reasons}
