"""Prompts for rejection sampling: task rows from a bucket recipe (kind ``task``) or a built task dataset, checked and
cut into batches.

Batches are single-environment (one agent loop and one verifier pool per batch) and deterministic: environments in
the order they first appear, rows in dataset order within an environment, ``batch_size`` rows per batch. Batch ``i``
therefore holds the same rows in every run with the same data and batch size, which is what lets a resumed run skip
finished batches and regenerate the others with the very same seeds.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from posttrain.config import Schema
from posttrain.environment import load_env_class
from posttrain.errors import UserError
from posttrain.manifest import file_sha256


class TasksConfig(Schema):
    """Where the prompts come from: exactly one of a recipe (built into ``OUT/tasks``) or a built dataset folder."""

    recipe: str | None = Field(None, description="bucket recipe YAML of kind 'task'")
    recipe_overrides: list[str] = Field(default_factory=list, description="KEY=VALUE overrides for the recipe")
    dataset: str | None = Field(None, description="folder written by `posttrain data build` from a task recipe")
    limit: int | None = Field(None, ge=1, description="use only the first N rows")

    @model_validator(mode="after")
    def _one_source(self) -> TasksConfig:
        if (self.recipe is None) == (self.dataset is None):
            raise ValueError("set exactly one of recipe (a task recipe YAML) or dataset (a built task dataset folder)")
        return self


@dataclass
class TaskRow:
    """One prompt: its position in the dataset, its labels, and the task record its environment plays."""

    index: int
    id: str
    bucket: str
    source: str
    env: str
    task: dict[str, Any]


@dataclass
class Batch:
    index: int
    env: str
    rows: list[TaskRow]


def load_tasks(config: TasksConfig, build_dir: Path, key: str = "tasks") -> tuple[list[TaskRow], dict[str, str]]:
    """The task rows, and the input hashes to record (the recipe is built into ``build_dir`` first)."""
    from posttrain.data import build_dataset, load_built
    from posttrain.manifest import read_manifest

    if config.recipe is not None:
        build_dataset(config.recipe, build_dir, config.recipe_overrides)
        folder, where = build_dir, f"{key}.recipe ({config.recipe})"
    else:
        folder, where = Path(config.dataset), f"{key}.dataset ({config.dataset})"
        if not folder.is_dir():
            raise UserError(f"{where}: folder not found; expected a folder written by `posttrain data build`")
    manifest = read_manifest(folder)
    if manifest.get("kind") != "task":
        raise UserError(f"{where}: holds a {manifest.get('kind')!r} dataset; rejection sampling needs prompts from a "
                        "recipe of kind 'task' (env task records)")
    dataset = load_built(folder)
    inputs = {f"{key}:data.parquet": file_sha256(folder / "data.parquet"), **manifest.get("inputs", {})}
    rows = []
    for i, rec in enumerate(dataset):
        if config.limit is not None and i >= config.limit:
            break
        rows.append(_task_row(i, rec, where))
    if not rows:
        raise UserError(f"{where}: no task rows")
    _check_envs(rows, where)
    inputs.update(task_file_inputs(rows, key))
    return rows, inputs


PY_FILE = re.compile(r"^[^\n:]{1,4096}\.py(:[A-Za-z_][A-Za-z0-9_.]*)?$")


def task_file_inputs(rows: list[TaskRow], key: str = "tasks") -> dict[str, str]:
    """The code files the tasks name (tool domains in ``domain_modules``, an MCP server's script, a check function's
    file): their content decides the verdicts, so an edited file is a new input, like an edited dataset."""
    found: dict[str, str] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and PY_FILE.match(value):
            path = value.rsplit(":", 1)[0] if value.count(":") == 1 and not value.endswith(".py") else value
            if path not in found and Path(path).is_file():
                found[path] = file_sha256(Path(path))

    for row in rows:
        for field in ("domain_modules", "mcp_servers", "check"):
            walk(row.task.get(field))
    return {f"{key}:file:{path}": digest for path, digest in found.items()}


def _task_row(index: int, rec: dict[str, Any], where: str) -> TaskRow:
    row_where = f"{where}: row {index} (id {rec.get('id')})"
    try:
        task = json.loads(rec["task"])
    except (TypeError, json.JSONDecodeError) as e:
        raise UserError(f"{row_where}: column 'task' is not a JSON task record ({e})") from None
    if not isinstance(task, dict):
        raise UserError(f"{row_where}: column 'task' must hold a JSON object, got {type(task).__name__}")
    env = rec.get("env")
    if not isinstance(env, str) or not env:
        raise UserError(f"{row_where}: column 'env' must name an environment")
    task.setdefault("id", rec["id"])
    return TaskRow(index=index, id=rec["id"], bucket=rec["bucket"], source=rec["source"], env=env, task=task)


def _check_envs(rows: list[TaskRow], where: str) -> None:
    """Every environment named by a row must load, before any model starts (the first bad row is named)."""
    checked: set[str] = set()
    for row in rows:
        if row.env in checked:
            continue
        try:
            load_env_class(row.env)
        except UserError as e:
            raise UserError(f"{where}: row {row.index} (id {row.id}, task {row.task.get('id')}): {e.message}") from None
        checked.add(row.env)


def make_batches(rows: list[TaskRow], batch_size: int) -> list[Batch]:
    by_env: dict[str, list[TaskRow]] = {}
    for row in rows:
        by_env.setdefault(row.env, []).append(row)
    batches = []
    for env, env_rows in by_env.items():
        for start in range(0, len(env_rows), batch_size):
            batches.append(Batch(index=len(batches), env=env, rows=env_rows[start:start + batch_size]))
    return batches


def row_seed(seed: int, row: TaskRow) -> int:
    """A prompt's sampling seed: fixed by the run's seed, the row's id and position (not by batch or worker)."""
    digest = hashlib.sha256(f"{seed}:{row.index}:{row.id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 31 bits: every engine accepts it
