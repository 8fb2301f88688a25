"""Logic-track rewards with the real environments and verifier pools: each row is scored by its own environment, the
format penalty, and the TRL fields built from episodes (cut after the model's last token, environment tokens masked)."""

from __future__ import annotations

import pytest

from envs.math.tasks import generate_tasks as math_tasks
from envs.tool_calling import reference_trajectory
from envs.tool_calling.tasks import generate_tasks as tool_tasks
from posttrain.errors import UserError
from posttrain.rl.rewards import EnvReward, FormatPenalty, RewardSettings, format_problems, reward_functions
from posttrain.rl.rollout_func import episode_seed, trl_fields
from posttrain.rollout.agent_loop import Episode


@pytest.fixture(scope="module")
def verifiers():
    from posttrain.verify_pool import VerifyPool

    pools = {"math": VerifyPool("math", workers=1, timeout_s=30), "tool_calling": VerifyPool("tool_calling", workers=1)}
    yield pools
    for pool in pools.values():
        pool.close()


@pytest.fixture(scope="module")
def math_task():
    return next(iter(math_tasks(1, 7)))


@pytest.fixture(scope="module")
def tool_task():
    return next(t for t in tool_tasks(30, 3) if t["kind"] == "multi_turn")


def episode(task, replies, finish="stop", end="done"):
    messages = [*task["messages"], *replies]
    return Episode(task=task, sample_index=0, messages=messages, finish_reasons=[finish], end_reason=end)


def test_each_row_is_scored_by_its_own_environment(verifiers, math_task, tool_task):
    right = episode(math_task, [{"role": "assistant", "content": f"So \\boxed{{{math_task['answer']}}}."}])
    wrong = episode(math_task, [{"role": "assistant", "content": "\\boxed{123456789}"}])
    solved = Episode(task=tool_task, sample_index=0, messages=reference_trajectory(tool_task), end_reason="done")
    unsolved = episode(tool_task, [{"role": "assistant", "content": "I cannot help."}])
    batch = [right, solved, wrong, unsolved]
    envs = ["math", "tool_calling", "math", "tool_calling"]
    funcs, weights = reward_functions(["math", "tool_calling"], verifiers, RewardSettings(weights={"tool_calling": 2}))
    logged = {}
    kwargs = dict(prompts=[None] * 4, completions=[None] * 4, env=envs, episode=batch,
                  log_metric=lambda name, value: logged.setdefault(name, value))
    assert [f.__name__ for f in funcs] == ["math", "tool_calling", "format"] and weights == [1.0, 2.0, 1.0]
    assert funcs[0](**kwargs) == [1.0, None, 0.0, None]
    assert funcs[1](**kwargs) == [None, 1.0, None, 0.0]
    assert funcs[2](**kwargs) == [0.0, 0.0, 0.0, 0.0]
    assert logged["pass_rate/math"] == 0.5 and logged["pass_rate/tool_calling"] == 0.5
    # A batch without rows of an environment: that environment's function abstains for every row.
    assert funcs[1](**{**kwargs, "env": ["math"] * 4}) == [None] * 4


def test_a_failed_verification_scores_zero_and_never_passes(math_task):
    class Exploding:
        def verify_all(self, trajectories):
            from posttrain.environment import VerifyResult

            return [VerifyResult.failure("verifier timed out", reason="timeout") for _ in trajectories]

    reward = EnvReward("math", Exploding())
    logged = {}
    ep = episode(math_task, [{"role": "assistant", "content": "\\boxed{1}"}])
    assert reward([None], [None], env=["math"], episode=[ep], log_metric=logged.__setitem__) == [0.0]
    assert logged == {"pass_rate/math": 0.0}


def test_format_problems_and_penalty(math_task, tool_task):
    fine = episode(math_task, [{"role": "assistant", "content": "\\boxed{3}"}])
    cut = episode(math_task, [{"role": "assistant", "content": "Let me think about"}], finish="length")
    budget = episode(math_task, [{"role": "assistant", "content": "abc"}], end="token_budget")
    bad_call = episode(tool_task, [{"role": "assistant", "content": "<tool_call>{not json</tool_call>"},
                                   {"role": "tool", "content": "{}"}])
    crashed = Episode(task=tool_task, sample_index=0, end_reason="env_error", error="reset: boom")
    assert format_problems(fine) == [] and format_problems(cut) == ["truncated"]
    assert format_problems(budget) == ["truncated"] and format_problems(bad_call) == ["bad_tool_call"]
    assert format_problems(crashed) == ["env_error"]
    logged = {}
    penalty = FormatPenalty(0.25)
    batch = [fine, cut, budget, bad_call, crashed]
    assert penalty([None] * 5, [None] * 5, episode=batch, log_metric=logged.__setitem__) == [0.0] + [-0.25] * 4
    assert logged["episodes/truncated"] == 0.4 and logged["episodes/bad_tool_call"] == 0.2
    assert logged["episodes/env_error"] == 0.2


def test_reward_weights_for_unknown_environments_are_errors(verifiers):
    with pytest.raises(UserError, match=r"rewards.weights: code not among .*math"):
        reward_functions(["math"], verifiers, RewardSettings(weights={"code": 2.0}))
    with pytest.raises(Exception, match="format_penalty"):
        RewardSettings(format_penalty=-1)


def test_trl_fields_cut_after_the_model_and_mask_the_environment(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = {"id": "t", "messages": [{"role": "user", "content": "hi"}]}
    # prompt (3) | model (2) | tool observation (3) | model (2) | template's closing newline (1)
    ep = Episode(task=task, sample_index=0, token_ids=list(range(100, 111)), prompt_len=3,
                 mask=[0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0],
                 logprobs=[0.0, 0.0, 0.0, -0.5, -0.6, 0.0, 0.0, 0.0, -0.7, -0.8, 0.0])
    silent = Episode(task=task, sample_index=1, messages=list(task["messages"]), end_reason="env_error")
    fields = trl_fields([ep, silent], tok)
    assert fields["prompt_ids"][0] == [100, 101, 102]
    assert fields["completion_ids"][0] == list(range(103, 110))  # the trailing template token is cut
    assert fields["env_mask"][0] == [1, 1, 0, 0, 0, 1, 1]
    assert fields["logprobs"][0] == [-0.5, -0.6, 0.0, 0.0, 0.0, -0.7, -0.8]
    # An episode in which the model never spoke: its rendered prompt, one end token, nothing to train on.
    rendered = tok.apply_chat_template(task["messages"], tokenize=False, add_generation_prompt=True)
    assert tok.decode(fields["prompt_ids"][1]) == rendered
    assert fields["completion_ids"][1] == [tok.eos_token_id] and fields["env_mask"][1] == [0]
    assert fields["logprobs"][1] == [0.0]


def test_episode_seeds_are_stable_and_distinct():
    seeds = {episode_seed(0, step, i) for step in range(5) for i in range(8)}
    assert len(seeds) == 40 and all(0 <= s < 2**31 for s in seeds)
    assert episode_seed(3, 2, 1) == episode_seed(3, 2, 1) != episode_seed(4, 2, 1)
