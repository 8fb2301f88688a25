"""The RM stage and the Chat track around TRL's RewardTrainer and DPOTrainer: the pairwise ``train`` section, and
the series the manifests summarise."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from posttrain.training.settings import TrainSettings


class PairTrainSettings(TrainSettings):
    """``train`` for pairwise trainers (reward model, DPO): as for SFT, except that pairs cannot be packed."""

    @model_validator(mode="after")
    def _no_packing(self) -> PairTrainSettings:
        if self.packing:
            raise ValueError("packing: preference pairs cannot be packed (RewardTrainer and DPOTrainer train on whole "
                             "chosen/rejected sequences); set packing: false")
        return self


def log_series(log_history: list[dict[str, Any]], key: str) -> list[float]:
    """One logged training metric over steps (evaluation rows left out)."""
    return [float(row[key]) for row in log_history if key in row and isinstance(row[key], int | float)]


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """First, last and mean of a series (for manifests)."""
    if not values:
        return {"first": None, "last": None, "mean": None, "count": 0}
    return {"first": values[0], "last": values[-1], "mean": sum(values) / len(values), "count": len(values)}
