"""Responses from the policy's rollout workers for chat prompts: render with the chat template, generate, and give
back text per prompt. Prompts too long to leave room for an answer are skipped and counted, never sent (an engine
would refuse the whole batch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from posttrain.rollout.sampling import SamplingConfig, SamplingParams

Messages = list[dict[str, str]]


def sample_responses(pool: Any, tokenizer: Any, prompts: Sequence[dict[str, Any]], sampling: SamplingConfig,
                     seed: int | None = None) -> tuple[list[list[dict[str, Any]] | None], int]:
    """For each prompt row (``prompt``, ``bucket``), the samples ``{"text", "finish_reason", "tokens"}``, or None when
    the prompt was too long. Sampling resolves per bucket; with ``seed``, prompt i gets ``seed + i``.
    Returns (samples per prompt, prompts skipped as too long)."""
    ids, params, where = [], [], []
    too_long = 0
    for i, row in enumerate(prompts):
        p: SamplingParams = sampling.resolve(row.get("bucket"))
        if seed is not None:
            p = p.with_updates(seed=seed + i)
        rendered = tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True,
                                                 return_dict=True)["input_ids"]
        if len(rendered) + p.max_tokens > pool.max_model_len:
            too_long += 1
            continue
        ids.append(list(rendered))
        params.append(p)
        where.append(i)
    results: list[list[dict[str, Any]] | None] = [None] * len(prompts)
    if ids:
        for i, samples in zip(where, pool.generate(ids, params), strict=True):
            results[i] = [{"text": s.text, "finish_reason": s.finish_reason, "tokens": len(s.token_ids)}
                          for s in samples]
    return results, too_long
