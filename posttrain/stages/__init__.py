"""The stages, one module each, and the one ordered registry the CLI, the pipeline graph and the summary read.

Each module ends with its :class:`~posttrain.stages.contract.Stage` description (see ``contract.py``); this list
names each once, in pipeline order (stages without pipeline wiring are commands only). Adding a stage is one module
and one line here, or, outside this package, :func:`register` (e.g. from a module named by the pipeline's
``plugins`` key or an installed package's ``posttrain.stages`` entry point).
"""

from __future__ import annotations

from importlib import import_module

from posttrain.errors import UserError
from posttrain.stages.contract import Stage, StageResult

BUILTIN = ("data", "midtrain", "sft", "sample", "rs", "rm", "rl_chat", "rl_logic", "rl", "merge", "calibrate", "eval")
_registry: list[Stage] = []


def stages() -> list[Stage]:
    """Every registered stage, in pipeline order."""
    if not _registry:
        _registry.extend(import_module(f"posttrain.stages.{module}").STAGE for module in BUILTIN)
        _load_entry_points()
    return list(_registry)


def stage(name: str) -> Stage:
    for s in stages():
        if s.name == name:
            return s
    raise UserError(f"no stage named {name!r}; expected one of {', '.join(s.name for s in stages())}")


def pipeline_stages() -> list[Stage]:
    return [s for s in stages() if s.in_pipeline]


def register(new: Stage, *, after: str | None = None) -> Stage:
    """Add a stage (after the named one in pipeline order, else at the end); registering a name again replaces it."""
    current = stages()
    if any(s.name == new.name for s in current):
        _registry[:] = [new if s.name == new.name else s for s in _registry]
        return new
    at = len(_registry) if after is None else [s.name for s in current].index(stage(after).name) + 1
    _registry.insert(at, new)
    return new


def unregister(name: str) -> None:
    stage(name)
    _registry[:] = [s for s in _registry if s.name != name]


def _load_entry_points() -> None:
    """Installed plugins: ``[project.entry-points."posttrain.stages"] my_stage = "my_pkg.my_stage"``; importing the
    module registers its stage."""
    from importlib.metadata import entry_points

    for point in entry_points(group="posttrain.stages"):
        point.load()


__all__ = ["Stage", "StageResult", "pipeline_stages", "register", "stage", "stages", "unregister"]
