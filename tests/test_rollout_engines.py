"""The two engines on the tiny model: same outputs and log-probs, same sampling semantics, and weights replaced in place
(from a checkpoint folder, from tensors, partially) with outputs that then match transformers on the new weights.

vLLM runs for real (CPU build), one engine for the whole module, inside a rollout-worker Ray actor as in production
(its in-process engine core changes process-wide state, so it stays out of the test process).
"""

from __future__ import annotations

import math
import shutil
import tempfile

import pytest
import torch
from test_agent_loop import eos_bias_weights  # one copy of the helper (tests/ is on sys.path under pytest)

from posttrain.errors import UserError
from posttrain.rollout.engines import make_engine
from posttrain.rollout.hf_engine import HFEngine
from posttrain.rollout.sampling import SamplingParams

MAX_LEN = 512


@pytest.fixture(scope="module")
def vllm_env(tmp_path_factory: pytest.TempPathFactory):
    """vLLM's caches and IPC files in this session's temp dir (set for this module only)."""
    root = tmp_path_factory.getbasetemp() / "vllm"  # shared by this session's vLLM starts: a warm model-info cache
    root.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_CACHE_ROOT", str(root / "cache"))
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
        mp.setenv("TMPDIR", str(root))
        yield root


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Same architecture and tokenizer as the tiny model, different random weights (built once per session)."""
    from posttrain.models.tiny import make_tiny_model

    path = tmp_path_factory.getbasetemp() / "tiny-seed1"
    return path if (path / "config.json").is_file() else make_tiny_model(path, seed=1)


class _Remote:
    """Calls a Ray actor's methods as if it were local."""

    def __init__(self, actor) -> None:
        self.actor = actor

    def __getattr__(self, name: str):
        import ray

        return lambda *args, **kwargs: ray.get(getattr(self.actor, name).remote(*args, **kwargs))


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir, vllm_env):
    import ray

    from posttrain.rollout.workers import RolloutWorker, start_ray

    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    start_ray(num_cpus=2, temp_dir=ray_dir)
    try:
        actor = ray.remote(RolloutWorker).options(num_cpus=2).remote(
            str(tiny_model_dir), "vllm", {"dtype": "float32", "max_model_len": MAX_LEN, "num_threads": 2})
        yield _Remote(actor)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir) -> HFEngine:
    return HFEngine(tiny_model_dir, dtype="float32", max_model_len=MAX_LEN)


@pytest.fixture(scope="module")
def prompts(hf_engine) -> list[list[int]]:
    tok = hf_engine.tokenizer
    chats = [[{"role": "user", "content": "What is 2 + 3?"}],
             [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
             [{"role": "user", "content": "Write a function that returns the sum of a list."}]]
    return [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False) for c in chats]


def _reference_greedy(model_dir, prompts, max_tokens=16) -> list[tuple[list[int], list[float]]]:
    """Plain transformers greedy decoding with each token's log-prob, independent of both engines."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_tokens,
                                 eos_token_id=model.generation_config.eos_token_id, output_scores=True,
                                 return_dict_in_generate=True)
            tokens = out.sequences[0, len(ids):].tolist()
            logprobs = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.scores, tokens, strict=True)]
            outs.append((tokens, logprobs))
    return outs


def _matches(samples, reference) -> bool:
    """Same greedy tokens and the same log-probs (to float tolerance) as the reference."""
    for s, (tokens, logprobs) in zip(samples, reference, strict=True):
        if s[0].token_ids != tokens or s[0].logprobs != pytest.approx(logprobs, abs=1e-3):
            return False
    return True


def _processed_logprobs(model, prompt: list[int], tokens: list[int], temperature: float) -> list[float]:
    """log softmax(logits / T) of each sampled token, by a teacher-forced forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(tokens).unsqueeze(-1)).squeeze(-1).tolist()


def test_greedy_outputs_and_logprobs_match_between_engines(vllm_engine, hf_engine, prompts) -> None:
    greedy = SamplingParams(temperature=0, max_tokens=16)
    v, h = vllm_engine.generate(prompts, greedy), hf_engine.generate(prompts, greedy)
    assert [s[0].token_ids for s in v] == [s[0].token_ids for s in h]
    for sv, sh in zip(v, h, strict=True):
        assert sv[0].finish_reason == sh[0].finish_reason == "length"
        assert len(sv[0].token_ids) == 16
        assert sv[0].text == sh[0].text
        assert sv[0].logprobs == pytest.approx(sh[0].logprobs, abs=1e-3)
        assert all(lp <= 0 for lp in sv[0].logprobs)


