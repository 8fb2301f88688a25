"""The multi-turn agent loop on the tiny model (transformers engine; the Ray + vLLM path is in test_rollout_pool.py).

The model is the tiny random model with its end-of-turn token made likely (so turns end both ways: on <|im_end|> and
on max_tokens). The environment is a deterministic counter defined below (this file is also its plugin file) that
answers with tool results and user turns, ends after ``target`` turns, and can be told to crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from posttrain.environment import Environment, StepResult, Task, Trajectory, VerifyResult
from posttrain.errors import UserError
from posttrain.rl.rollout_func import trl_fields
from posttrain.rollout.agent_loop import Episode, run_episodes
from posttrain.rollout.sampling import SamplingParams
from posttrain.tool_calls import parse_tool_calls

THIS_FILE = str(Path(__file__).resolve())  # the counter environment's plugin path
INCREMENT = {"type": "function", "function": {"name": "increment", "description": "Add one to the counter.",
                                              "parameters": {"type": "object", "properties": {}}}}


class CounterEnv(Environment):
    """Each assistant turn adds one; odd counts answer as a tool result, even counts as a user turn; done at target."""

    name = "counter"

    def reset(self, task: Task) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if "target" not in task:
            raise UserError(f"counter task {task.get('id')}: missing 'target'")
        self.task, self.count = task, 0
        return [dict(m) for m in task["messages"]], [INCREMENT]

    def step(self, assistant_message: dict[str, Any]) -> StepResult:
        self.count += 1
        if self.task.get("crash_at") == self.count:
            raise RuntimeError("counter exploded")
        calls = parse_tool_calls(assistant_message["content"]).calls
        done = self.count >= self.task["target"]
        if done:
            obs = [{"role": "user", "content": "Thanks, that is all."}] if self.task.get("final_note") else []
        elif self.count % 2:
            obs = [{"role": "tool", "content": json.dumps({"count": self.count, "calls": len(calls)})}]
        else:
            obs = [{"role": "user", "content": f"The count is {self.count}. Once more."}]
        return StepResult(observations=obs, reward=float(done), done=done, info={"count": self.count})

    def verify(self, trajectory: Trajectory) -> VerifyResult:
        turns = len(trajectory.assistant_turns)
        return VerifyResult(passed=turns == trajectory.task["target"], score=float(turns == trajectory.task["target"]))

    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        for i in range(n):
            yield {"id": f"counter-{seed}-{i}", "env": "counter", "target": 1 + (seed + i) % 3,
                   "messages": [{"role": "user", "content": "Count with me."}], "tools": [INCREMENT]}


class Recording:
    """A generator that remembers every call (prompts, params, outputs) made to the wrapped engine."""

    def __init__(self, engine) -> None:
        self.engine, self.tokenizer, self.max_model_len = engine, engine.tokenizer, engine.max_model_len
        self.calls: list[tuple[list[list[int]], list[SamplingParams], list]] = []

    def generate(self, prompts, sampling):
        out = self.engine.generate(prompts, sampling)
        self.calls.append(([list(p) for p in prompts], list(sampling), out))
        return out


def eos_bias_weights(model, eos_id: int, margin: float) -> dict[str, torch.Tensor]:
    """Tensors that raise ``eos_id``'s logit by a context-independent amount: every token embedding gets a constant
    feature (residual dimension 0 = 1) that no layer writes to, and the tied output row of ``eos_id`` reads it with
    weight ``1 + margin`` while all others read it with weight 1 (see test_rollout_engines.py)."""
    emb = model.model.embed_tokens.weight.detach().clone()
    emb[:, 0] = 1.0
    emb[eos_id] = 0.0
    emb[eos_id, 0] = 1.0 + margin
    updates = {"model.embed_tokens.weight": emb}
    for i, layer in enumerate(model.model.layers):
        for name, weight in (("self_attn.o_proj", layer.self_attn.o_proj.weight),
                             ("mlp.down_proj", layer.mlp.down_proj.weight)):
            w = weight.detach().clone()
            w[0] = 0.0
            updates[f"model.layers.{i}.{name}.weight"] = w
    return updates


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from posttrain.rollout.hf_engine import HFEngine

    engine = HFEngine(tiny_model_dir, dtype="float32", max_model_len=2048)
    eos = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    engine.update_weights(eos_bias_weights(engine.model, eos, margin=0.9))  # ~20% chance to end at each token
    return engine


def _tasks(targets: list[int], **extra: Any) -> list[Task]:
    return [{"id": f"t{i}", "env": "counter", "target": t, **extra,
             "messages": [{"role": "system", "content": "You count."}, {"role": "user", "content": f"Count to {t}."}]}
            for i, t in enumerate(targets)]


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of 1s in the mask."""
    runs, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _check_episode(ep: Episode, tok) -> None:
    """Token ids, mask and log-probs line up with the messages exactly."""
    assert len(ep.token_ids) == len(ep.mask) == len(ep.logprobs)
    rendered = tok.apply_chat_template(ep.messages, tools=ep.tools, tokenize=False)
    assert ep.exact and tok.decode(ep.token_ids, skip_special_tokens=False) == rendered
    prompt_msgs = ep.messages[:next(i for i, m in enumerate(ep.messages) if m["role"] == "assistant")]
    assert tok.decode(ep.token_ids[:ep.prompt_len]) == tok.apply_chat_template(
        prompt_msgs, tools=ep.tools, tokenize=False, add_generation_prompt=True)
    runs = _runs(ep.mask)
    assistants = [m["content"] for m in ep.messages if m["role"] == "assistant"]
    assert len(runs) == len(assistants) == ep.num_turns
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for (start, end), content, reason in zip(runs, assistants, ep.finish_reasons, strict=True):
        last = ep.token_ids[end - 1]
        if reason == "stop":  # no stop strings here: a turn stops on an end token, which stays the model's
            assert last in tok.all_special_ids
        text = tok.decode(ep.token_ids[start:end], skip_special_tokens=False)
        assert text == (content + "<|im_end|>" if last == im_end else content)
        assert all(lp < 0 for lp in ep.logprobs[start:end])
    assert all(lp == 0.0 for lp, m in zip(ep.logprobs, ep.mask, strict=True) if m == 0)


