"""Multi-turn episodes: the model talks to an environment (tool results, follow-up user turns) until the environment
says it is done, a turn limit or a token budget.

Every active episode's next turn goes into one ``generate`` call, so a batch of episodes costs one engine call per
turn, not one per episode. Token accounting is exact, which the RL track relies on:

* the ids of a model turn are the ids the engine produced (never re-tokenized), with their sampling log-probs and
  mask 1;
* everything else (the prompt, the template's end-of-turn text after a model turn, observations, the next generation
  prompt) is the chat template's rendering of the conversation, tokenized piece by piece, with mask 0;
* so ``decode(token_ids)`` equals the template's rendering of ``messages`` (``Episode.exact`` records it; it is False
  only when the model's text does not survive the round trip, e.g. it ended on a different end token than the
  template writes, or stopped inside a multi-byte character).

This needs a chat template whose rendering of a conversation is a prefix of the rendering of any continuation (true
for ChatML and for posttrain's template); a template that rewrites earlier turns is refused with a UserError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field

from posttrain.config import Schema
from posttrain.environment import Environment, Message, Task, Trajectory, make_env
from posttrain.errors import UserError
from posttrain.rollout.sampling import SamplingParams

if TYPE_CHECKING:
    from posttrain.rollout.engines import Sample

_SENTINEL = "\x00posttrain-assistant-content\x00"


class Generator(Protocol):
    """What the loop needs from a rollout backend: a :class:`RolloutPool` or any :class:`Engine`."""

    tokenizer: Any
    max_model_len: int

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Sample]]: ...


class AgentLoopConfig(Schema):
    max_turns: int = Field(8, ge=1, description="model turns per episode")
    max_episode_tokens: int | None = Field(
        None, ge=1, description="token budget of a conversation (prompt + all turns): a model turn gets at most the "
        "room left and none starts without room, so model tokens never pass it (the template's closing text and the "
        "environment's last answer may); default and upper bound: the engine's context length")


@dataclass
class Episode:
    """One conversation between the model and an environment, with exact token-level records."""

    task: Task
    sample_index: int  # which of the task's n episodes this is
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1 = written by the model, 0 = prompt / template / environment
    logprobs: list[float] = field(default_factory=list)  # sampling log-prob where mask is 1, 0.0 elsewhere
    prompt_len: int = 0  # tokens before the first model turn
    finish_reasons: list[str] = field(default_factory=list)  # per model turn: "stop" or "length"
    rewards: list[float] = field(default_factory=list)  # per environment step
    infos: list[dict[str, Any]] = field(default_factory=list)
    end_reason: str = ""  # "done", "max_turns", "token_budget" or "env_error"
    error: str | None = None
    exact: bool = True  # decode(token_ids) == the template's rendering of messages
    env: str = ""  # the environment that played it
    policy_version: int | None = None  # the optimizer step whose weights generated it (RL), when known
    verdict: Any = None  # its VerifyResult, once a verifier judged it (kept so that it is judged once)

    @property
    def num_turns(self) -> int:
        return len(self.finish_reasons)

    @property
    def trajectory(self) -> Trajectory:
        return Trajectory(task=self.task, messages=self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task.get("id"), "sample_index": self.sample_index, "messages": self.messages,
                "tools": self.tools, "token_ids": self.token_ids, "mask": self.mask, "logprobs": self.logprobs,
                "prompt_len": self.prompt_len, "finish_reasons": self.finish_reasons, "rewards": self.rewards,
                "infos": self.infos, "end_reason": self.end_reason, "error": self.error, "exact": self.exact}


class _Renderer:
    """The model's chat template, and the bookkeeping that turns its output into token pieces."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the model's tokenizer has no chat template; multi-turn rollouts need one")
        self.tokenizer = tokenizer
        self.special_ids = set(tokenizer.all_special_ids)

    def render(self, messages: list[Message], tools: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def turn_frame(self, messages: list[Message], tools: list[dict[str, Any]], prompt: str) -> tuple[str, str]:
        """What the template writes around an assistant turn's content after the generation prompt ``prompt``:
        (opening, closing), found by rendering a sentinel as the content. For ChatML: ("", "<|im_end|>\\n")."""
        probe = self.render([*messages, {"role": "assistant", "content": _SENTINEL}], tools, False)
        if not probe.startswith(prompt) or _SENTINEL not in probe:
            raise UserError("the chat template does not render an assistant turn as a continuation of its "
                            "generation prompt; multi-turn rollouts need a prefix-stable template (e.g. ChatML)")
        rest = probe[len(prompt):]
        cut = rest.index(_SENTINEL)
        return rest[:cut], rest[cut + len(_SENTINEL):]


def _append(ep: Episode, ids: list[int], model: bool, logprobs: list[float] | None = None) -> None:
    ep.token_ids.extend(ids)
    ep.mask.extend([1 if model else 0] * len(ids))
    ep.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


class _Running:
    """An episode in progress: its environment, the rendered text its token ids stand for, and its turn params."""

    def __init__(self, episode: Episode, env: Environment, params: SamplingParams, index: int) -> None:
        self.episode, self.env, self.params, self.index = episode, env, params, index
        self.rendered = ""
        self.pending_prompt: tuple[int, int] | None = None  # (tokens, chars) of a generation prompt not yet answered

    def turn_params(self, max_tokens: int) -> SamplingParams:
        seed = self.params.seed
        if seed is not None:  # a different stream per episode and turn, reproducible from the run's seed
            seed = seed + 100_003 * self.index + self.episode.num_turns
        return self.params.with_updates(n=1, max_tokens=max_tokens, seed=seed)


def run_episodes(generator: Generator, env: str, tasks: Sequence[Task],
                 sampling: SamplingParams | Sequence[SamplingParams], *, max_turns: int = 8,
                 max_episode_tokens: int | None = None, env_kwargs: dict[str, Any] | None = None) -> list[Episode]:
    """Play ``sampling.n`` episodes per task (``sampling`` may be one params set per task) with environment ``env``
    (a name or path for :func:`posttrain.environment.make_env`). Returns episodes in task order, samples in order."""
    per_task = [sampling] * len(tasks) if isinstance(sampling, SamplingParams) else list(sampling)
    if len(per_task) != len(tasks):
        raise ValueError(f"got {len(per_task)} sampling params for {len(tasks)} tasks")
    renderer = _Renderer(generator.tokenizer)
    budget = min(max_episode_tokens or generator.max_model_len, generator.max_model_len)

    episodes: list[Episode] = []
    active: list[_Running] = []
    for task, params in zip(tasks, per_task, strict=True):
        for j in range(params.n):
            ep = Episode(task=task, sample_index=j, env=env)
            episodes.append(ep)
            run = _start(ep, make_env(env, **(env_kwargs or {})), params, len(episodes) - 1, renderer)
            if run is not None:
                active.append(run)

    while active:
        ready = []
        for run in active:
            room = budget - len(run.episode.token_ids)
            if room < 1:
                _finish(run, "token_budget", renderer)
            else:
                ready.append((run, run.turn_params(min(run.params.max_tokens, room))))
        active = []
        if not ready:
            break
        results = generator.generate([run.episode.token_ids for run, _ in ready], [p for _, p in ready])
        for (run, _), samples in zip(ready, results, strict=True):
            if _play_turn(run, samples[0], renderer, max_turns):
                active.append(run)
    return episodes


def _start(ep: Episode, env: Environment, params: SamplingParams, index: int, renderer: _Renderer) -> _Running | None:
    """Reset the environment and tokenize the prompt; a failing reset ends the episode with ``env_error``."""
    run = _Running(ep, env, params, index)
    try:
        messages, tools = env.reset(ep.task)
    except Exception as e:  # an environment bug or a bad task row: report it on the episode, keep the batch going
        ep.end_reason, ep.error = "env_error", f"reset: {type(e).__name__}: {e}"
        env.close()
        return None
    ep.messages, ep.tools = [dict(m) for m in messages], list(tools or [])
    _extend_rendering(run, renderer, generation_prompt=False)
    _extend_rendering(run, renderer, generation_prompt=True)
    ep.prompt_len = len(ep.token_ids)
    return run


def _play_turn(run: _Running, sample: Sample, renderer: _Renderer, max_turns: int) -> bool:
    """Record one model turn, step the environment, append what the template renders next. True if it goes on."""
    ep = run.episode
    run.pending_prompt = None  # answered
    ids = list(sample.token_ids)
    _append(ep, ids, model=True, logprobs=sample.logprobs or [0.0] * len(ids))
    ep.finish_reasons.append(sample.finish_reason)

    # Close the turn as the template does. If the model ended with the template's own end token (ChatML's
    # <|im_end|>), that token is the start of the closing text and stays the model's; the rest is the template's.
    opening, closing = renderer.turn_frame(ep.messages, ep.tools, run.rendered)
    last = renderer.decode(ids[-1:]) if ids and ids[-1] in renderer.special_ids else ""
    wrote_end = bool(last) and closing.startswith(last)
    content = renderer.decode(ids[:-1] if wrote_end else ids)
    if opening:  # the template writes something before the content that its generation prompt does not
        ep.exact = False
    _append(ep, renderer.encode(closing[len(last):] if wrote_end else closing), model=False)
    assistant = {"role": "assistant", "content": content}
    ep.messages.append(assistant)
    run.rendered = renderer.render(ep.messages, ep.tools, False)

    try:
        result = run.env.step(dict(assistant))
    except Exception as e:  # environments must not crash on model output; if one does, the episode records it
        ep.error = f"step: {type(e).__name__}: {e}"
        _finish(run, "env_error", renderer)
        return False
    ep.rewards.append(float(result.reward))
    ep.infos.append(dict(result.info))
    ep.messages.extend(dict(m) for m in result.observations)
    _extend_rendering(run, renderer, generation_prompt=False)
    if result.done:
        _finish(run, "done", renderer)
        return False
    if ep.num_turns >= max_turns:
        _finish(run, "max_turns", renderer)
        return False
    _extend_rendering(run, renderer, generation_prompt=True)
    return True


def _extend_rendering(run: _Running, renderer: _Renderer, generation_prompt: bool) -> None:
    """Tokenize what the template adds to the conversation since the last rendering (observations, next prompt)."""
    ep = run.episode
    text = renderer.render(ep.messages, ep.tools, generation_prompt)
    if not text.startswith(run.rendered):
        raise UserError("the chat template re-renders earlier turns when the conversation grows (e.g. it strips "
                        "reasoning from past turns); multi-turn rollouts need a template whose rendering of a "
                        "conversation is a prefix of the rendering of its continuation")
    ids = renderer.encode(text[len(run.rendered):])
    _append(ep, ids, model=False)
    if generation_prompt:
        run.pending_prompt = (len(ids), len(text) - len(run.rendered))
    run.rendered = text


def _finish(run: _Running, reason: str, renderer: _Renderer) -> None:
    """End an episode: drop an unanswered generation prompt, check exactness, close the environment."""
    ep = run.episode
    ep.end_reason = reason
    if run.pending_prompt is not None:
        tokens, chars = run.pending_prompt
        del ep.token_ids[len(ep.token_ids) - tokens:], ep.mask[len(ep.mask) - tokens:]
        del ep.logprobs[len(ep.logprobs) - tokens:]
        run.rendered = run.rendered[:len(run.rendered) - chars]
        ep.prompt_len = min(ep.prompt_len, len(ep.token_ids))
        run.pending_prompt = None
    if ep.exact and renderer.decode(ep.token_ids) != run.rendered:
        ep.exact = False
    run.env.close()