def test_sampled_logprobs_are_those_of_the_processed_distribution(vllm_engine, hf_engine, prompts) -> None:
    model = hf_engine.model
    params = SamplingParams(temperature=0.7, max_tokens=12, n=2, seed=3)
    for engine in (vllm_engine, hf_engine):
        out = engine.generate(prompts[:2], params)
        for prompt, samples in zip(prompts[:2], out, strict=True):
            assert len(samples) == 2
            for s in samples:
                assert s.logprobs == pytest.approx(_processed_logprobs(model, prompt, s.token_ids, 0.7), abs=2e-3)
    # with top_k=1 only the argmax survives: greedy tokens, each drawn with probability 1
    top1 = SamplingParams(temperature=1.0, top_k=1, max_tokens=8)
    greedy = SamplingParams(temperature=0, max_tokens=8)
    for engine in (vllm_engine, hf_engine):
        a, b = engine.generate(prompts, top1), engine.generate(prompts, greedy)
        assert [s[0].token_ids for s in a] == [s[0].token_ids for s in b]
        assert all(lp == pytest.approx(0.0, abs=1e-5) for s in a for lp in s[0].logprobs)


def _fresh_substring(text: str, start: int = 3) -> str:
    """A 2-character substring whose first occurrence in ``text`` is at or after ``start``."""
    for i in range(start, len(text) - 1):
        if text.find(text[i:i + 2]) == i:
            return text[i:i + 2]
    raise AssertionError(f"no fresh substring in {text!r}")


def test_stop_strings_and_lengths(vllm_engine, hf_engine, prompts) -> None:
    sampled = SamplingParams(temperature=1.0, max_tokens=24, seed=11)
    for engine in (vllm_engine, hf_engine):
        full = engine.generate(prompts[:1], sampled)[0][0]
        # a stop string from the middle of this sample: the same seeded sample stops on the token completing it
        stop = _fresh_substring(full.text)
        s = engine.generate(prompts[:1], sampled.with_updates(stop=[stop]))[0][0]
        assert s.finish_reason == "stop"
        assert s.text.endswith(stop) and full.text.startswith(s.text)
        assert s.token_ids == full.token_ids[:len(s.token_ids)] and len(s.token_ids) < 24
        assert len(s.logprobs) == len(s.token_ids)
    # max_tokens, and a prompt near the context length is capped there (both engines say "length")
    long_prompt = (prompts[0] * MAX_LEN)[:MAX_LEN - 3]
    for engine in (vllm_engine, hf_engine):
        out = engine.generate([prompts[1], long_prompt], SamplingParams(temperature=0, max_tokens=5))
        assert [len(o[0].token_ids) for o in out] == [5, 3]
        assert [o[0].finish_reason for o in out] == ["length", "length"]
        with pytest.raises(ValueError, match="max_model_len"):
            engine.generate([prompts[0] * MAX_LEN], SamplingParams(max_tokens=5))


def test_seeds_make_vllm_samples_repeat(vllm_engine, prompts) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=10, n=3, seed=7)
    a, b = vllm_engine.generate(prompts, params), vllm_engine.generate(prompts, params)
    assert [[s.token_ids for s in x] for x in a] == [[s.token_ids for s in x] for x in b]
    c = vllm_engine.generate(prompts, params.with_updates(seed=8))
    assert [[s.token_ids for s in x] for x in a] != [[s.token_ids for s in x] for x in c]
    # per-prompt params: one list entry per prompt
    mixed = vllm_engine.generate(prompts[:2], [SamplingParams(temperature=0, max_tokens=3),
                                               SamplingParams(temperature=0.5, max_tokens=6, n=2)])
    assert [len(s) for s in mixed] == [1, 2] and [len(s[0].token_ids) for s in mixed] == [3, 6]