def test_episodes_record_exact_tokens_masks_and_logprobs(engine) -> None:
    gen = Recording(engine)
    tasks = _tasks([1, 2, 3, 3], final_note=True)
    params = SamplingParams(temperature=1.0, max_tokens=10, n=3, seed=5)
    episodes = run_episodes(gen, THIS_FILE, tasks, params, max_turns=5)
    assert [(ep.task["id"], ep.sample_index) for ep in episodes] == [(t["id"], j) for t in tasks for j in range(3)]
    for ep in episodes:
        _check_episode(ep, engine.tokenizer)
        assert ep.end_reason == "done" and ep.num_turns == ep.task["target"] and ep.rewards[-1] == 1.0
        assert ep.messages[-1] == {"role": "user", "content": "Thanks, that is all."}
        roles = [m["role"] for m in ep.messages]
        if ep.task["target"] >= 2:
            assert "tool" in roles  # the first observation is a tool result
    reasons = [r for ep in episodes for r in ep.finish_reasons]
    assert "stop" in reasons and "length" in reasons  # both ways of ending a turn are covered

    # Every active episode's next turn went into one generate call: 12, then 9 (targets 2-3), then 6 (target 3).
    assert [len(prompts) for prompts, _, _ in gen.calls] == [12, 9, 6]
    # The model-written ids and log-probs are exactly what the engine returned, turn by turn.
    returned = [(p, samples[0]) for prompts, _, outs in gen.calls for p, samples in zip(prompts, outs, strict=True)]
    for ep in episodes:
        for start, end in _runs(ep.mask):
            assert any(p == ep.token_ids[:start] and s.token_ids == ep.token_ids[start:end]
                       and s.logprobs == ep.logprobs[start:end] for p, s in returned)
    # Different episodes of one task were sampled with different seeds.
    first_turn_seeds = [p.seed for p in gen.calls[0][1]]
    assert len(set(first_turn_seeds)) == len(first_turn_seeds)


def test_turn_limit_and_token_budget(engine) -> None:
    tok = engine.tokenizer
    params = SamplingParams(temperature=1.0, max_tokens=10, seed=1)
    [capped] = run_episodes(engine, THIS_FILE, _tasks([6]), params, max_turns=2)
    assert capped.end_reason == "max_turns" and capped.num_turns == 2
    _check_episode(capped, tok)

    prompt_len = len(tok.apply_chat_template(_tasks([6])[0]["messages"], tools=[INCREMENT], tokenize=True,
                                             add_generation_prompt=True, return_dict=False))
    budget = prompt_len + 25
    episodes = run_episodes(engine, THIS_FILE, _tasks([6, 6]), params.with_updates(n=2), max_turns=10,
                            max_episode_tokens=budget)
    for ep in episodes:
        assert ep.end_reason == "token_budget" and 1 <= ep.num_turns < 6
        assert max(end for _, end in _runs(ep.mask)) <= budget  # model tokens never pass the budget
        _check_episode(ep, tok)  # no dangling generation prompt: ids render the messages exactly

    # A prompt that does not fit at all: no model turn, the episode says why.
    long_task = _tasks([1])[0]
    long_task["messages"][1]["content"] = "count " * 400
    [ep] = run_episodes(engine, THIS_FILE, [long_task], params, max_episode_tokens=100)
    assert ep.end_reason == "token_budget" and ep.num_turns == 0 and ep.token_ids == ep.token_ids[:ep.prompt_len]


