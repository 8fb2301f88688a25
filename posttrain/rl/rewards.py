"""Rewards for the Logic track: every row is scored by its own environment's verifier, plus a format penalty.

TRL calls each reward function on the whole batch and sums their outputs per episode (``reward_weights`` scale them);
a function returns ``None`` for episodes it does not apply to. So routing is one function per environment:

* ``EnvReward("math")`` verifies the math rows' episodes with the math env (through a :class:`VerifyPool`: separate
  processes, a per-episode timeout, crashes and timeouts score 0 and never pass) and returns the verify score;
  ``None`` for rows of other environments. TRL logs ``rewards/math/mean``: the mean score of the math rows.
* ``FormatPenalty`` subtracts ``format_penalty`` from a malformed episode (its last turn was cut at ``max_tokens`` or
  by the token budget, an assistant turn holds a tool call that does not parse, or the environment failed on it).

The verifier is the same one rejection sampling and evaluation use (``Environment.verify``), run on the episode's
whole conversation, so a reward is exactly "the environment says this trajectory solved its task".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.rollout.agent_loop import Episode
from posttrain.tool_calls import parse_tool_calls

RewardFunc = Callable[..., list[float | None]]


class RewardSettings(Schema):
    weights: dict[str, float] = Field(default_factory=dict, description="multiplier of each environment's verify "
                                      "score (default 1.0), e.g. {code: 2.0}")
    format_penalty: float = Field(0.1, ge=0.0, description="subtracted from a malformed episode (cut at max_tokens, "
                                  "unparseable tool call, environment error)")


def format_problems(episode: Episode) -> list[str]:
    """Why an episode is malformed (empty when it is not): ``truncated``, ``bad_tool_call``, ``env_error``."""
    problems = []
    if episode.end_reason == "token_budget" or (episode.finish_reasons and episode.finish_reasons[-1] == "length"):
        problems.append("truncated")
    if any(m.get("role") == "assistant" and parse_tool_calls(m.get("content") or "").errors
           for m in episode.messages):
        problems.append("bad_tool_call")
    if episode.end_reason == "env_error":
        problems.append("env_error")
    return problems


class EnvReward:
    """The verify score of the rows that belong to ``env``; ``None`` for the others. Named after the env (TRL logs
    ``rewards/<env>/mean`` and ``pass_rate/<env>``)."""

    def __init__(self, env: str, verifier: Any, label: str | None = None) -> None:
        self.env, self.verifier = env, verifier
        self.__name__ = label or env  # TRL names the reward by its function name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], env: Sequence[str],
                 episode: Sequence[Episode], log_metric: Callable[[str, float], None] | None = None,
                 **_: Any) -> list[float | None]:
        mine = [i for i, e in enumerate(env) if e == self.env]
        rewards: list[float | None] = [None] * len(env)
        if not mine:
            return rewards
        judge([episode[i] for i in mine], self.verifier)
        results = [episode[i].verdict for i in mine]
        for i, result in zip(mine, results, strict=True):
            rewards[i] = float(result.score)
        if log_metric is not None:
            log_metric(f"pass_rate/{self.__name__}", sum(r.passed for r in results) / len(results))
        return rewards


def judge(episodes: Sequence[Episode], verifier: Any) -> None:
    """Verify the episodes no verifier has judged yet and keep each verdict on its episode: an episode verified
    ahead of the reward (rollouts that run ahead, dynamic sampling) is not verified twice."""
    todo = [ep for ep in episodes if ep.verdict is None]
    if todo:
        for ep, result in zip(todo, verifier.verify_all(ep.trajectory for ep in todo), strict=True):
            ep.verdict = result


def combined_rewards(episodes: Sequence[Episode], funcs: Sequence[RewardFunc], weights: Sequence[float],
                     env: Sequence[str]) -> list[float | None]:
    """Each episode's reward as TRL sums it (``reward_weights`` times each function's value, ``None`` skipped; an
    episode no function scores is ``None``)."""
    totals: list[float | None] = [None] * len(episodes)
    for func, weight in zip(funcs, weights, strict=True):
        values = func(prompts=[None] * len(episodes), completions=[None] * len(episodes), env=list(env),
                      episode=list(episodes))
        for i, v in enumerate(values):
            if v is not None:
                totals[i] = (totals[i] or 0.0) + weight * float(v)
    return totals


class FormatPenalty:
    """``-penalty`` for a malformed episode, 0 otherwise; logs how often each problem occurs."""

    __name__ = "format"

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], episode: Sequence[Episode],
                 log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        problems = [format_problems(ep) for ep in episode]
        if log_metric is not None and episode:
            for name in ("truncated", "bad_tool_call", "env_error"):
                log_metric(f"episodes/{name}", sum(name in p for p in problems) / len(episode))
            log_metric("episodes/turns", sum(ep.num_turns for ep in episode) / len(episode))
        return [-self.penalty if p else 0.0 for p in problems]


def env_label(env: str) -> str:
    """A short name for logs: the environment's ``name`` (``math``), also when it was given as a module or path."""
    from posttrain.environment import load_env_class

    return load_env_class(env).name or env


def check_weights(envs: Sequence[str], settings: RewardSettings) -> None:
    """A weight for an environment no training task uses would silently do nothing: an error instead."""
    from posttrain.errors import UserError

    unknown = sorted(set(settings.weights) - set(envs))
    if unknown:
        raise UserError(f"rewards.weights: {', '.join(unknown)} not among the environments of the training tasks "
                        f"({', '.join(envs)})")


def reward_functions(envs: Sequence[str], verifiers: dict[str, Any],
                     settings: RewardSettings) -> tuple[list[RewardFunc], list[float]]:
    """One reward function per environment (in ``envs`` order) and the format penalty, with their TRL weights."""
    check_weights(envs, settings)
    funcs: list[RewardFunc] = [EnvReward(env, verifiers[env], env_label(env)) for env in envs]
    weights = [float(settings.weights.get(env, 1.0)) for env in envs]
    funcs.append(FormatPenalty(settings.format_penalty))
    weights.append(1.0)
    return funcs, weights
