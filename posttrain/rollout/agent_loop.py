"""Multi-turn episodes: the model talks to an environment (tool results, follow-up user turns) until the environment
says it is done, a turn limit or a token budget.

Every active episode's next turn goes into one ``generate`` call, so a batch of episodes costs one engine call per
turn, not one per episode. The model converses in its own format (:class:`posttrain.models.chat.ChatFormat`: its chat
template, its tool-call syntax); the environment sees posttrain's interchange messages (Hermes tool calls, reasoning
removed), and ``Episode.messages`` keeps them (with the model's reasoning in front of each turn's content).

Token accounting is exact, which the RL track relies on:

* the ids of a model turn are the ids the engine produced (never re-tokenized), with their sampling log-probs and
  mask 1;
* every prompt the model is given is exactly the chat template's rendering of the conversation so far (as the model
  would see it served): the template's end-of-turn text after a model turn, observations and the next generation
  prompt are what the template adds to the rendering, tokenized piece by piece, with mask 0;
* when the template renders the grown conversation differently from what the row already holds (it rewrites earlier
  turns: Qwen3 drops the reasoning of turns before the latest user message; Llama 3 trims whitespace the model wrote),
  the row ends there and a new row starts from the fresh rendering, as TRL's async GRPO forks rows: a row never
  holds tokens the model was not conditioned on. ``Episode.forked_rows`` holds the finished earlier rows; the
  episode's ``token_ids`` / ``mask`` / ``logprobs`` / ``prompt_len`` are its last row, the one with the final answer.
* ``Episode.exact`` is False only when the model's text does not survive the round trip (it stopped inside a
  multi-byte character, or on a different end token than the template writes).
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
    from posttrain.models.chat import ChatFormat
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
class TokenRow:
    """One training row of an episode: token ids, mask (1 = written by the model), sampling log-probs, and the
    number of tokens before its first model turn."""

    token_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_len: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"token_ids": self.token_ids, "mask": self.mask, "logprobs": self.logprobs,
                "prompt_len": self.prompt_len}


@dataclass
class Episode:
    """One conversation between the model and an environment, with exact token-level records."""

    task: Task
    sample_index: int  # which of the task's n episodes this is
    messages: list[Message] = field(default_factory=list)  # interchange form (what datasets and environments hold)
    tools: list[dict[str, Any]] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # the last row (see the module doc)
    mask: list[int] = field(default_factory=list)  # 1 = written by the model, 0 = prompt / template / environment
    logprobs: list[float] = field(default_factory=list)  # sampling log-prob where mask is 1, 0.0 elsewhere
    prompt_len: int = 0  # tokens of the last row before its first model turn
    forked_rows: list[TokenRow] = field(default_factory=list)  # earlier rows, cut where the template rewrote history
    model_messages: list[Message] = field(default_factory=list)  # the conversation as the model saw and wrote it
    finish_reasons: list[str] = field(default_factory=list)  # per model turn: "stop" or "length"
    rewards: list[float] = field(default_factory=list)  # per environment step
    infos: list[dict[str, Any]] = field(default_factory=list)
    end_reason: str = ""  # "done", "max_turns", "token_budget" or "env_error"
    error: str | None = None
    exact: bool = True  # every row decodes to the text the model was shown and wrote
    env: str = ""  # the environment that played it
    policy_version: int | None = None  # the optimizer step whose weights generated it (RL), when known
    verdict: Any = None  # its VerifyResult, once a verifier judged it (kept so that it is judged once)

    @property
    def num_turns(self) -> int:
        return len(self.finish_reasons)

    @property
    def rows(self) -> list[TokenRow]:
        """Every row of the episode, the last one included, in order."""
        return [*self.forked_rows, TokenRow(self.token_ids, self.mask, self.logprobs, self.prompt_len)]

    @property
    def trajectory(self) -> Trajectory:
        """What verifiers judge: the conversation with each assistant turn's final answer (no reasoning)."""
        from posttrain.models.chat import answer_view

        return Trajectory(task=self.task, messages=answer_view(self.messages))

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task.get("id"), "sample_index": self.sample_index, "messages": self.messages,
                "tools": self.tools, "token_ids": self.token_ids, "mask": self.mask, "logprobs": self.logprobs,
                "prompt_len": self.prompt_len, "forked_rows": [r.to_dict() for r in self.forked_rows],
                "model_messages": self.model_messages, "finish_reasons": self.finish_reasons,
                "rewards": self.rewards, "infos": self.infos, "end_reason": self.end_reason, "error": self.error,
                "exact": self.exact}