def test_environment_failures_are_recorded_not_raised(engine) -> None:
    tasks = [*_tasks([3, 3]), {"id": "no-target", "messages": [{"role": "user", "content": "hi"}]}]
    tasks[0]["crash_at"] = 2
    episodes = run_episodes(engine, THIS_FILE, tasks, SamplingParams(max_tokens=6, seed=2), max_turns=5)
    crashed, fine, bad = episodes
    assert crashed.end_reason == "env_error" and "counter exploded" in crashed.error and crashed.num_turns == 2
    _check_episode(crashed, engine.tokenizer)
    assert fine.end_reason == "done" and fine.error is None
    assert bad.end_reason == "env_error" and "missing 'target'" in bad.error and bad.token_ids == []


def test_seeded_runs_repeat_and_trl_fields_line_up(engine) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=9)
    a = run_episodes(engine, THIS_FILE, _tasks([2, 1]), params)
    b = run_episodes(engine, THIS_FILE, _tasks([2, 1]), params)
    assert [ep.token_ids for ep in a] == [ep.token_ids for ep in b]
    # per-task sampling: one params set per task
    mixed = run_episodes(engine, THIS_FILE, _tasks([1, 1]), [params.with_updates(n=1, max_tokens=3), params])
    assert len(mixed) == 3 and sum(mixed[0].mask) <= 3 and mixed[0].num_turns == 1

    rollout = trl_fields(a, engine.tokenizer)  # what GRPOTrainer's rollout_func returns
    for ep, p, c, lp, m in zip(a, rollout["prompt_ids"], rollout["completion_ids"], rollout["logprobs"],
                               rollout["env_mask"], strict=True):
        assert p + c == ep.token_ids[:len(p) + len(c)] and len(c) == len(lp) == len(m) and sum(m) == sum(ep.mask)
    json.dumps([ep.to_dict() for ep in a])  # serializable as is


class Scripted:
    """A generator that answers every prompt with the next of ``replies`` (text + the end token), recording each
    prompt; what a model writes is chosen, so the template's rewrites are known in advance."""

    def __init__(self, tokenizer, replies: list[str], end: str) -> None:
        self.tokenizer, self.max_model_len = tokenizer, 2048
        self.replies, self.end = list(replies), tokenizer.convert_tokens_to_ids(end)
        self.prompts: list[list[int]] = []

    def generate(self, prompts, sampling):
        from posttrain.rollout.engines import Sample

        out = []
        for p in prompts:
            self.prompts.append(list(p))
            ids = self.tokenizer.encode(self.replies.pop(0), add_special_tokens=False) + [self.end]
            out.append([Sample(ids, [-0.5] * len(ids), "", "stop")])
        return out


def _check_rows_against_prompts(ep: Episode, gen: Scripted, chat) -> None:
    """Every prompt was the template's fresh rendering of the conversation so far, and every row holds exactly the
    prompt ids the model was given followed by the ids it wrote."""
    tok = chat.tokenizer
    model_turns = [i for i, m in enumerate(ep.model_messages) if m["role"] == "assistant"]
    assert len(gen.prompts) == len(model_turns) == ep.num_turns
    for prompt, index in zip(gen.prompts, model_turns, strict=True):
        expected = chat.render(ep.model_messages[:index], ep.tools, generation_prompt=True)
        assert tok.decode(prompt, skip_special_tokens=False) == expected
    runs = [(row, s, e) for row in ep.rows for s, e in _runs(row.mask)]
    assert len(runs) == ep.num_turns
    for (row, start, end), prompt in zip(runs, gen.prompts, strict=True):
        assert row.token_ids[:start] == prompt  # the row's context is exactly what the model was conditioned on
        assert all(lp == -0.5 for lp in row.logprobs[start:end])
        assert all(lp == 0.0 for lp, m in zip(row.logprobs, row.mask, strict=True) if m == 0)
    assert ep.exact


