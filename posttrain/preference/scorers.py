"""Scorers: give each (prompt, response) a number, higher is better. Two kinds, selectable in a config:

- ``reward_model``: a sequence-classification model trained by ``posttrain rm`` (TRL RewardTrainer). The response is
  rendered with the chat template exactly as in reward training (prompt + assistant turn) and the model's single
  logit is the score. Runs in the calling process.
- ``judge``: an instruction-following LLM is asked to rate the response from 1 to 10; the score is the mean of the
  ratings it gave over ``n`` samples. The judge is served by its own rollout workers (``RolloutPool``), or, with
  ``judge_base_url``, by any OpenAI-compatible endpoint (``vllm serve``, a hosted API): ``judge_model`` is then the
  served model's name. Judge output is untrusted text: a reply with no usable number scores ``None`` (counted), never
  an exception; so does a request the endpoint fails or times out on (after ``judge_max_retries``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.sampling import SamplingConfig

Messages = list[dict[str, str]]

JUDGE_SYSTEM = "You are a strict, fair judge of an AI assistant's replies."
JUDGE_TEMPLATE = (
    "Rate the assistant's reply to the conversation below for helpfulness, correctness and safety, on a scale from "
    "{low} (worst) to {high} (best). A reply that helps with something harmful or illegal gets {low}; a correct, "
    "clear and safe reply gets {high}.\n\nConversation:\n{conversation}\n\nAssistant's reply:\n{response}\n\n"
    "Answer with the number only."
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PLACEHOLDER = re.compile(r"\{(low|high|conversation|response)\}")


class Scorer(Protocol):
    name: str

    def score(self, prompts: Sequence[Messages], responses: Sequence[str]) -> list[float | None]:
        """One score per (prompt, response); None when this response could not be scored."""

    def stats(self) -> dict[str, int]:
        """Counters worth reporting (responses that could not be scored and why)."""

    def close(self) -> None:
        """Release models and workers."""


class JudgeSampling(SamplingConfig):
    """Greedy, short answers by default (defaults in the schema, so overriding one key keeps the others)."""

    temperature: float | None = Field(0.0, ge=0.0)
    max_tokens: int | None = Field(8, ge=1)


class ScorerConfig(Schema):
    """The ``scorer`` section of the Chat track config."""

    kind: Literal["reward_model", "judge"] = "reward_model"
    reward_model: str | None = Field(None, description="folder written by `posttrain rm` (kind: reward_model)")
    batch_size: int = Field(16, ge=1, description="responses per reward-model forward pass")
    judge_model: str | None = Field(None, description="model folder or known name of the judge (kind: judge); with "
                                    "judge_base_url, the model name the endpoint serves")
    judge_base_url: str | None = Field(None, description="an OpenAI-compatible endpoint serving the judge, e.g. "
                                       "http://localhost:8000/v1 (`vllm serve`); unset: the judge runs on its own "
                                       "rollout workers")
    judge_api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's API "
                                   "key (keys never go in configs); unset or empty: no key, as for a local vllm "
                                   "serve")
    judge_timeout_s: float = Field(60.0, gt=0, description="per request to the endpoint")
    judge_max_retries: int = Field(2, ge=0, description="retries of a failed request (connection errors, 429, 5xx)")
    judge_concurrency: int = Field(8, ge=1, description="requests in flight to the endpoint at once")
    judge_rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="the judge's own workers")
    judge_sampling: JudgeSampling = Field(default_factory=lambda: JudgeSampling(),
                                          description="how the judge answers; n > 1 averages n ratings")
    judge_template: str = Field(JUDGE_TEMPLATE, description="must contain {conversation} and {response}")
    judge_scale: tuple[int, int] = Field((1, 10), description="lowest and highest rating")
    min_gap: float = Field(0.0, ge=0, description="scores closer than this tie (no pair is built from a tie)")

    @model_validator(mode="after")
    def _complete(self) -> ScorerConfig:
        if self.kind == "reward_model" and not self.reward_model:
            raise ValueError("kind is reward_model but reward_model (a `posttrain rm` output folder) is not set")
        if self.kind == "judge" and not self.judge_model:
            raise ValueError("kind is judge but judge_model (a model folder or known name, or the endpoint's model "
                             "name with judge_base_url) is not set")
        if self.judge_base_url is not None and not re.match(r"^https?://", self.judge_base_url):
            raise ValueError(f"judge_base_url: expected an http(s) URL such as http://localhost:8000/v1, got "
                             f"{self.judge_base_url!r}")
        missing = [p for p in ("{conversation}", "{response}") if p not in self.judge_template]
        if missing:
            raise ValueError(f"judge_template must contain {' and '.join(missing)}")
        low, high = self.judge_scale
        if not low < high:
            raise ValueError(f"judge_scale: expected [low, high] with low < high, got {list(self.judge_scale)}")
        return self


# ---- reward model ------------------------------------------------------------------------------------------------

def reward_scores(model: Any, pad_token_id: int, sequences: Sequence[Sequence[int]],
                  batch_size: int = 16) -> list[float]:
    """The reward model's score of each token sequence (right-padded batches, no gradients)."""
    import torch

    scores: list[float] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(sequences), batch_size):
                batch = [list(s) for s in sequences[start:start + batch_size]]
                width = max(len(s) for s in batch)
                ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, seq in enumerate(batch):
                    ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                    mask[row, :len(seq)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
                scores.extend(float(x) for x in logits[:, 0].float().cpu())
    finally:
        model.train(was_training)
    return scores


def conversation_ids(tokenizer: Any, prompt: Messages, response: str) -> list[int]:
    """Token ids of prompt + the assistant's response, rendered as the reward trainer renders a chosen conversation."""
    messages = [*prompt, {"role": "assistant", "content": response}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def check_reward_model(model_dir: str | Path, key: str) -> Path:
    """The folder if it holds a one-label sequence-classification model (what `posttrain rm` writes), else UserError."""
    from transformers import AutoConfig

    folder = Path(model_dir)
    if (folder / "adapter_config.json").is_file():  # `posttrain rm` with lora.merge: false
        import json

        adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        if adapter.get("task_type") != "SEQ_CLS":
            raise UserError(f"{key}: {folder} holds a LoRA adapter for {adapter.get('task_type')}, not a reward "
                            "model's (SEQ_CLS, as `posttrain rm` writes with lora.merge: false)")
        return folder
    if not (folder / "config.json").is_file():
        raise UserError(f"{key}: {folder} is not a model folder (no config.json); expected the output of "
                        "`posttrain rm`")
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "num_labels", None) != 1 or not any(
            a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise UserError(f"{key}: {folder} is not a reward model (expected a sequence-classification model with "
                        f"one label, as written by `posttrain rm`; got {config.architectures})")
    return folder


class RewardModelScorer:
    """A ``posttrain rm`` model in this process. Over-long conversations keep their end (where the score is read)."""

    name = "reward_model"

    def __init__(self, model_dir: str | Path, batch_size: int = 16, key: str = "scorer.reward_model") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        from posttrain.models.loading import load_tokenizer

        folder = check_reward_model(model_dir, key)
        self.tokenizer = load_tokenizer(folder)
        if (folder / "adapter_config.json").is_file():  # a LoRA reward model: the adapter on its base, merged once
            from peft import AutoPeftModelForSequenceClassification

            self.model = AutoPeftModelForSequenceClassification.from_pretrained(
                folder, num_labels=1, dtype=torch.float32).merge_and_unload().eval()
        else:
            self.model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else \
            self.tokenizer.eos_token_id
        self.model.config.pad_token_id = self.pad_token_id  # the head reads the last non-pad token of each row
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.batch_size = batch_size
        self._truncated = 0

    def score(self, prompts: Sequence[Messages], responses: Sequence[str]) -> list[float | None]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        sequences = []
        for prompt, response in zip(prompts, responses, strict=True):
            ids = conversation_ids(self.tokenizer, prompt, response)
            if len(ids) > self.max_length:
                self._truncated += 1
                ids = ids[-self.max_length:]
            sequences.append(ids)
        return list(reward_scores(self.model, self.pad_token_id, sequences, self.batch_size))

    def stats(self) -> dict[str, int]:
        return {"truncated": self._truncated}

    def close(self) -> None:
        self.model = None


# ---- LLM judge ---------------------------------------------------------------------------------------------------

def parse_judge_score(text: str, low: int = 1, high: int = 10) -> float | None:
    """The first number in the judge's reply if it lies in [low, high], else None (a reply like "7/10" gives 7)."""
    match = _NUMBER.search(text or "")
    if match is None:
        return None
    value = float(match.group())
    return value if low <= value <= high else None


def render_conversation(prompt: Messages) -> str:
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def judge_messages(template: str, low: int, high: int, prompt: Messages, response: str) -> Messages:
    """The judge's chat: ``template`` with ``{conversation}``, ``{response}``, ``{low}`` and ``{high}`` filled in."""
    values = {"low": str(low), "high": str(high), "conversation": render_conversation(prompt), "response": response}
    # One pass over the template only: braces inside the conversation or the response are never expanded.
    text = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


class JudgeScorer:
    """Ratings from an LLM served by rollout workers. The judge prompt is ``template`` with ``{conversation}``,
    ``{response}``, ``{low}`` and ``{high}`` filled in (other braces, and any in the texts, are left alone)."""

    name = "judge"

    def __init__(self, pool: Any, tokenizer: Any, sampling: Any, template: str = JUDGE_TEMPLATE,
                 scale: tuple[int, int] = (1, 10), owns_pool: bool = False) -> None:
        self.pool, self.tokenizer, self.sampling = pool, tokenizer, sampling
        self.template, self.low, self.high = template, scale[0], scale[1]
        self.owns_pool = owns_pool
        self._counts = {"judged": 0, "unparsed_ratings": 0, "unscored": 0, "too_long": 0}

    def judge_prompt(self, prompt: Messages, response: str) -> Messages:
        return judge_messages(self.template, self.low, self.high, prompt, response)

    def score(self, prompts: Sequence[Messages], responses: Sequence[str]) -> list[float | None]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        limit = self.pool.max_model_len - self.sampling.max_tokens
        ids, where = [], []
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            rendered = self.tokenizer.apply_chat_template(self.judge_prompt(prompt, response), tokenize=True,
                                                          add_generation_prompt=True, return_dict=True)["input_ids"]
            if len(rendered) > limit:
                self._counts["too_long"] += 1
                continue
            ids.append(list(rendered))
            where.append(i)
        scores: list[float | None] = [None] * len(prompts)
        for i, samples in zip(where, self.pool.generate(ids, self.sampling) if ids else [], strict=True):
            ratings = [parse_judge_score(s.text, self.low, self.high) for s in samples]
            self._counts["unparsed_ratings"] += sum(r is None for r in ratings)
            usable = [r for r in ratings if r is not None]
            scores[i] = sum(usable) / len(usable) if usable else None
        self._counts["judged"] += len(prompts)
        self._counts["unscored"] += sum(s is None for s in scores)
        return scores

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def close(self) -> None:
        if self.owns_pool:
            self.pool.shutdown()


class EndpointJudgeScorer:
    """Ratings from a judge behind an OpenAI-compatible chat-completions endpoint (``vllm serve``, a hosted API).

    Opening it lists the endpoint's models, so an unreachable endpoint, a refused key or a model it does not serve is
    an error before any work. After that, a request that fails (after the client's retries) or a reply with no
    rating scores None and is counted: the endpoint is a remote service and its failures are not the data's.
    """

    name = "judge"

    def __init__(self, config: ScorerConfig, key: str = "scorer") -> None:
        import openai

        assert config.judge_base_url is not None and config.judge_model is not None
        self.config, self.model = config, config.judge_model
        self.sampling = config.judge_sampling.resolve()
        self.low, self.high = config.judge_scale
        api_key = os.environ.get(config.judge_api_key_env) or "EMPTY"  # vllm serve without --api-key takes any
        self.client = openai.OpenAI(base_url=config.judge_base_url, api_key=api_key, timeout=config.judge_timeout_s,
                                    max_retries=config.judge_max_retries)
        self._counts = {"judged": 0, "unparsed_ratings": 0, "unscored": 0, "endpoint_errors": 0}
        self.first_error = ""
        self._check(key)

    def _check(self, key: str) -> None:
        import openai

        where = f"{key}.judge_base_url ({self.config.judge_base_url})"
        try:
            served = [m.id for m in self.client.models.list()]
        except openai.AuthenticationError:
            raise UserError(f"{where}: the endpoint refused the API key (set it in ${self.config.judge_api_key_env})"
                            ) from None
        except openai.APIConnectionError as e:
            raise UserError(f"{where}: cannot reach the endpoint ({e}); is the server (e.g. `vllm serve`) running?"
                            ) from None
        except openai.APIStatusError as e:
            raise UserError(f"{where}: listing its models failed with HTTP {e.status_code}: {e.message}") from None
        if self.model not in served:
            raise UserError(f"{key}.judge_model: {self.model!r} is not served by {self.config.judge_base_url}; it "
                            f"serves: {', '.join(served) or 'nothing'}")

    def _ratings(self, messages: Messages) -> list[float | None] | None:
        """The ratings of one judge request (n choices); None when the request failed."""
        import openai

        s = self.sampling
        try:
            reply = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=s.temperature, top_p=s.top_p,
                max_tokens=s.max_tokens, n=s.n, seed=s.seed, stop=list(s.stop) or None)
        except openai.OpenAIError as e:
            self.first_error = self.first_error or f"{type(e).__name__}: {e}"
            return None
        return [parse_judge_score(choice.message.content or "", self.low, self.high) for choice in reply.choices]

    def score(self, prompts: Sequence[Messages], responses: Sequence[str]) -> list[float | None]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        chats = [judge_messages(self.config.judge_template, self.low, self.high, p, r)
                 for p, r in zip(prompts, responses, strict=True)]
        with ThreadPoolExecutor(max_workers=self.config.judge_concurrency) as pool:
            results = list(pool.map(self._ratings, chats))
        scores: list[float | None] = []
        for ratings in results:
            if ratings is None:
                self._counts["endpoint_errors"] += 1
                scores.append(None)
                continue
            self._counts["unparsed_ratings"] += sum(r is None for r in ratings)
            usable = [r for r in ratings if r is not None]
            scores.append(sum(usable) / len(usable) if usable else None)
        self._counts["judged"] += len(prompts)
        self._counts["unscored"] += sum(s is None for s in scores)
        return scores

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def close(self) -> None:
        self.client.close()


def open_scorer(config: ScorerConfig, key: str = "scorer") -> Scorer:
    """Build the configured scorer (a judge starts its own rollout workers; close() stops them)."""
    if config.kind == "reward_model":
        assert config.reward_model is not None
        return RewardModelScorer(config.reward_model, batch_size=config.batch_size, key=f"{key}.reward_model")
    if config.judge_base_url is not None:
        return EndpointJudgeScorer(config, key)
    from posttrain.models.loading import load_tokenizer, resolve_model
    from posttrain.rollout.pool import RolloutPool

    assert config.judge_model is not None
    judge_dir = resolve_model(config.judge_model, key=f"{key}.judge_model")
    pool = RolloutPool.from_config(judge_dir, config.judge_rollout)
    return JudgeScorer(pool, load_tokenizer(judge_dir), config.judge_sampling.resolve(), config.judge_template,
                       config.judge_scale, owns_pool=True)