class _Renderer:
    """The model's chat format, and the bookkeeping that turns its renderings into token pieces."""

    def __init__(self, chat: ChatFormat) -> None:
        if not getattr(chat.tokenizer, "chat_template", None):
            raise UserError("the model's tokenizer has no chat template; multi-turn rollouts need one (set "
                            "chat_template)")
        self.chat = chat
        self.tokenizer = chat.tokenizer
        self.special_ids = set(chat.tokenizer.all_special_ids)

    def render(self, view: list[Message], tools: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.chat.render(view, tools, generation_prompt=generation_prompt)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def closing(self, view: list[Message], tools: list[dict[str, Any]]) -> str:
        """What the template writes after an assistant turn's content (for ChatML ``<|im_end|>\\n``), found by
        rendering a sentinel as the content."""
        probe = self.render([*view, {"role": "assistant", "content": _SENTINEL}], tools, False)
        cut = probe.rfind(_SENTINEL)
        return probe[cut + len(_SENTINEL):] if cut >= 0 else ""


def _append(ep: Episode, ids: list[int], model: bool, logprobs: list[float] | None = None) -> None:
    ep.token_ids.extend(ids)
    ep.mask.extend([1 if model else 0] * len(ids))
    ep.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


class _Running:
    """An episode in progress: its environment, the text its current row's ids stand for, and its turn params."""

    def __init__(self, episode: Episode, env: Environment, params: SamplingParams, index: int) -> None:
        self.episode, self.env, self.params, self.index = episode, env, params, index
        self.rendered = ""  # what the current row's token ids decode to
        self.row_has_model = False
        self.pending_prompt: tuple[int, int] | None = None  # (tokens, chars) of a generation prompt not yet answered

    def turn_params(self, max_tokens: int) -> SamplingParams:
        seed = self.params.seed
        if seed is not None:  # a different stream per episode and turn, reproducible from the run's seed
            seed = seed + 100_003 * self.index + self.episode.num_turns
        return self.params.with_updates(n=1, max_tokens=max_tokens, seed=seed)


def run_episodes(generator: Generator, env: str, tasks: Sequence[Task],
                 sampling: SamplingParams | Sequence[SamplingParams], *, max_turns: int = 8,
                 max_episode_tokens: int | None = None, env_kwargs: dict[str, Any] | None = None,
                 chat: ChatFormat | None = None) -> list[Episode]:
    """Play ``sampling.n`` episodes per task (``sampling`` may be one params set per task) with environment ``env``
    (a name or path for :func:`posttrain.environment.make_env`). Returns episodes in task order, samples in order.

    ``chat``: the model's chat format (template and tool-call format); by default the generator's tokenizer with
    its own template and the tool format read off it."""
    from posttrain.models.chat import chat_format

    per_task = [sampling] * len(tasks) if isinstance(sampling, SamplingParams) else list(sampling)
    if len(per_task) != len(tasks):
        raise ValueError(f"got {len(per_task)} sampling params for {len(tasks)} tasks")
    renderer = _Renderer(chat or chat_format(generator.tokenizer))
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
    if ep.tools:
        renderer.chat.check_tools("chat_template", "the environment's tasks")
    ep.model_messages = renderer.chat.model_messages(ep.messages, ep.tools)
    _extend_rendering(run, renderer, generation_prompt=False)
    _extend_rendering(run, renderer, generation_prompt=True)
    ep.prompt_len = len(ep.token_ids)
    return run


def _play_turn(run: _Running, sample: Sample, renderer: _Renderer, max_turns: int) -> bool:
    """Record one model turn, step the environment, append what the template renders next. True if it goes on."""
    from posttrain.models.chat import strip_reasoning

    ep = run.episode
    run.pending_prompt = None  # answered
    if not run.row_has_model:
        ep.prompt_len, run.row_has_model = len(ep.token_ids), True
    ids = list(sample.token_ids)
    _append(ep, ids, model=True, logprobs=sample.logprobs or [0.0] * len(ids))
    ep.finish_reasons.append(sample.finish_reason)

    # Close the turn as the template does. If the model ended with the template's own end token (ChatML's
    # <|im_end|>, Llama 3's <|eot_id|>), that token is the start of the closing text and stays the model's; the rest
    # is the template's.
    closing = renderer.closing(ep.model_messages, ep.tools)
    last = renderer.decode(ids[-1:]) if ids and ids[-1] in renderer.special_ids else ""
    wrote_end = bool(last) and closing.startswith(last)
    content = renderer.decode(ids[:-1] if wrote_end else ids)
    rest = closing[len(last):] if wrote_end else closing
    _append(ep, renderer.encode(rest), model=False)
    run.rendered += renderer.decode(ids) + rest
    ep.model_messages.append({"role": "assistant", "content": content})
    canonical = renderer.chat.from_model(content)
    ep.messages.append({"role": "assistant", "content": canonical})

    try:
        result = run.env.step({"role": "assistant", "content": strip_reasoning(canonical)})
    except Exception as e:  # environments must not crash on model output; if one does, the episode records it
        ep.error = f"step: {type(e).__name__}: {e}"
        _finish(run, "env_error", renderer)
        return False
    ep.rewards.append(float(result.reward))
    ep.infos.append(dict(result.info))
    observations = [dict(m) for m in result.observations]
    ep.messages.extend(observations)
    ep.model_messages.extend(renderer.chat.to_model(m) for m in observations)
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
    """Tokenize what the template adds to the conversation since the row's text (observations, next prompt); when
    the template no longer renders the conversation as a continuation of the row, start a new row from the fresh
    rendering (module doc)."""
    ep = run.episode
    text = renderer.render(ep.model_messages, ep.tools, generation_prompt)
    if not text.startswith(run.rendered):
        _fork(run, renderer)
        base = renderer.render(ep.model_messages, ep.tools, False) if generation_prompt else text
        if not text.startswith(base):  # the generation prompt rewrites the conversation too: take it whole
            base = ""
        _append(ep, renderer.encode(base), model=False)
        run.rendered = base
    ids = renderer.encode(text[len(run.rendered):])
    _append(ep, ids, model=False)
    if generation_prompt:
        run.pending_prompt = (len(ids), len(text) - len(run.rendered))
    run.rendered = text


def _fork(run: _Running, renderer: _Renderer) -> None:
    """End the current row (kept when the model wrote in it) and start an empty one."""
    ep = run.episode
    if run.row_has_model:
        if renderer.decode(ep.token_ids) != run.rendered:
            ep.exact = False
        ep.forked_rows.append(TokenRow(ep.token_ids, ep.mask, ep.logprobs, ep.prompt_len))
    ep.token_ids, ep.mask, ep.logprobs, ep.prompt_len = [], [], [], 0
    run.row_has_model, run.pending_prompt, run.rendered = False, None, ""


def _finish(run: _Running, reason: str, renderer: _Renderer) -> None:
    """End an episode: drop an unanswered generation prompt (and a row with no model turn after a fork), check
    exactness, close the environment."""
    ep = run.episode
    ep.end_reason = reason
    if run.pending_prompt is not None:
        tokens, chars = run.pending_prompt
        del ep.token_ids[len(ep.token_ids) - tokens:], ep.mask[len(ep.mask) - tokens:]
        del ep.logprobs[len(ep.logprobs) - tokens:]
        run.rendered = run.rendered[:len(run.rendered) - chars]
        ep.prompt_len = min(ep.prompt_len, len(ep.token_ids))
        run.pending_prompt = None
    if not run.row_has_model and ep.forked_rows:  # a fresh row holding only context: nothing to train, drop it
        last = ep.forked_rows.pop()
        ep.token_ids, ep.mask, ep.logprobs, ep.prompt_len = last.token_ids, last.mask, last.logprobs, last.prompt_len
        run.rendered = renderer.decode(ep.token_ids)
    if ep.exact and renderer.decode(ep.token_ids) != run.rendered:
        ep.exact = False
    run.env.close()
