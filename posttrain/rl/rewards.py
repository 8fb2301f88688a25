"""Rewards for the Logic track: every row is scored by its own environment's verifier, plus a format penalty, plus
your own reward functions.

TRL calls each reward function on the whole batch and sums their outputs per episode (``reward_weights`` scale them);
a function returns ``None`` for episodes it does not apply to. So routing is one function per environment:

* ``EnvReward("math")`` verifies the math rows' episodes with the math env (through a :class:`VerifyPool`: separate
  processes, a per-episode timeout, crashes and timeouts score 0 and never pass) and returns the verify score;
  ``None`` for rows of other environments. TRL logs ``rewards/math/mean``: the mean score of the math rows.
* ``FormatPenalty`` subtracts ``format_penalty`` from a malformed episode (its last turn was cut at ``max_tokens`` or
  by the token budget, an assistant turn holds a tool call that does not parse, or the environment failed on it).

* ``FunctionReward``: a reward function of yours, named by ``"module:name"`` or ``"path/file.py:name"`` in
  ``rewards.functions``, with TRL's ``reward_funcs`` signature (``f(prompts, completions, **kwargs) -> list[float |
  None]``), so a function written for TRL works unchanged; its weight joins TRL's ``reward_weights``. Rejection
  sampling and evaluation call the same functions the same way (:class:`CombinedReward`).

The verifier is the same one rejection sampling and evaluation use (``Environment.verify``), run on the episode's
whole conversation, so a reward is exactly "the environment says this trajectory solved its task".
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.rollout.agent_loop import Episode
from posttrain.tool_calls import parse_tool_calls

RewardFunc = Callable[..., list[float | None]]
# What the caller passes itself (TRL's names and ours); a task field of the same name is not passed again.
RESERVED = ("prompts", "completions", "completion_ids", "trainer_state", "log_metric", "log_extra", "environments",
            "episode", "task", "env", "bucket", "prompt", "completion")


class RewardFunctionSpec(Schema):
    """One reward function of yours: TRL's ``reward_funcs`` signature, by dotted path or file."""

    function: str = Field(description="'module:name' or 'path/file.py:name' (a TRL reward function works as is)")
    weight: float = Field(1.0, description="its weight in the sum of rewards (TRL's reward_weights)")
    name: str | None = Field(None, description="name in logs and metrics; default: the function's own name")
    envs: list[str] | None = Field(None, description="only episodes of these environments (the others get None); "
                                   "default: every episode")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for every call")


class RewardFunctions(Schema):
    """How a verified episode's reward is made: each environment's verify score times its weight, plus your
    functions times theirs (the ``rewards`` section of ``sample``, ``rs`` and ``eval``)."""

    weights: dict[str, float] = Field(default_factory=dict, description="multiplier of each environment's verify "
                                      "score (default 1.0), e.g. {code: 2.0}")
    functions: list[RewardFunctionSpec] = Field(default_factory=list, description="your reward functions")


class RewardSettings(RewardFunctions):
    """The Logic track's ``rewards`` section."""

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


