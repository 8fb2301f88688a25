"""Episodes from posttrain's rollout workers, in the shape TRL's ``GRPOTrainer(rollout_func=...)`` takes.

TRL hands the rollout function the batch's prompts (each repeated ``num_generations`` times, one entry per episode to
play) and expects per entry: ``prompt_ids``, ``completion_ids``, ``logprobs`` (the sampler's, for the
importance-sampling correction) and optionally ``env_mask`` (1 = a token the model wrote, 0 = a token the environment
or the chat template wrote: left out of the loss). Every other key is handed to the reward functions; we pass the
:class:`Episode` objects themselves, which the environments' verifiers score.

Each entry plays one episode of its own task row with its own environment (rows of different environments go through
the agent loop separately, since one loop plays one environment). The completion is the episode after its prompt, cut
after the model's last token: what follows it (the template's closing newline, a final observation) conditions no
model token, so it has no place in the loss, and ending on the model's end-of-turn token is how TRL recognises a
finished (not truncated) completion.

When the chat template rewrote earlier turns during an episode (a thinking template dropping old reasoning), the
episode has several rows (``Episode.forked_rows``; see :mod:`posttrain.rollout.agent_loop`). TRL's GRPO takes one
sequence per generation, so the entry is the episode's last row (the one with the final answer the reward judges):
every trained token is trained in exactly the context the model saw, and the earlier rows' model tokens are left out
of this step's loss (counted as ``forked_rows`` / ``forked_model_tokens`` by :func:`fork_stats`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from posttrain.rollout.agent_loop import AgentLoopConfig, Episode, run_episodes
from posttrain.rollout.sampling import SamplingParams
from posttrain.tasks import TaskRow


def episode_seed(seed: int, step: int, position: int) -> int:
    """The sampling seed of the ``position``-th episode of the batch generated at optimizer step ``step``: a resumed
    run draws the same episodes as an uninterrupted one would have."""
    digest = hashlib.sha256(f"{seed}:{step}:{position}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits: every engine accepts it


def play_rows(pool: Any, rows: Sequence[TaskRow], sampling: Sequence[SamplingParams], agent: AgentLoopConfig,
              env_kwargs: Mapping[str, dict[str, Any]], chat: Any = None) -> list[Episode]:
    """Play ``sampling[i].n`` episodes of each row (rows may mix environments). Episodes come back in row order.
    ``chat``: the model's :class:`~posttrain.models.chat.ChatFormat` (default: the pool tokenizer's own)."""
    by_env: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        by_env.setdefault(row.env, []).append(position)
    played: dict[int, list[Episode]] = {}
    for env, positions in by_env.items():  # one agent loop per environment; the pool is used by one caller at a time
        episodes = iter(run_episodes(pool, env, [rows[p].task for p in positions], [sampling[p] for p in positions],
                                     max_turns=agent.max_turns, max_episode_tokens=agent.max_episode_tokens,
                                     env_kwargs=env_kwargs.get(env), chat=chat))
        for p in positions:
            played[p] = [next(episodes) for _ in range(sampling[p].n)]
    return [ep for p in range(len(rows)) for ep in played[p]]


def trl_fields(episodes: Sequence[Episode], tokenizer: Any) -> dict[str, list[Any]]:
    """``prompt_ids``, ``completion_ids``, ``logprobs`` and ``env_mask`` per episode, completions cut after the
    model's last token.

    An episode in which the model never spoke (its environment failed at reset, or the prompt filled the token budget)
    still needs an entry: it gets its prompt and a single end-of-turn token with mask 0, so it is scored (its reward
    says what went wrong) but trains nothing.
    """
    fields: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": []}
    for ep in episodes:
        model_positions = [i for i in range(ep.prompt_len, len(ep.mask)) if ep.mask[i]]
        prompt = list(ep.token_ids[:ep.prompt_len]) or _render_prompt(ep, tokenizer)
        if model_positions:
            end = model_positions[-1] + 1
            completion = ep.token_ids[ep.prompt_len:end]
            logprobs, mask = ep.logprobs[ep.prompt_len:end], ep.mask[ep.prompt_len:end]
        else:
            completion, logprobs, mask = [tokenizer.eos_token_id], [0.0], [0]
        fields["prompt_ids"].append(prompt)
        fields["completion_ids"].append(list(completion))
        fields["logprobs"].append([float(x) for x in logprobs])
        fields["env_mask"].append(list(mask))
    return fields


def fork_stats(episodes: Sequence[Episode]) -> dict[str, int]:
    """How many rows the template's history rewrites cut off (and the model tokens in them), which one GRPO
    sequence per episode leaves out of the loss."""
    return {"forked_rows": sum(len(ep.forked_rows) for ep in episodes),
            "forked_model_tokens": sum(sum(r.mask) for ep in episodes for r in ep.forked_rows)}


def _render_prompt(ep: Episode, tokenizer: Any) -> list[int]:
    messages = ep.messages or ep.task.get("messages") or [{"role": "user", "content": ""}]
    text = tokenizer.apply_chat_template(messages, tools=ep.tools or None, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


class PoolRollout:
    """The ``rollout_func`` for :class:`posttrain.rl.trainer.LogicGRPOTrainer`: plays one episode per batch entry.

    The trainer exposes the batch's dataset rows as ``trainer.rollout_inputs`` (TRL passes only the prompts); each row
    carries ``row``, its index into ``rows``, which names the task, its environment and its bucket's sampling params.
    """

    def __init__(self, pool: Any, rows: Sequence[TaskRow], params: Mapping[str, SamplingParams],
                 agent: AgentLoopConfig, env_kwargs: Mapping[str, dict[str, Any]], seed: int,
                 chat: Any = None) -> None:
        self.pool, self.rows, self.params, self.agent = pool, list(rows), dict(params), agent
        self.env_kwargs, self.seed, self.chat = dict(env_kwargs), seed, chat
        self.episodes_played = 0
        self.forks = {"forked_rows": 0, "forked_model_tokens": 0}

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        inputs = trainer.rollout_inputs
        if len(inputs) != len(prompts):
            raise RuntimeError(f"rollout: {len(prompts)} prompts but {len(inputs)} dataset rows in the batch")
        step = trainer.state.global_step
        rows = [self.rows[x["row"]] for x in inputs]
        sampling = [self.params[row.bucket].with_updates(n=1, seed=episode_seed(self.seed, step, i))
                    for i, row in enumerate(rows)]
        episodes = play_rows(self.pool, rows, sampling, self.agent, self.env_kwargs, self.chat)
        self.episodes_played += len(episodes)
        for k, v in fork_stats(episodes).items():
            self.forks[k] += v
        return {**trl_fields(episodes, self.pool.tokenizer), "episode": episodes}
