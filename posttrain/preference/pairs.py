"""On-policy preference pairs: of K scored responses to a prompt, the best is ``chosen`` and the worst ``rejected``.

A prompt gives no pair when fewer than two of its responses have a score (the scorer could not judge them), when all
scores tie (nothing to learn), or when the best and the worst responses are the same text. Each case is counted, so
a round's report says exactly why it has fewer pairs than prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Messages = list[dict[str, str]]


def select_pair(scores: Sequence[float | None], min_gap: float = 0.0) -> tuple[int, int] | None:
    """Indices of the best and the worst scored response, or None when there is no preference.

    ``None`` and non-finite scores are ignored. Scores within ``min_gap`` of each other count as a tie. Among equal
    scores the earliest response wins both ways (so the choice is deterministic).
    """
    valid = [(float(s), i) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    if len(valid) < 2:
        return None
    best = max(valid, key=lambda t: (t[0], -t[1]))
    worst = min(valid, key=lambda t: (t[0], t[1]))
    if best[0] - worst[0] <= min_gap:
        return None
    return best[1], worst[1]


@dataclass
class PairStats:
    """Why a round has as many pairs as it has."""

    prompts: int = 0
    pairs: int = 0
    skipped_ties: int = 0  # every scored response scored the same (within min_gap)
    skipped_unscored: int = 0  # fewer than two responses could be scored
    skipped_identical: int = 0  # best and worst differ in score but are the same text
    responses: int = 0
    unscored_responses: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def build_pairs(prompts: Sequence[dict[str, Any]], responses: Sequence[Sequence[str]],
                scores: Sequence[Sequence[float | None]],
                min_gap: float = 0.0) -> tuple[list[dict[str, Any]], PairStats]:
    """Best/worst-of-K pairs in TRL's conversational preference format.

    ``prompts[i]`` is a row with ``id``, ``bucket`` and ``prompt`` (messages); ``responses[i]`` its K response texts and
    ``scores[i]`` their scores (None where the scorer had no answer). Pairs keep the prompt's id and bucket and both
    scores.
    """
    if not (len(prompts) == len(responses) == len(scores)):
        raise ValueError(f"got {len(prompts)} prompts, {len(responses)} response lists and {len(scores)} score lists")
    stats = PairStats(prompts=len(prompts))
    pairs: list[dict[str, Any]] = []
    for row, texts, row_scores in zip(prompts, responses, scores, strict=True):
        if len(texts) != len(row_scores):
            raise ValueError(f"prompt {row.get('id')}: {len(texts)} responses but {len(row_scores)} scores")
        stats.responses += len(texts)
        scored = sum(1 for s in row_scores if s is not None and math.isfinite(s))
        stats.unscored_responses += len(texts) - scored
        picked = select_pair(row_scores, min_gap)
        if picked is None:
            if scored < 2:
                stats.skipped_unscored += 1
            else:
                stats.skipped_ties += 1
            continue
        best, worst = picked
        if texts[best] == texts[worst]:
            stats.skipped_identical += 1
            continue
        pairs.append({
            "id": row["id"], "bucket": row.get("bucket", ""), "prompt": row["prompt"],
            "chosen": [{"role": "assistant", "content": texts[best]}],
            "rejected": [{"role": "assistant", "content": texts[worst]}],
            "chosen_score": float(row_scores[best]), "rejected_score": float(row_scores[worst]),  # type: ignore[arg-type]
        })
    stats.pairs = len(pairs)
    return pairs, stats