class FunctionReward:
    """Your reward function with TRL's signature, called the same way by the Logic track (TRL calls this object),
    rejection sampling and evaluation (:meth:`score`).

    It is called once per batch with ``prompts`` (each episode's prompt messages), ``completions`` (the messages the
    model and the environment added after the prompt: for a single-turn task ``[{"role": "assistant", "content":
    ...}]``, as TRL gives for a conversational dataset), ``completion_ids`` (the tokens after the prompt), the task
    records' fields as columns (``answer=[...]``, a field missing from a task is None), ``task``, ``env``, ``bucket``,
    ``episode``, ``trainer_state`` (None outside RL), ``log_metric`` and ``log_extra``, and the spec's ``kwargs``.

    Untrusted output never crashes a run: if the function raises on a batch, each episode is scored alone, and one it
    still raises on scores 0.0 (counted in ``errors``, logged as ``rewards/<name>/errors``). A function that returns
    the wrong number of rewards, or something that is not a number or None, is the function's bug: a UserError naming
    it.
    """

    def __init__(self, spec: RewardFunctionSpec, where: str = "rewards.functions") -> None:
        from posttrain.plugins import load_object

        self.spec, self.where = spec, where
        self.fn = load_object(spec.function, f"{where}: reward function")
        if not callable(self.fn):
            raise UserError(f"{where}: reward function {spec.function!r} is not callable")
        self.__name__ = spec.name or getattr(self.fn, "__name__", None) or spec.function.rsplit(":", 1)[-1]
        self.errors, self.first_error = 0, ""
        self._check_signature()

    def _check_signature(self) -> None:
        try:
            params = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):  # a builtin or C callable: nothing to check
            return
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            raise UserError(f"{self.where}: reward function {self.spec.function!r} must accept **kwargs, as TRL's "
                            "reward functions do (it is called with prompts, completions and the task's fields as "
                            "keyword arguments)")

    def __call__(self, prompts: Sequence[Any] = (), completions: Sequence[Any] = (), *,
                 episode: Sequence[Episode], env: Sequence[str] | None = None, bucket: Sequence[str] | None = None,
                 trainer_state: Any = None, log_metric: Callable[[str, float], None] | None = None,
                 log_extra: Any = None, **_: Any) -> list[float | None]:
        """TRL's call: the batch's episodes come in ``episode`` (from our rollout function)."""
        return self.score(list(episode), env, bucket, trainer_state=trainer_state, log_metric=log_metric,
                          log_extra=log_extra)

    def score(self, episodes: Sequence[Episode], envs: Sequence[str] | None = None,
              buckets: Sequence[str] | None = None, *, trainer_state: Any = None,
              log_metric: Callable[[str, float], None] | None = None, log_extra: Any = None) -> list[float | None]:
        envs = list(envs) if envs is not None else [str(ep.task.get("env", "")) for ep in episodes]
        buckets = list(buckets) if buckets is not None else [""] * len(episodes)
        mine = [i for i, e in enumerate(envs) if self.spec.envs is None or e in self.spec.envs
                or _env_name(e) in self.spec.envs]
        rewards: list[float | None] = [None] * len(episodes)
        if not mine:
            return rewards
        errors_before = self.errors
        extras = {"trainer_state": trainer_state, "log_metric": log_metric or _no_metric,
                  "log_extra": log_extra or _no_extra}
        values = self._call([episodes[i] for i in mine], [envs[i] for i in mine], [buckets[i] for i in mine], extras)
        for i, value in zip(mine, values, strict=True):
            rewards[i] = value
        if log_metric is not None:
            log_metric(f"rewards/{self.__name__}/errors", float(self.errors - errors_before))
        return rewards

    def _call(self, episodes: list[Episode], envs: list[str], buckets: list[str],
              extras: dict[str, Any]) -> list[float | None]:
        try:
            return self._checked(self.fn(**_arguments(episodes, envs, buckets), **extras, **self.spec.kwargs),
                                 len(episodes))
        except UserError:
            raise
        except Exception as e:
            if len(episodes) == 1:
                self._failed(e)
                return [0.0]
        out: list[float | None] = []
        for ep, env, bucket in zip(episodes, envs, buckets, strict=True):  # find the episodes it fails on
            try:
                out += self._checked(self.fn(**_arguments([ep], [env], [bucket]), **extras, **self.spec.kwargs), 1)
            except UserError:
                raise
            except Exception as e:
                self._failed(e)
                out.append(0.0)
        return out

    def _failed(self, error: Exception) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(error).__name__}: {error}"

    def _checked(self, values: Any, n: int) -> list[float | None]:
        if hasattr(values, "tolist"):  # numpy arrays, torch tensors
            values = values.tolist()
        if not isinstance(values, list | tuple) or len(values) != n:
            got = f"{len(values)} values" if isinstance(values, list | tuple) else type(values).__name__
            raise UserError(f"{self.where}: reward function {self.spec.function!r} returned {got} for {n} episodes; "
                            "expected a list with one float (or None) per completion")
        out: list[float | None] = []
        for i, v in enumerate(values):
            if v is None:
                out.append(None)
            elif isinstance(v, bool | int | float):
                if not math.isfinite(float(v)):
                    raise ValueError(f"reward {v} for completion {i} is not finite")
                out.append(float(v))
            else:
                raise UserError(f"{self.where}: reward function {self.spec.function!r} returned {v!r} for completion "
                                f"{i}; expected a float or None")
        return out


