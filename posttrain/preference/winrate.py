"""Win rate of one model's responses against another's on the same prompts, as judged by a scorer.

A win is a strictly higher score, a tie is a score within ``tie_tolerance``; the rate counts a tie as half a win, so
two identical models score 0.5. Prompts where either response could not be scored are left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass
class WinRate:
    wins: int
    ties: int
    losses: int
    unscored: int

    @property
    def compared(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float | None:
        """(wins + ties / 2) / compared, or None when nothing could be compared."""
        return (self.wins + 0.5 * self.ties) / self.compared if self.compared else None

    def to_dict(self) -> dict[str, float | int | None]:
        return {**asdict(self), "compared": self.compared, "rate": self.rate}


def win_rate(candidate: Sequence[float | None], baseline: Sequence[float | None],
             tie_tolerance: float = 0.0) -> WinRate:
    """Compare ``candidate[i]`` with ``baseline[i]`` for every prompt i."""
    if len(candidate) != len(baseline):
        raise ValueError(f"got {len(candidate)} candidate scores and {len(baseline)} baseline scores")
    wins = ties = losses = unscored = 0
    for c, b in zip(candidate, baseline, strict=True):
        if c is None or b is None or not (math.isfinite(c) and math.isfinite(b)):
            unscored += 1
        elif abs(c - b) <= tie_tolerance:
            ties += 1
        elif c > b:
            wins += 1
        else:
            losses += 1
    return WinRate(wins=wins, ties=ties, losses=losses, unscored=unscored)
