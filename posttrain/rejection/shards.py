"""Results on disk as they finish: one JSONL shard per batch, written to a temp file and renamed into place, so a
shard is either complete or absent, whatever moment the run is killed at.

``run.json`` next to the shards holds the fingerprint of everything that decides the samples (model, tasks, sampling,
seeds, batching). A run resumes only into a folder with the same fingerprint: finished batches are read back, the rest
are generated again, and the result equals an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.manifest import write_json

RUN_FILE = "run.json"


def fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class ShardStore:
    """``folder/batch_00000.jsonl`` ... plus ``folder/run.json``."""

    def __init__(self, folder: Path, run_fingerprint: str, resume: bool = True) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob("*.tmp"):  # a write the last run did not finish
            tmp.unlink()
        run_file = folder / RUN_FILE
        if run_file.is_file():
            previous = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint")
            if previous != run_fingerprint and resume:
                raise UserError(
                    f"{folder}: holds shards of a run with a different model, tasks, sampling, seed or batch size; "
                    "resuming would mix the two. Use a new output folder, or set resume=false to start over")
        if not resume:
            for shard in folder.glob("batch_*.jsonl"):
                shard.unlink()
        write_json(run_file, {"fingerprint": run_fingerprint})

    def path(self, batch_index: int) -> Path:
        return self.folder / f"batch_{batch_index:05d}.jsonl"

    def done(self, batch_index: int) -> bool:
        return self.path(batch_index).is_file()

    def write(self, batch_index: int, records: list[dict[str, Any]]) -> Path:
        path = self.path(batch_index)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    def read(self, batch_index: int) -> Iterator[dict[str, Any]]:
        path = self.path(batch_index)
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{line_no}: not valid JSON ({e.msg}); the shard was edited or damaged: "
                                    "delete it to regenerate its batch") from None
