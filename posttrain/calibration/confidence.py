"""Confidences read from a model's graded answers, by the configured elicitation (p_yes, verbalized, or the answer's
own likelihood), and the model in this process that reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from posttrain.calibration.answers import GradedAnswer
from posttrain.calibration.elicit import (
    ElicitConfig,
    YesNoTokens,
    p_yes_logits,
    sequence_likelihood,
    sigmoid,
    verbalized_confidences,
)


@dataclass
class Scores:
    """Confidences in [0, 1] for a list of answers, the raw scores temperature scaling works on (p_yes logits, or
    the confidences themselves) and counts worth reporting (e.g. unparseable verbalized confidences)."""

    confidences: np.ndarray
    raw: np.ndarray
    are_logits: bool
    stats: dict[str, Any]


def elicit(answers: list[GradedAnswer], cfg: ElicitConfig, model: Any, tokenizer: Any, tokens: YesNoTokens,
           chat: Any = None) -> Scores:
    """The configured elicitation on every answer. Answers the model never gave (an environment failed at reset)
    have nothing to be confident about: they get confidence 0 and are counted."""
    n = len(answers)
    given = [i for i, a in enumerate(answers) if a.answered]
    stats: dict[str, Any] = {"answers": n, "no_answer": n - len(given)}
    raw = np.zeros(n) if cfg.method != "p_yes" else np.full(n, -30.0)
    if cfg.method == "p_yes":
        raw[given] = p_yes_logits(model, tokenizer, [answers[i].messages for i in given], config=cfg,
                                  tools=[answers[i].tools or None for i in given], tokens=tokens, chat=chat)
        return Scores(sigmoid(raw), raw, True, stats)
    if cfg.method == "verbalized":
        conf, parsed = verbalized_confidences([answers[i].answer_text for i in given], cfg.verbalized_fallback)
        raw[given] = conf
        stats.update(parsed=int(parsed.sum()), unparseable=int((~parsed).sum()), fallback=cfg.verbalized_fallback)
        return Scores(raw.copy(), raw, False, stats)
    missing = 0
    for i in given:
        value = sequence_likelihood(answers[i].logprobs)
        missing += value is None
        raw[i] = 0.0 if value is None else value
    stats.update(no_logprobs=missing)
    return Scores(raw.copy(), raw, False, stats)


@dataclass
class Reader:
    """The model in this process that confidences are read from (p_yes), and what it needs."""

    model: Any
    stored_dtype: Any  # the dtype the model folder stores its weights in (a tuned model is saved in it too)
    tokenizer: Any
    tokens: YesNoTokens
    chat: Any = None  # the model's ChatFormat (its own template and tool-call format)

    def scores(self, answers: list[GradedAnswer], cfg: ElicitConfig) -> Scores:
        return elicit(answers, cfg, self.model, self.tokenizer, self.tokens, self.chat)
