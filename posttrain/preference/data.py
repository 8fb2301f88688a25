"""Where the Chat track's data comes from: built datasets (or recipes built on the fly), preference pairs, prompts,
and the held-out split.

The split is by prompt, not by row: a prompt's hash (with the seed) decides once and for all whether it is held out,
so a prompt held out for the win rate is never trained on, in offline pairs or on-policy rounds alike, whatever
dataset it appears in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

Messages = list[dict[str, str]]


def resolve_data(spec: str | Path, build_dir: str | Path, key: str) -> Path:
    """A recipe ``.yaml`` is built into ``build_dir`` (deterministic: building again gives the same rows); anything else
    is taken as a built dataset folder (checked by whoever loads it)."""
    path = Path(spec).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        return path
    if not path.is_file():
        raise UserError(f"{key}: recipe file not found: {path}")
    from posttrain.data import build_dataset

    build_dataset(path, build_dir)
    return Path(build_dir)


def last_user_prefix(messages: Messages) -> Messages | None:
    """A conversation cut after its last user message (what the model should answer next), or None if it has none."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return [dict(m) for m in messages[: i + 1]]
    return None


def load_prompts(folder: Path, key: str) -> tuple[list[dict[str, Any]], int]:
    """Prompts to sample from, from a preference (``prompt``), task (``messages``) or chat dataset (``messages`` cut
    after the last user turn). Returns rows ``{id, bucket, prompt}`` (each prompt once) and how many rows had no user
    message to answer."""
    from posttrain.data import load_built
    from posttrain.manifest import read_manifest

    if not (folder / "manifest.json").is_file():
        raise UserError(f"{key}: {folder} is not a built dataset (no manifest.json); expected a folder written by "
                        "`posttrain data build` or a recipe .yaml")
    kind = read_manifest(folder).get("kind")
    if kind not in ("preference", "task", "chat"):
        raise UserError(f"{key}: {folder} holds {kind!r} rows; expected a preference, task or chat dataset (rows with "
                        "prompts)")
    rows, no_user, seen = [], 0, set()
    for row in load_built(folder).to_list():
        prompt = row["prompt"] if kind == "preference" else last_user_prefix(row["messages"])
        if not prompt or prompt[-1]["role"] != "user":
            no_user += 1
            continue
        pid = prompt_id(prompt)
        if pid in seen:  # several pairs share a prompt: sample it once
            continue
        seen.add(pid)
        rows.append({"id": pid, "bucket": row["bucket"], "prompt": prompt})
    return rows, no_user


def prompt_id(prompt: Messages) -> str:
    payload = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def is_held_out(prompt: Messages, fraction: float, seed: int) -> bool:
    """Whether a prompt belongs to the held-out split (a fixed function of prompt content and seed)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{prompt_id(prompt)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_held_out(rows: list[dict[str, Any]], fraction: float, seed: int,
                   field: str = "prompt") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows) by each row's prompt, order kept."""
    train, held = [], []
    for row in rows:
        (held if is_held_out(row[field], fraction, seed) else train).append(row)
    return train, held
