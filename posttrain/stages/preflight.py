"""The checks every stage makes before it writes or removes anything (``Stage.check`` and ``Stage.open``): what a
user can get wrong that schema validation cannot see, so that a mistake costs a second, not a finished run.

* **The output folder** (:func:`check_output_dir`): ``output_dir`` is not a file (nor below one), not one of the
  stage's own inputs (the model it trains, its data; nor a folder holding one, nor inside one), and holds nothing but
  this stage's own output: absent, empty, an earlier run of the same stage (its ``manifest.json``, or the mark
  :func:`claim_output_dir` leaves before the first write, so a killed run is recognised too), or a folder of such
  outputs. A built dataset, another stage's output or a plain model folder is refused, never overwritten.
* **The environment** (:func:`check_environment`): every ``report_to`` tracker of every trainer section is
  installed; every ``rollout`` section's engine is installed and takes its ``engine_kwargs``.

Every problem is a :class:`~posttrain.errors.UserError` (exit code 2) naming the key and the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from posttrain.errors import UserError
from posttrain.manifest import MANIFEST, STAGE_MARK
from posttrain.paths import check_not_an_input, listing

OUTPUT_KEYS = {"output_dir"}  # a stage's own folders (also a nested stage's, e.g. rl's chat.output_dir)
MARK = STAGE_MARK  # inside an output folder: the stage writing it (before its manifest exists)
INPUT_MARKERS = ("config.json", MANIFEST)  # a bare relative name is an input path when it is a model or an output


# ------------------------------------------------------------------------------------------------- the output folder
def check_output_dir(stage: str, cfg: Any, source: str = "config") -> Path:
    """Refuse an ``output_dir`` the stage ``stage`` (the name its manifests record) must not write; -> the folder."""
    out = Path(cfg.output_dir).expanduser()
    what = f"{source}: output_dir {out}"
    if out.exists() and not out.is_dir():
        raise UserError(f"{what}: is a file; expected a folder for the stage's outputs")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what}: {parent} is a file, not a folder")
            break
    check_not_an_input(out, list(input_paths(cfg)), f"{source}: output_dir")
    if out.is_dir() and not getattr(cfg, "overwrite", False):  # a stage's explicit overwrite: true (merge)
        other = _held_instead(out, stage)
        if other is not None:
            raise UserError(f"{what}: holds {other}, not an output of the {stage!r} stage; refusing to write into "
                            "it. Choose an empty or new folder, or remove it yourself if you mean to")
    return out


def claim_output_dir(stage: str, out: Path) -> None:
    """Mark ``out`` as ``stage``'s before the stage's first write, so a run killed before its manifest is still
    recognised as this stage's (and anything else's is not). A folder that holds something else (which only an
    explicit ``overwrite: true`` lets through) is not marked: until it is replaced, it stays what it was."""
    out.mkdir(parents=True, exist_ok=True)
    if _held_instead(out, stage) is not None:
        return
    mark = out / MARK
    if not mark.is_file() or mark.read_text(encoding="utf-8", errors="replace").strip() != stage:
        from posttrain.atomic import staged_file

        with staged_file(mark) as f:  # whole or absent: the processes of a distributed run all claim the folder
            f.write(stage + "\n")


def output_stage(folder: Path) -> str | None:
    """The stage whose output ``folder`` holds (its manifest's ``stage``, else its mark), or None."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        import json

        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("stage"), str):
            return data["stage"]
    mark = folder / MARK
    if mark.is_file():
        return mark.read_text(encoding="utf-8", errors="replace").strip() or None
    return None


def _held_instead(folder: Path, stage: str) -> str | None:
    """None when ``folder`` may hold ``stage``'s output (empty, ours, or only folders of ours), else what it holds."""
    entries = [p for p in folder.iterdir() if p.name != MARK and not p.name.startswith(f".{MARK}.")]  # or its temp
    if not entries:
        return None  # empty, or marked by a run that stopped before it wrote anything
    found = output_stage(folder)
    if found == stage:
        return None
    if found is not None:
        kind = "a built dataset (`posttrain data build`)" if found == "data" else f"the output of the {found!r} stage"
        return f"{kind} ({listing(folder)})"
    if all(p.is_dir() and output_stage(p) == stage for p in entries):
        return None  # a folder of this stage's outputs (the data stage's RUN/data/<name>)
    if (folder / "config.json").is_file():
        return f"a model folder ({listing(folder)})"
    return f"files that are not a posttrain output ({listing(folder)})"


def input_paths(cfg: Any) -> Iterator[Path]:
    """Every existing path a config names, except its output folders: ``Path`` values, strings with a path
    separator, and bare names of a model or output folder in the current folder (``model: my_model``)."""
    for value in _values(cfg.model_dump(mode="python")):
        if isinstance(value, Path):
            path = value
        elif isinstance(value, str) and value and "\n" not in value and len(value) < 4096:
            path = Path(value).expanduser()
            if os.sep not in value and not any((path / m).is_file() for m in INPUT_MARKERS):
                continue
        else:
            continue
        if path.exists():
            yield path


def _values(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in OUTPUT_KEYS:
                yield from _values(value)
    elif isinstance(node, list | tuple | set):
        for value in node:
            yield from _values(value)
    else:
        yield node


# ---------------------------------------------------------------------------------------------- the environment
def check_environment(cfg: BaseModel, source: str = "config") -> None:
    """Trackers and rollout engines a config asks for are installed and take what it gives them."""
    from posttrain.rollout.config import RolloutConfig
    from posttrain.training.arguments import check_reporters
    from posttrain.training.settings import TrainerSettings

    for key, section in _sections(cfg, ""):
        if isinstance(section, TrainerSettings):
            check_reporters(section.report_to, f"{source}: {key}.report_to")
        elif isinstance(section, RolloutConfig):
            section.check(f"{source}: {key}")


def _sections(node: Any, key: str) -> Iterator[tuple[str, BaseModel]]:
    if isinstance(node, BaseModel):
        yield key, node
        for name in type(node).model_fields:
            yield from _sections(getattr(node, name), f"{key}.{name}" if key else name)
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _sections(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _sections(value, f"{key}.{i}")
