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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass
class Refill:
    """Dynamic sampling (DAPO): a prompt group whose episodes all get the same reward teaches nothing (its advantages
    are 0), so it is replaced by the group of another prompt, drawn from the training rows, up to ``rounds`` times."""

    rounds: int
    score: Callable[[Sequence[Episode]], list[float | None]]  # the rewards TRL will give the episodes
    verify: Callable[[Sequence[Episode]], None]  # judges the episodes (verdicts kept on them)


class PoolRollout:
    """The ``rollout_func`` for :class:`posttrain.rl.trainer.LogicGRPOTrainer`: plays one episode per batch entry.

    The trainer exposes the batch's dataset rows as ``trainer.rollout_inputs`` (TRL passes only the prompts); each row
    carries ``row``, its index into ``rows``, which names the task, its environment and its bucket's sampling params.
    With ``refill`` (dynamic sampling) groups of equal rewards are replaced by other prompts' groups; the rows
    actually played go back to TRL with the episodes (``row``, ``env``, ``bucket``), so every reward is routed to
    the environment that played it.
    """

    def __init__(self, pool: Any, rows: Sequence[TaskRow], params: Mapping[str, SamplingParams],
                 agent: AgentLoopConfig, env_kwargs: Mapping[str, dict[str, Any]], seed: int,
                 refill: Refill | None = None, chat: Any = None) -> None:
        self.pool, self.rows, self.params, self.agent = pool, list(rows), dict(params), agent
        self.env_kwargs, self.seed, self.refill, self.chat = dict(env_kwargs), seed, refill, chat
        self.episodes_played = 0
        self.forks = {"forked_rows": 0, "forked_model_tokens": 0}
        self.stats = {"groups": 0, "zero_variance": 0, "refilled": 0, "kept_zero_variance": 0}

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        inputs = trainer.rollout_inputs
        if len(inputs) != len(prompts):
            raise RuntimeError(f"rollout: {len(prompts)} prompts but {len(inputs)} dataset rows in the batch")
        played, refill = self.play([x["row"] for x in inputs], trainer.state.global_step, trainer.num_generations)
        sync = getattr(trainer, "weight_sync", None)
        for _, ep in played:
            ep.policy_version = sync.synced_step if sync is not None else None
        log_refill(trainer, refill)
        return self.fields(played)

    def play(self, row_indices: Sequence[int], step: int,
             group: int) -> tuple[list[tuple[int, Episode]], dict[str, int]]:
        """One episode per entry (``group`` consecutive entries share a prompt), seeded by the step and position so a
        resumed run draws the same episodes; -> ((row index, episode) per entry, in order; this batch's dynamic
        sampling counts)."""
        sampling = [self.params[self.rows[r].bucket].with_updates(n=1, seed=episode_seed(self.seed, step, i))
                    for i, r in enumerate(row_indices)]
        episodes = self._play([self.rows[r] for r in row_indices], sampling)
        played = list(zip(row_indices, episodes, strict=True))
        counts: dict[str, int] = {}
        if self.refill is not None:
            played, counts = self._refill(played, step, group)
            for key, value in counts.items():
                self.stats[key] += value
        return played, counts

    def _play(self, rows: list[TaskRow], sampling: list[SamplingParams]) -> list[Episode]:
        episodes = play_rows(self.pool, rows, sampling, self.agent, self.env_kwargs, self.chat)
        self.episodes_played += len(episodes)
        for key, value in fork_stats(episodes).items():
            self.forks[key] += value
        return episodes

    def fields(self, played: list[tuple[int, Episode]]) -> dict[str, list[Any]]:
        rows = [self.rows[r] for r, _ in played]
        episodes = [ep for _, ep in played]
        return {**trl_fields(episodes, self.pool.tokenizer), "episode": episodes, "row": [r for r, _ in played],
                "env": [row.env for row in rows], "bucket": [row.bucket for row in rows],
                "policy_version": [ep.policy_version for ep in episodes]}

    def _refill(self, played: list[tuple[int, Episode]], step: int,
                group: int) -> tuple[list[tuple[int, Episode]], dict[str, int]]:
        """Replace zero-variance groups, round by round, with groups of prompts drawn (seeded by the step) from the
        training rows; what is still flat after the last round is kept (it only adds nothing to the gradient)."""
        import random

        assert self.refill is not None
        groups = [played[i:i + group] for i in range(0, len(played), group)]
        draw = random.Random(f"{self.seed}:refill:{step}")
        counts = {"groups": len(groups), "zero_variance": 0, "refilled": 0, "kept_zero_variance": 0}
        for attempt in range(self.refill.rounds + 1):
            self.refill.verify([ep for g in groups for _, ep in g])
            flat = [i for i, g in enumerate(groups) if _flat(self.refill.score([ep for _, ep in g]))]
            if attempt == 0:
                counts["zero_variance"] = len(flat)
            if not flat or attempt == self.refill.rounds:
                counts["kept_zero_variance"] = len(flat)
                break
            rows = [draw.randrange(len(self.rows)) for _ in flat]
            sampling = [self.params[self.rows[r].bucket].with_updates(
                n=group, seed=episode_seed(self.seed, step, 1_000_000 * (attempt + 1) + k)) for k, r in enumerate(rows)]
            fresh = self._play([self.rows[r] for r in rows], sampling)
            counts["refilled"] += len(flat)
            for k, (i, r) in enumerate(zip(flat, rows, strict=True)):
                groups[i] = [(r, ep) for ep in fresh[k * group:(k + 1) * group]]
        return [entry for g in groups for entry in g], counts


def log_refill(trainer: Any, counts: dict[str, int]) -> None:
    """This batch's dynamic sampling in the step's logged row (TRL averages what reward functions log)."""
    if counts and counts["groups"] and hasattr(trainer, "_log_metric"):
        trainer._log_metric("dynamic/zero_variance_fraction", counts["zero_variance"] / counts["groups"])
        trainer._log_metric("dynamic/refilled_groups", float(counts["refilled"]))
        trainer._log_metric("dynamic/kept_zero_variance", float(counts["kept_zero_variance"]))


def _flat(rewards: list[float | None]) -> bool:
    """All scored rewards equal (or none scored): the group's advantages are all 0."""
    values = [r for r in rewards if r is not None]
    return len(values) < 2 or max(values) - min(values) < 1e-9
