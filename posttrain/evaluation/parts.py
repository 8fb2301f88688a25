"""A finished model's samples on disk (``OUT/parts/<model>/``), so that a killed eval, or a re-run with one more model,
generates only what is missing.

A part is the model's verified samples (``samples.jsonl``), its chat answers (``answers.jsonl``) and ``part.json``
holding the fingerprint of everything that decided them (the model's folder hash, the sets, sampling, seeds, agent
and rollout settings, the chat prompts). ``part.json`` is written last, so a part without it is incomplete. A part
whose fingerprint differs is simply generated again: it is a cache, not a result.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.manifest import read_jsonl, write_json, write_jsonl

PART_FILE = "part.json"


@dataclass
class Part:
    samples: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)


def read_part(folder: Path, fingerprint: str) -> Part | None:
    """The part in ``folder`` if it is complete and was made with this fingerprint, else None."""
    marker = folder / PART_FILE
    if not marker.is_file():
        return None
    try:
        if json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
            return None
        return Part(read_jsonl(folder / "samples.jsonl"), read_jsonl(folder / "answers.jsonl"))
    except (OSError, json.JSONDecodeError):  # damaged: generate it again
        return None


def write_part(folder: Path, fingerprint: str, part: Part) -> None:
    """Replace ``folder`` with this part (the marker last, so a crash leaves no complete-looking part)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_jsonl(folder / "samples.jsonl", part.samples)
    write_jsonl(folder / "answers.jsonl", part.answers)
    write_json(folder / PART_FILE, {"fingerprint": fingerprint, "samples": len(part.samples),
                                    "answers": len(part.answers)})
