"""What the pipeline remembers between runs: one record per stage (fingerprint, input and output hashes, timing) and
a cache of file hashes, so that deciding "nothing changed" costs a few ``stat`` calls, not re-reading every weight.

A stage's fingerprint is the hash of its resolved config and of the folders it reads (their content hashes). A stage
is skipped when its record says ``done`` with the same fingerprint and its outputs still hash to what it recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from posttrain.manifest import file_sha256, write_json

STATE_DIR = "pipeline"  # inside the run folder: resolved configs, stage records, the hash cache
SKIPPED_DIRS = {"checkpoints", "logs", "shards", ".ray"}  # work files, not results


class HashCache:
    """sha256 of files, remembered by (path, size, mtime, inode): a file that did not change is not read again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        if path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.entries = {}  # a damaged cache only costs re-hashing
        self.dirty = False

    def file(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self.entries.get(key)
        if hit is not None and hit[:3] == stamp:
            return hit[3]
        digest = file_sha256(path)
        self.entries[key] = [*stamp, digest]
        self.dirty = True
        return digest

    def folder(self, folder: Path) -> str:
        """Hash of every result file under ``folder`` (relative names + contents; work folders left out)."""
        root = folder.resolve()
        h = hashlib.sha256()
        for p in sorted(_result_files(root)):
            h.update(str(p.relative_to(root)).encode())
            h.update(self.file(p).encode())
        return h.hexdigest()

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self.entries)
            self.dirty = False


def _result_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        found += [Path(dirpath) / f for f in filenames if not f.endswith(".tmp")]
    return found


def input_hash(spec: str, cache: HashCache) -> str:
    """A stage input: a local folder (hashed by content) or a known model name (its fetched folder)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return cache.folder(path)
    if path.is_file():
        return cache.file(path)
    from posttrain.models.loading import resolve_model

    return cache.folder(resolve_model(spec, key="model"))


OUTPUT_KEYS = {"output_dir"}  # a stage's own folders are outputs, never inputs
PATH_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl", ".parquet", ".py", ".csv")
PY_OBJECT = re.compile(r"^[^\n:]+\.py:[A-Za-z_][A-Za-z0-9_.]*$")


def stage_inputs(stage: Any, cfg: Any) -> dict[str, str]:
    """What decides a stage's result besides its config: every existing path or known model its config names (not
    its own output folders), and what the stage itself says it reads (a recipe's source files)."""
    from posttrain.models.fetch import KNOWN_MODELS

    found: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in OUTPUT_KEYS:
                    walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}")
        elif isinstance(value, str) and PY_OBJECT.match(value):  # "rewards.py:brevity": a function in a file
            if Path(value.rsplit(":", 1)[0]).expanduser().is_file():
                found[key] = value.rsplit(":", 1)[0]
        elif isinstance(value, str) and _looks_like_path(value, KNOWN_MODELS):
            if value.lower() in KNOWN_MODELS or Path(value).expanduser().exists():
                found[key] = value

    walk(cfg.model_dump(mode="json"), "")
    if stage.extra_inputs is not None:
        found.update(stage.extra_inputs(cfg))
    return found


def _looks_like_path(value: str, known: Any) -> bool:
    if "\n" in value or len(value) > 4096:
        return False
    return value.lower() in known or "/" in value or value.endswith(PATH_SUFFIXES)


def fingerprint(stage: str, config: dict[str, Any], inputs: dict[str, str]) -> str:
    """What decides a stage's result: its resolved config and the hashes of what it reads."""
    blob = json.dumps({"stage": stage, "config": config, "inputs": inputs}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class StageRecord:
    """``RUN/pipeline/<stage>.state.json``: ``running`` while a stage runs, ``done`` once its outputs are complete."""

    def __init__(self, run_dir: Path, stage: str) -> None:
        self.path = run_dir / STATE_DIR / f"{stage}.state.json"
        self.data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.data = {}

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    @property
    def fingerprint(self) -> str | None:
        return self.data.get("fingerprint")

    def start(self, fp: str, inputs: dict[str, str]) -> None:
        self.data = {"status": "running", "fingerprint": fp, "inputs": inputs, "started": time.time()}
        self._write()

    def finish(self, outputs: dict[str, str], metrics: dict[str, Any], duration_s: float,
               where: dict[str, Any] | None = None) -> None:
        self.data.update(status="done", outputs=outputs, metrics=metrics, duration_s=round(duration_s, 1),
                         finished=time.time(), where=where or {})
        self._write()

    def fail(self, error: str, duration_s: float) -> None:
        self.data.update(status="failed", error=error, duration_s=round(duration_s, 1))
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)
