"""Generators for the small, deterministic, factually correct sample data under ``data_recipes/samples/``.

``scripts/make_sample_data.py`` writes them; the tests regenerate them and compare with the committed files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posttrain.data.samples import arithmetic, chat, coding, instruction_following, text, tool_calling

# file name -> generator. The chat-kind files use the formats their names suggest (see data_recipes/*.yaml).
SAMPLES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "chat.jsonl": chat.generate,
    "math.jsonl": arithmetic.generate,
    "code.jsonl": coding.generate,
    "tool_calling.jsonl": tool_calling.generate,
    "instruction_following.jsonl": instruction_following.generate,
    "reasoning_text.jsonl": text.reasoning,
    "replay_text.jsonl": text.replay,
}


def render(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_samples(folder: str | Path) -> dict[str, int]:
    """Write every sample file into ``folder``; returns rows per file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, make in SAMPLES.items():
        rows = make()
        (folder / name).write_text(render(rows), encoding="utf-8")
        counts[name] = len(rows)
    return counts
