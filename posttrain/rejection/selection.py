"""Which verified successes of one prompt become SFT rows.

Policies (``selection.policy``):

* ``all_distinct``: every passing sample, minus exact repeats (same assistant turns, same observations);
* ``best_k``: the ``k`` distinct passing samples with the highest reward (ties: lower sample index first); the
  reward is the verifier score unless a ``rewards`` section adds weights and your reward functions;
* ``shortest``: the ``k`` distinct passing samples with the fewest model-written tokens (ties: lower sample index).

``min_reward`` keeps only passing samples whose reward reaches it. All three drop exact repeats first: a repeated
trajectory adds no information and would weigh its prompt twice.
A passing sample whose last turn hit ``max_tokens`` is dropped when ``reject_truncated`` is on (the default): it
would teach the model to stop where it was cut off. Every passing sample that is left out gets a reason
(``truncated``, ``low_reward``, ``duplicate``, ``beyond_k``), so the manifest accounts for all of them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, model_validator

from posttrain.config import Schema

Policy = Literal["all_distinct", "best_k", "shortest"]


class SelectionConfig(Schema):
    policy: Policy = "all_distinct"
    k: int | None = Field(None, ge=1, description="samples kept per prompt at most (best_k/shortest: default 1)")
    reject_truncated: bool = Field(True, description="drop passing samples whose last turn hit max_tokens")
    min_reward: float | None = Field(None, description="drop passing samples whose reward is below this")

    @model_validator(mode="after")
    def _default_k(self) -> SelectionConfig:
        if self.policy in ("best_k", "shortest") and self.k is None:
            self.k = 1
        return self


def reward(sample: dict[str, Any]) -> float:
    """A sample's reward (shards written before rewards existed hold only the verify score)."""
    return float(sample.get("reward", sample["score"]))


def content_key(sample: dict[str, Any]) -> str:
    """What makes two samples of a prompt the same trajectory: every message after the prompt."""
    return json.dumps(sample["messages"][sample["prompt_messages"]:], sort_keys=True, ensure_ascii=False)


def select(samples: list[dict[str, Any]], config: SelectionConfig) -> tuple[list[int], dict[int, str]]:
    """Apply the policy to one prompt's samples (shard records). Returns the kept sample indices (in sample order)
    and, for each passing sample left out, why."""
    dropped: dict[int, str] = {}
    seen: set[str] = set()
    candidates = []
    for s in sorted((s for s in samples if s["passed"]), key=lambda s: s["sample_index"]):
        if config.reject_truncated and s["truncated"]:
            dropped[s["sample_index"]] = "truncated"
            continue
        if config.min_reward is not None and reward(s) < config.min_reward:
            dropped[s["sample_index"]] = "low_reward"
            continue
        key = content_key(s)
        if key in seen:
            dropped[s["sample_index"]] = "duplicate"
            continue
        seen.add(key)
        candidates.append(s)
    if config.policy == "best_k":
        candidates.sort(key=lambda s: (-reward(s), s["sample_index"]))
    elif config.policy == "shortest":
        candidates.sort(key=lambda s: (s["model_tokens"], s["sample_index"]))
    limit = config.k if config.k is not None else len(candidates)
    for s in candidates[limit:]:
        dropped[s["sample_index"]] = "beyond_k"
    return sorted(s["sample_index"] for s in candidates[:limit]), dropped