def test_end_of_sequence_token_is_kept_and_ends_the_sample(vllm_engine, hf_engine, prompts) -> None:
    tok = hf_engine.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    original = {k: v.detach().clone() for k, v in hf_engine.model.state_dict().items()}
    updates = eos_bias_weights(hf_engine.model, eos, margin=2.0)  # the end token is the argmax everywhere
    greedy = SamplingParams(temperature=0, max_tokens=8)
    try:
        for engine in (vllm_engine, hf_engine):
            engine.update_weights(updates)
            for samples in engine.generate(prompts, greedy):
                s = samples[0]
                assert s.token_ids == [eos] and s.finish_reason == "stop" and s.text == ""
                assert len(s.logprobs) == 1 and s.logprobs[0] > -0.01
    finally:
        for engine in (vllm_engine, hf_engine):
            engine.update_weights({k: original[k] for k in updates})


def test_weight_updates_without_restart(vllm_engine, hf_engine, prompts, tiny_model_dir, second_model_dir) -> None:
    greedy = SamplingParams(temperature=0, max_tokens=16)
    ref_first, ref_second = _reference_greedy(tiny_model_dir, prompts), _reference_greedy(second_model_dir, prompts)
    flat = [[x for _, lps in ref for x in lps] for ref in (ref_first, ref_second)]
    assert flat[0] != pytest.approx(flat[1], abs=1e-2)  # the two models really disagree
    assert _matches(vllm_engine.generate(prompts, greedy), ref_first)

    # 1. from a checkpoint folder: outputs follow the new weights (the prefix cache holds no stale KV)
    for engine in (vllm_engine, hf_engine):
        engine.update_weights_from_path(second_model_dir)
        out = engine.generate(prompts, greedy)
        assert _matches(out, ref_second) and not _matches(out, ref_first)

    # 2. from in-memory tensors: a training model's full state_dict (tied lm_head included)
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    for engine in (vllm_engine, hf_engine):
        engine.update_weights(trained.state_dict())
        assert _matches(engine.generate(prompts, greedy), ref_first)

    # 2b. what the RL trainer pushes: the state dict without the tied lm_head's second name (the embedding is the
    #     head), packed into one buffer as it reaches a worker; both engines must re-tie the head, or it stays the
    #     old model's
    from posttrain.rl.weight_sync import distinct_tensors
    from posttrain.rollout.packing import pack_tensors

    second = AutoModelForCausalLM.from_pretrained(str(second_model_dir), dtype=torch.float32)
    pushed = pack_tensors(distinct_tensors(second.state_dict()))
    names = [spec.name for spec in pushed.specs]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    for engine in (vllm_engine, hf_engine):
        engine.update_weights(pushed)
        assert _matches(engine.generate(prompts, greedy), ref_second)
        engine.update_weights(trained.state_dict())

    # 3. a partial update (one tensor): a scaled final norm sharpens the distribution; log-probs move, and both
    #    engines agree on the new values
    before = vllm_engine.generate(prompts[:1], greedy)[0][0]
    norm = trained.model.norm.weight.detach() * 3.0
    vllm_engine.update_weights({"model.norm.weight": norm})
    hf_engine.update_weights({"model.norm.weight": norm})
    v, h = vllm_engine.generate(prompts[:1], greedy)[0][0], hf_engine.generate(prompts[:1], greedy)[0][0]
    assert v.token_ids == h.token_ids and v.logprobs == pytest.approx(h.logprobs, abs=1e-3)
    assert v.logprobs[0] > before.logprobs[0] + 0.1  # sharper
    assert math.isfinite(sum(v.logprobs))
    vllm_engine.update_weights({"model.norm.weight": trained.model.norm.weight.detach()})
    hf_engine.update_weights({"model.norm.weight": trained.model.norm.weight.detach()})


def test_bad_inputs_are_clear_errors(hf_engine, tmp_path) -> None:
    with pytest.raises(UserError, match="checkpoint folder not found"):
        hf_engine.update_weights_from_path(tmp_path / "missing")
    with pytest.raises(UserError, match="no \\*.safetensors"):
        hf_engine.update_weights_from_path(tmp_path)
    with pytest.raises(ValueError, match="no tensor named model.nope"):
        hf_engine.update_weights({"model.nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        hf_engine.update_weights({"model.norm.weight": torch.zeros(3)})
    with pytest.raises(UserError, match="expected 'vllm' or 'hf'"):
        make_engine("tgi", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        hf_engine.generate([[]], SamplingParams())
