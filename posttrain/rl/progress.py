"""``metrics.jsonl``, written row by row while the track trains, so a killed run keeps its numbers and a person can
``tail -f`` it. A resumed run starts the file again from the log history its checkpoint restored (rows logged after
that checkpoint would be logged twice otherwise).

The same rows reach a caller's :class:`posttrain.report.Progress` as ``log`` events (see
``posttrain.training.callbacks``); the parallel runner shows them per track.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values (NaN/inf are not JSON; TRL logs None for a metric with no value)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


class MetricsLog(TrainerCallback):
    """Must come before any callback that logs in ``on_train_begin`` (it resets the file there)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.write_text("".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in state.log_history),
                                 encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = _clean({**logs, "step": state.global_step})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
