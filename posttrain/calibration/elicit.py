"""Confidence elicitation: how sure a model is that a proposed answer is right, three ways.

* ``p_yes``: append a user turn asking "Is the proposed answer correct?" to the conversation (rendered by the
  model's own chat template, which may re-render the answer once a user turn follows it) and read the model's
  next-token distribution: ``P(yes) = Σ p(yes variants) / (Σ p(yes variants) + Σ p(no variants))``, where the variants
  are the single-token spellings of the words in ``yes_words`` / ``no_words``. Its logit,
  ``logsumexp(yes logits) - logsumexp(no logits)``, is what calibration tuning trains and temperature scaling rescales.
* ``verbalized``: the model is asked to write its confidence in ``<confidence>…</confidence>`` after its answer. A
  number in [0, 1] is a probability, ``N%`` a percentage; anything else (no tag, text, 80 without %, 120%) is
  unparseable, counted, and replaced by a documented fallback (0.5 by default).
* ``likelihood``: the answer's length-normalised sequence likelihood ``exp(mean log p(token))`` from the log-probs the
  sampler returned for the model's own tokens (the model's plain distribution for greedy or temperature-1 sampling).

The settings used to elicit are saved with a calibrated model (``calibration.json`` and a ``posttrain_calibration`` key
in its ``config.json``) so that a consumer elicits the same way and applies the fitted temperature:
:func:`load_calibration`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from posttrain.config import Schema
from posttrain.errors import UserError

Elicitation = Literal["p_yes", "verbalized", "likelihood"]
Message = dict[str, Any]

DEFAULT_QUERY = "Is the proposed answer correct? Answer yes or no."
YES_WORDS = ["yes", "Yes", "YES", " yes", " Yes"]
NO_WORDS = ["no", "No", "NO", " no", " No"]
VERBALIZED_INSTRUCTION = (
    "After your final answer, state how likely it is that your answer is correct, as a probability between 0 and 1, "
    "inside <confidence></confidence> tags, for example <confidence>0.7</confidence>."
)
CONFIDENCE_TAG = re.compile(r"<confidence>(.*?)</confidence>", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(%?)\s*")
CONFIG_KEY = "posttrain_calibration"  # the key in a calibrated model's config.json
CALIBRATION_FILE = "calibration.json"


class ElicitConfig(Schema):
    """The ``elicitation`` section of the calibrate config."""

    method: Elicitation = "p_yes"
    query: str = Field(DEFAULT_QUERY, min_length=1, description="p_yes: the user turn appended after the answer")
    yes_words: list[str] = Field(default_factory=lambda: list(YES_WORDS), min_length=1)
    no_words: list[str] = Field(default_factory=lambda: list(NO_WORDS), min_length=1)
    verbalized_instruction: str = Field(VERBALIZED_INSTRUCTION, min_length=1,
                                        description="verbalized: appended to the task's last user message")
    verbalized_fallback: float = Field(0.5, ge=0.0, le=1.0,
                                       description="verbalized: the confidence used when the tag is missing or "
                                       "unparseable (such answers are counted and reported)")
    batch_size: int = Field(8, ge=1, description="p_yes: conversations per forward pass")


# ------------------------------------------------------------------------------------------------------------ p_yes
@dataclass(frozen=True)
class YesNoTokens:
    """The token ids whose probabilities make up "yes" and "no", and the words that are not a single token."""

    yes_ids: list[int]
    no_ids: list[int]
    skipped: list[str]  # multi-token spellings: a next-token distribution cannot score them

    def to_dict(self) -> dict[str, Any]:
        return {"yes_ids": self.yes_ids, "no_ids": self.no_ids, "skipped_words": self.skipped}


def yes_no_tokens(tokenizer: Any, yes_words: Sequence[str] = YES_WORDS, no_words: Sequence[str] = NO_WORDS,
                  key: str = "elicitation") -> YesNoTokens:
    """Single-token spellings of the yes and no words (at least one of each), without overlap."""
    found: dict[str, list[int]] = {"yes_words": [], "no_words": []}
    skipped: list[str] = []
    for name, words in (("yes_words", yes_words), ("no_words", no_words)):
        for word in words:
            ids = tokenizer.encode(word, add_special_tokens=False)
            if len(ids) == 1:
                if ids[0] not in found[name]:
                    found[name].append(ids[0])
            else:
                skipped.append(word)
        if not found[name]:
            raise UserError(f"{key}.{name}: none of {list(words)!r} is a single token for this tokenizer; give at "
                            "least one word that is")
    both = set(found["yes_words"]) & set(found["no_words"])
    if both:
        raise UserError(f"{key}: token(s) {sorted(both)} are in both yes_words and no_words")
    return YesNoTokens(found["yes_words"], found["no_words"], skipped)


@dataclass(frozen=True)
class QueryInputs:
    """A conversation + the yes/no query, tokenized; ``answer_span`` is [start, end) of the proposed answer's tokens
    (its content and the end-of-turn text the template writes after it)."""

    input_ids: list[int]
    answer_span: tuple[int, int]


_SENTINEL = "\x00posttrain-proposed-answer\x00"


def query_inputs(tokenizer: Any, messages: Sequence[Message], query: str = DEFAULT_QUERY,
                 tools: list[dict[str, Any]] | None = None, chat: Any = None) -> QueryInputs:
    """Render ``messages`` (the last one is the assistant's proposed answer) + a user turn with ``query`` + the
    generation prompt with the chat template, tokenized as one text (so the ids are what the model would see).

    ``chat``: the model's :class:`~posttrain.models.chat.ChatFormat`, which puts the conversation in its own
    format (tool calls). The answer's span is found where the rendering differs from one with a sentinel as the
    answer, so a template that re-renders the answer once a user turn follows it (dropping its reasoning, trimming
    it) gets the span of what the model actually reads."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("the last message must be the assistant's proposed answer")
    view = chat.model_messages(list(messages), tools) if chat is not None else [dict(m) for m in messages]
    question = {"role": "user", "content": query}

    def render(msgs: list[Message], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tools=tools or None, tokenize=False,
                                             add_generation_prompt=generation_prompt)

    text = render([*view, question], True)
    sentinel = {"role": "assistant", "content": _SENTINEL}
    probe = render([*view[:-1], sentinel, question], True)
    start = _common_prefix(text, probe)
    end = max(start, len(text) - _common_suffix(text[start:], probe[start:]))
    alone = render([*view[:-1], sentinel], False)  # what the template writes after an answer: include it
    closing = alone[alone.rfind(_SENTINEL) + len(_SENTINEL):] if _SENTINEL in alone else ""
    if closing and text.startswith(closing, end):
        end += len(closing)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    first = next((i for i, (a, b) in enumerate(offsets) if b > start), len(offsets))
    last = next((i for i, (a, _) in enumerate(offsets) if a >= end), len(offsets))
    return QueryInputs(list(enc["input_ids"]), (first, max(first, last)))


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[len(a) - 1 - i] == b[len(b) - 1 - i]:
        i += 1
    return i


def yes_no_logit(last_logits: Any, tokens: YesNoTokens) -> Any:
    """logit P(yes) from next-token logits [..., vocab]: logsumexp over yes ids minus logsumexp over no ids."""
    import torch

    last = last_logits.float()
    return (torch.logsumexp(last[..., tokens.yes_ids], dim=-1)
            - torch.logsumexp(last[..., tokens.no_ids], dim=-1))


def left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """(input_ids, attention_mask, position_ids) with every row ending at the last column."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # padding must not shift the real tokens' positions
    return ids, mask, positions


def p_yes_logits(model: Any, tokenizer: Any, conversations: Sequence[Sequence[Message]], *,
                 config: ElicitConfig | None = None, tools: Sequence[list[dict[str, Any]] | None] | None = None,
                 tokens: YesNoTokens | None = None, chat: Any = None) -> np.ndarray:
    """The logit of P(yes) for each conversation (last message: the proposed answer), in one forward pass per
    ``config.batch_size`` conversations; only the last position's logits are computed."""
    import torch

    cfg = config or ElicitConfig()
    tokens = tokens or yes_no_tokens(tokenizer, cfg.yes_words, cfg.no_words)
    tools = list(tools) if tools is not None else [None] * len(conversations)
    rows = [query_inputs(tokenizer, m, cfg.query, t, chat).input_ids
            for m, t in zip(conversations, tools, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        with torch.no_grad():
            for start in range(0, len(rows), cfg.batch_size):
                ids, mask, pos = left_padded(rows[start:start + cfg.batch_size], pad)
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=pos.to(device), logits_to_keep=1).logits[:, -1]
                out.extend(yes_no_logit(logits, tokens).cpu().tolist())
    finally:
        model.train(was_training)
    return np.asarray(out, dtype=np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


# ------------------------------------------------------------------------------------------------------- verbalized
def parse_verbalized(text: str) -> float | None:
    """The confidence in the last ``<confidence>`` tag of ``text``: a number in [0, 1], or ``N%`` with N in [0, 100].
    None when there is no tag or its content is anything else."""
    found = CONFIDENCE_TAG.findall(text or "")
    if not found:
        return None
    match = _NUMBER.fullmatch(found[-1])
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2):
        value /= 100.0
    return value if 0.0 <= value <= 1.0 else None


def strip_confidence(text: str) -> str:
    """The answer without its confidence tags (so a verifier never reads the confidence as the answer)."""
    return CONFIDENCE_TAG.sub("", text or "").rstrip()


def verbalized_confidences(texts: Sequence[str], fallback: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(confidences, parsed mask): each text's parsed confidence, or ``fallback`` where it could not be parsed."""
    parsed = [parse_verbalized(t) for t in texts]
    ok = np.array([p is not None for p in parsed], dtype=bool)
    return np.array([fallback if p is None else p for p in parsed], dtype=np.float64), ok


def with_instruction(messages: Sequence[Message], instruction: str) -> list[Message]:
    """A copy of ``messages`` with ``instruction`` appended to the last user message (the task's question)."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = f"{m.get('content') or ''}\n\n{instruction}"
            return out
    raise UserError("verbalized elicitation: the task has no user message to append the instruction to")


# ------------------------------------------------------------------------------------------------------- likelihood
def sequence_likelihood(logprobs: Sequence[float]) -> float | None:
    """exp(mean log-prob) of the answer's tokens; None for an empty answer or non-finite log-probs."""
    values = np.asarray(list(logprobs), dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    return float(math.exp(min(0.0, float(values.mean()))))


# ------------------------------------------------------------------------------------------------------- consumers
def load_confidence_model(model_dir: str | Path) -> Any:
    """The model that reads p_yes confidences for a calibrated folder (float32, eval mode): the folder's own model,
    with its LoRA confidence adapter applied when calibration tuning saved one (``tuning.output: adapter``). Answers
    still come from the folder's model without the adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    adapter = (load_calibration(model_dir) or {}).get("confidence_adapter")
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, Path(model_dir) / adapter)
    return model.eval()


def load_calibration(model_dir: str | Path) -> dict[str, Any] | None:
    """The calibration settings a calibrate run saved with a model (method, elicitation settings, temperature), or
    None for a model that was never calibrated. Apply the temperature with
    ``posttrain.calibration.apply_temperature(scores, t, from_logits=...)`` as ``scores_are_logits`` says."""
    path = Path(model_dir) / CALIBRATION_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
    config = Path(model_dir) / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get(CONFIG_KEY)
    return None