def _no_metric(name: str, value: float) -> None:
    return None


def _no_extra(*args: Any, **kwargs: Any) -> None:
    return None


@functools.cache
def _env_name(env: str) -> str:
    """An environment's name from the spec a row gives (cached: a plugin given by path is not re-imported per
    episode)."""
    try:
        return env_label(env)
    except UserError:
        return env


def _arguments(episodes: list[Episode], envs: list[str], buckets: list[str]) -> dict[str, Any]:
    """TRL's arguments for these episodes: prompts, completions, completion ids, and the tasks' fields as columns."""
    prompts, completions, ids = [], [], []
    for ep in episodes:
        n = len(ep.task.get("messages") or [])
        prompts.append([dict(m) for m in ep.messages[:n]])
        completions.append([dict(m) for m in ep.messages[n:]])
        ids.append([t for t, m in zip(ep.token_ids[ep.prompt_len:], ep.mask[ep.prompt_len:], strict=True) if m])
    fields = sorted({k for ep in episodes for k in ep.task if k not in RESERVED})
    columns = {k: [ep.task.get(k) for ep in episodes] for k in fields}
    return {"prompts": prompts, "completions": completions, "completion_ids": ids, **columns,
            "task": [ep.task for ep in episodes], "env": envs, "bucket": buckets, "episode": episodes}


class CombinedReward:
    """The reward of verified episodes outside TRL (rejection sampling, evaluation): each environment's verify
    score times its weight plus every function's reward times its weight (a None counts 0)."""

    def __init__(self, settings: RewardFunctions, where: str = "rewards") -> None:
        self.settings = settings
        self.functions = [FunctionReward(spec, f"{where}.functions.{i}") for i, spec in
                          enumerate(settings.functions)]
        check_names([f.__name__ for f in self.functions], [], where)

    def score(self, episodes: Sequence[Episode], scores: Sequence[float], envs: Sequence[str],
              buckets: Sequence[str]) -> list[tuple[float, dict[str, float | None]]]:
        parts = {f.__name__: f.score(episodes, envs, buckets) for f in self.functions}
        weights = {f.__name__: f.spec.weight for f in self.functions}
        out = []
        for i, (score, env) in enumerate(zip(scores, envs, strict=True)):
            mine = {name: values[i] for name, values in parts.items()}
            total = float(score) * self.settings.weights.get(env, self.settings.weights.get(_env_name(env), 1.0))
            total += sum(weights[n] * v for n, v in mine.items() if v is not None)
            out.append((round(total, 6), mine))
        return out

    def stats(self) -> dict[str, Any]:
        return {f.__name__: {"errors": f.errors, "first_error": f.first_error} for f in self.functions}


def check_names(functions: Sequence[str], envs: Sequence[str], where: str = "rewards") -> None:
    """Every reward is logged under its name: two with one name (or a function named like an environment) would
    mix their numbers."""
    seen = list(envs)
    for name in functions:
        if name in seen:
            raise UserError(f"{where}.functions: two rewards are named {name!r}; give one a `name:`")
        seen.append(name)


def reward_inputs(settings: RewardFunctions, where: str = "rewards") -> dict[str, str]:
    """The reward functions' files as manifest inputs (an edited reward is a new input), each function loaded once
    here so a bad spec fails before any model starts."""
    from posttrain.plugins import spec_sha256

    inputs = {}
    for i, spec in enumerate(settings.functions):
        FunctionReward(spec, f"{where}.functions.{i}")
        digest = spec_sha256(spec.function)
        if digest is not None:
            inputs[f"reward:{spec.function}"] = digest
    return inputs


def env_label(env: str) -> str:
    """A short name for logs: the environment's ``name`` (``math``), also when it was given as a module or path."""
    from posttrain.environment import load_env_class

    return load_env_class(env).name or env


def check_weights(envs: Sequence[str], settings: RewardFunctions) -> None:
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
    for i, spec in enumerate(settings.functions):
        funcs.append(FunctionReward(spec, f"rewards.functions.{i}"))
        weights.append(float(spec.weight))
    check_names([f.__name__ for f in funcs[len(envs):]], [f.__name__ for f in funcs[:len(envs)]])
    return funcs, weights