def test_templates_that_rewrite_earlier_turns_fork_rows_token_by_token(tiny_family) -> None:
    """Qwen3's own template drops the reasoning of turns before the latest user message: when the counter answers
    with a user turn, the next prompt no longer extends the row, so a new row starts from the fresh rendering."""
    from transformers import AutoTokenizer

    from posttrain.models.chat import chat_format

    tok = AutoTokenizer.from_pretrained(tiny_family("qwen3"))
    chat = chat_format(tok)
    call = '<tool_call>\n{"name": "increment", "arguments": {}}\n</tool_call>'
    replies = [f"<think>\nturn {k}\n</think>\n\n{call}" for k in (1, 2, 3)]
    gen = Scripted(tok, replies, "<|im_end|>")
    [ep] = run_episodes(gen, THIS_FILE, _tasks([3]), SamplingParams(max_tokens=64), chat=chat)
    assert ep.end_reason == "done" and ep.num_turns == 3
    # turn 1 -> tool result (prefix-stable: the reasoning stays after the last user query), turn 2 -> a user turn,
    # which makes turns 1-2 "before the last query": their reasoning disappears from the rendering -> fork.
    assert len(ep.forked_rows) == 1 and [len(_runs(r.mask)) for r in ep.rows] == [2, 1]
    first, last = ep.rows
    assert "<think>\nturn 1\n</think>" in tok.decode(first.token_ids)
    context = tok.decode(last.token_ids[:last.prompt_len])
    assert "turn 1" not in context and "turn 2" not in context and context.endswith("<|im_start|>assistant\n")
    _check_rows_against_prompts(ep, gen, chat)
    # The environment and the verifier saw the final answers only; the episode keeps the reasoning.
    assert all("<think>" in m["content"] for m in ep.messages if m["role"] == "assistant")
    assert all("<think>" not in m["content"] for m in ep.trajectory.messages if m["role"] == "assistant")
    # TRL gets the last row; the forked one is counted.
    from posttrain.rl.rollout_func import fork_stats

    fields = trl_fields([ep], tok)
    assert fields["prompt_ids"][0] + fields["completion_ids"][0] == last.token_ids[:len(last.token_ids) - 1]
    assert fork_stats([ep]) == {"forked_rows": 1, "forked_model_tokens": sum(first.mask)}


def test_llama3_json_calls_are_translated_and_trimmed_turns_fork(tiny_family) -> None:
    """Llama 3's template trims each turn: a reply the model padded with spaces renders differently once it is
    history, so the row forks; its JSON call reaches the environment as an interchange (Hermes) call."""
    from transformers import AutoTokenizer

    from posttrain.models.chat import chat_format

    tok = AutoTokenizer.from_pretrained(tiny_family("llama3"))
    chat = chat_format(tok)
    assert chat.tool_format.name == "llama3_json"
    replies = ['{"name": "increment", "parameters": {}}', "  two, with spaces  "]
    gen = Scripted(tok, replies, "<|eot_id|>")
    [ep] = run_episodes(gen, THIS_FILE, _tasks([2]), SamplingParams(max_tokens=64), chat=chat)
    assert ep.end_reason == "done" and ep.num_turns == 2 and ep.forked_rows == []
    call_turn = next(m for m in ep.messages if m["role"] == "assistant")
    assert parse_tool_calls(call_turn["content"]).calls[0].name == "increment"  # what the env parsed
    assert json.loads(ep.messages[3]["content"])["calls"] == 1
    _check_rows_against_prompts(ep, gen, chat)

    gen = Scripted(tok, ["  padded  ", "  again  ", "done"], "<|eot_id|>")
    [ep] = run_episodes(gen, THIS_FILE, _tasks([3]), SamplingParams(max_tokens=64), chat=chat)
    assert ep.num_turns == 3 and len(ep.forked_rows) == 2  # each padded turn is trimmed once it is history
    _check_rows_against_prompts(ep, gen, chat)


def test_tool_calling_environment_end_to_end(engine) -> None:
    """The real tool_calling environment: scripted user turns, tool schemas in the system prompt, verification."""
    from posttrain.environment import make_env

    env = make_env("tool_calling")
    tasks = list(env.generate_tasks(3, seed=0))
    episodes = run_episodes(engine, "tool_calling", tasks, SamplingParams(max_tokens=16, seed=3), max_turns=4)
    for ep, task in zip(episodes, tasks, strict=True):
        assert ep.end_reason in {"done", "max_turns"} and ep.error is None
        assert ep.tools == task["tools"] and ep.num_turns >= 1
        _check_episode(ep, engine.tokenizer)
        verdict = env.verify(ep.trajectory)
        assert not verdict.passed and verdict.error is None  # a random model does not solve tasks
