"""Shares and sampling: how many rows (or tokens) each bucket contributes, and which rows.

* ``count: N`` takes N rows, ``tokens: T`` takes rows until T tokens; both up-sample (every row repeated ``k`` times,
  then a seeded sample of the remainder) or down-sample (a seeded sample) as needed.
* ``weight: w`` buckets split what is left of ``total_rows`` (or ``total_tokens``) after the count/token buckets, in
  proportion to their weights. Without a total, the mix is the largest one that keeps the weights' proportions
  without repeating any row of a weight bucket.
* ``replay: true`` buckets are sized last: together they make ``replay_ratio`` of all output tokens (the
  Kanana-2 mid-training split of 200B reasoning + 50B replay tokens is replay_ratio 0.2), split by their weights.

Each bucket samples with its own generator seeded from (recipe seed, bucket name), so adding a bucket does not
reshuffle the others.

Up-sampling has a ceiling: a share that needs more than the recipe's ``max_repeat`` copies of a row (default 100) is an
error before any row is picked (``count: 1000000`` of 40 rows would repeat each 25,000 times); a recipe that means it
raises ``max_repeat`` (or sets it to null). Past ``WARN_COPIES`` copies the build warns either way.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from posttrain.data.recipe import Recipe
from posttrain.errors import UserError

Pick = tuple[int, int]  # (row index in the bucket's kept rows, repeat number: 0 for the first copy)
WARN_COPIES = 10  # more copies of one row than this are worth a warning even when the recipe allows them


def rng_for(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")])


def sample_count(n: int, target: int, rng: np.random.Generator) -> list[Pick]:
    """``target`` rows out of ``n``: whole repeats of every row, then a seeded sample without replacement."""
    full, rest = divmod(target, n)
    picks = [(i, r) for r in range(full) for i in range(n)]
    picks += [(int(i), full) for i in sorted(rng.choice(n, size=rest, replace=False))]
    return picks


def sample_tokens(tokens: list[int], budget: int, rng: np.random.Generator) -> list[Pick]:
    """Rows until ``budget`` tokens: whole repeats, then rows in seeded order until the budget is met (the last row
    may overshoot it by less than one row)."""
    available = sum(tokens)
    full, rest = divmod(budget, available)
    picks = [(i, r) for r in range(full) for i in range(len(tokens))]
    taken = 0
    chosen = []
    for i in rng.permutation(len(tokens)):
        if taken >= rest:
            break
        chosen.append(int(i))
        taken += tokens[i]
    picks += [(i, full) for i in sorted(chosen)]
    return picks


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Integers proportional to ``weights`` that sum exactly to ``total``."""
    wsum = sum(weights)
    exact = [total * w / wsum for w in weights]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


@dataclass
class BucketPlan:
    picks: list[Pick] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)  # {"rows": N} or {"tokens": T}, what was asked for

    @property
    def copies(self) -> int:
        """The most copies of one row in the plan (1: no row repeated)."""
        return max((r for _, r in self.picks), default=0) + 1

    def sampling(self, available: int) -> str:
        if any(r > 0 for _, r in self.picks):
            return "up"
        return "all" if len(self.picks) == available else "down"


def plan_mix(recipe: Recipe, tokens: dict[str, list[int]], where: str) -> dict[str, BucketPlan]:
    """Which rows of each bucket go into the mix. ``tokens[b]`` are the token counts of bucket b's kept rows."""
    plans = {name: BucketPlan() for name in recipe.buckets}

    def check_copies(name: str, copies: int, asked: str) -> None:
        if recipe.max_repeat is not None and copies > recipe.max_repeat:
            raise UserError(f"{where}: buckets.{name}: {asked} needs {copies} copies of its rows, more than max_repeat "
                            f"{recipe.max_repeat}; give it more rows or a smaller share, or raise max_repeat (null: no "
                            "limit) if you really mean to repeat them")

    def take_rows(name: str, n: int) -> None:
        check_copies(name, -(-n // len(tokens[name])), f"{n} rows from {len(tokens[name])}")
        plans[name].target = {"rows": n}
        plans[name].picks = sample_count(len(tokens[name]), n, rng_for(recipe.seed, name))

    def take_tokens(name: str, budget: int) -> None:
        check_copies(name, -(-budget // sum(tokens[name])), f"{budget} tokens from {sum(tokens[name])}")
        plans[name].target = {"tokens": budget}
        plans[name].picks = sample_tokens(tokens[name], budget, rng_for(recipe.seed, name)) if budget else []

    def rows_of(names: list[str]) -> int:
        return sum(len(plans[n].picks) for n in names)

    def tokens_of(names: list[str]) -> int:
        return sum(tokens[n][i] for n in names for i, _ in plans[n].picks)

    for name in recipe.buckets:
        if not tokens[name] or sum(tokens[name]) == 0:
            raise UserError(f"{where}: buckets.{name}: no rows left after filtering, so its share cannot be met "
                            "(see the drop counts above; loosen the filters or add sources)")

    main = [n for n, b in recipe.buckets.items() if not b.replay]
    fixed = [n for n in main if recipe.buckets[n].share.weight is None]
    weighted = [n for n in main if recipe.buckets[n].share.weight is not None]
    for name in fixed:
        share = recipe.buckets[name].share
        if share.count is not None:
            take_rows(name, share.count)
        else:
            take_tokens(name, share.tokens or 0)

    if weighted:
        weights = [recipe.buckets[n].share.weight or 0.0 for n in weighted]
        if recipe.total_tokens is not None:
            left = recipe.total_tokens - tokens_of(fixed)
            if left <= 0:
                raise UserError(f"{where}: total_tokens {recipe.total_tokens} leaves nothing for the weight buckets "
                                f"{', '.join(weighted)} after the count/token buckets took {tokens_of(fixed)}")
            for name, budget in zip(weighted, largest_remainder(left, weights), strict=True):
                take_tokens(name, budget)
        else:
            if recipe.total_rows is not None:
                left = recipe.total_rows - rows_of(fixed)
                if left < len(weighted):
                    raise UserError(f"{where}: total_rows {recipe.total_rows} leaves {max(left, 0)} rows for the "
                                    f"weight buckets {', '.join(weighted)} after the count/token buckets took "
                                    f"{rows_of(fixed)}")
            else:  # the largest mix with these proportions that repeats no row
                wsum = sum(weights)
                left = min(math.floor(len(tokens[n]) * wsum / w + 1e-9) for n, w in zip(weighted, weights, strict=True))
            targets = largest_remainder(left, weights)
            if recipe.total_rows is None:
                targets = [min(t, len(tokens[n])) for t, n in zip(targets, weighted, strict=True)]
            for name, n in zip(weighted, targets, strict=True):
                take_rows(name, n)

    replay = [n for n, b in recipe.buckets.items() if b.replay]
    if replay:
        budget = round(recipe.replay_ratio / (1 - recipe.replay_ratio) * tokens_of(main))
        weights = [recipe.buckets[n].share.weight or 0.0 for n in replay]
        for name, part in zip(replay, largest_remainder(budget, weights), strict=True):
            take_tokens(name, part)
    return plans


def repeat_warnings(plans: dict[str, BucketPlan]) -> list[str]:
    """One line per bucket that repeats a row more than WARN_COPIES times."""
    return [f"buckets.{name}: up-sampled to {plan.copies} copies of some rows (a model sees each of them "
            f"{plan.copies} times per epoch)" for name, plan in plans.items() if plan.copies > WARN_COPIES]
