"""The stage graph: which folder each stage reads and writes, worked out before anything runs.

    data ----------> RUN/data/<name>           (midtrain, sft, preference, tasks, heldout, ...)
    base model --midtrain--> RUN/midtrain --sft--> RUN/sft --rs--> RUN/rs/model --+--rm--> RUN/rm
                                                                                 +--rl--> RUN/rl/{chat,logic}/model
    RUN/rl/*/model --merge (base: RUN/rs/model)--> RUN/merge --calibrate--> RUN/calibrate --eval--> RUN/eval

The registered stages are planned in order. Each enabled stage's section gets ``output_dir: RUN/<name>``, and the
stage's own ``wire`` fills in the inputs the section leaves out (the policy model, datasets of the data stage by
name, earlier outputs); it is validated by the stage's schema and names what it produced (``record``). A disabled
stage passes its input through (``skip``). Any string value of a section may also name an output as ``@name``
(``@sft``, ``@rl.chat``, ``@data.tasks``, ``@base``, ...).

Every enabled stage's config is validated and checked (``Stage.check``: its output folder, trackers, rollout engines)
here, before the first stage starts: a typo in the eval section fails in a second, not after an hour of training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from posttrain.config import validate
from posttrain.errors import UserError
from posttrain.pipeline.config import PipelineConfig, StageControl, split_control
from posttrain.stages import Stage, pipeline_stages


@dataclass
class PlannedStage:
    stage: Stage
    control: StageControl
    config: Any = None  # the validated stage config (None when disabled)
    products: dict[str, str] = field(default_factory=dict)  # output name -> folder, for the stages after it

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def enabled(self) -> bool:
        return self.control.enabled

    def config_dict(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json") if self.config is not None else {}


@dataclass
class Plan:
    run_dir: Path
    stages: list[PlannedStage]
    products: dict[str, str]

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


class Wiring:
    """What the stages planned so far produced: named outputs, the current policy model, the run's models for eval,
    and what a stage left for the wiring of later ones (see ``posttrain.stages.contract.Wiring``)."""

    def __init__(self, cfg: PipelineConfig, source: str) -> None:
        self.run_dir = Path(cfg.run_dir)
        self.source = source
        self.products: dict[str, str] = {"base": cfg.model}
        self.policy = cfg.model
        self.models: dict[str, str] = {"base": cfg.model}
        self.shared: dict[str, Any] = {}
        self._enabled: set[str] = set()
        self.stage = ""  # the stage being wired (for messages)

    def dataset(self, name: str, key: str) -> str:
        ref = f"data.{name}"
        if ref not in self.products:
            raise UserError(f"{self.source}: {self.stage}: {key}: not set, and the data stage builds no dataset "
                            f"named {name!r} (add data.datasets.{name}, or set {self.stage}.{key})")
        return self.products[ref]

    def tasks(self, given: Any, dataset: str, key: str) -> Any:
        """A task section: the data stage's dataset unless it names a recipe or a dataset itself (``limit`` etc.
        stay)."""
        if given is None:
            given = {}
        if isinstance(given, dict) and "recipe" not in given and "dataset" not in given:
            return {"dataset": self.dataset(dataset, key), **given}
        return given

    def enabled(self, stage: str) -> bool:
        return stage in self._enabled

    def produced(self, ref: str, path: str | Path, *, policy: bool = False, eval_name: str | None = None) -> None:
        self.products[ref] = str(path)
        if eval_name is not None:
            self.models[eval_name] = str(path)
        if policy:
            self.policy = str(path)


def plan(cfg: PipelineConfig, source: str) -> Plan:
    """Wire and validate every stage, in order."""
    w = Wiring(cfg, source)
    planned = []
    for stage in pipeline_stages():
        where = f"{source}: {stage.name}"
        control, own = split_control(cfg.section(stage.name), where)
        if control.ray_task is not None and stage.no_ray_task:
            raise UserError(f"{where}: ray_task: {stage.no_ray_task}")
        step = PlannedStage(stage, control)
        w.stage = stage.name
        before = dict(w.products)
        if control.enabled:
            own = _substitute(own, w.products, where)
            for key, value in (("report_to", cfg.report_to), ("chat_template", cfg.chat_template),
                               ("tool_format", cfg.tool_format)):
                if value is not None:
                    _set_everywhere(stage, own, key, value)
            own.setdefault("output_dir", str(w.run_dir / stage.name))
            stage.wire(own, w)  # type: ignore[misc]
            step.config = validate(stage.schema, own, where)
            stage.check(step.config, where)  # its output folder, trackers, rollout engines (rl: both tracks)
            stage.record(step.config, w)
            w._enabled.add(stage.name)
        else:
            stage.skip(w)
        step.products = {k: v for k, v in w.products.items() if before.get(k) != v}
        planned.append(step)
    return Plan(w.run_dir, planned, w.products)


# ------------------------------------------------------------------------------------------------------ references
def _substitute(value: Any, products: dict[str, str], where: str, key: str = "") -> Any:
    """``@name`` strings -> the folder of that output (``@@`` escapes a literal leading ``@``)."""
    if isinstance(value, dict):
        return {k: _substitute(v, products, where, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, products, where, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith("@@"):
        return value[1:]
    if isinstance(value, str) and value.startswith("@"):
        ref = value[1:]
        if ref not in products:
            raise UserError(f"{where}: {key}: {value}: no such output before this stage; expected one of "
                            + ", ".join(f"@{p}" for p in products))
        return products[ref]
    return value


# ------------------------------------------------------------------------ report_to, chat_template, tool_format
def _set_everywhere(stage: Stage, own: dict[str, Any], key: str, value: Any) -> None:
    """A pipeline-wide key (``report_to``, ``chat_template``, ``tool_format``) goes to every section that has it (a
    section's own value wins); a section that is another stage's config (rl's ``chat`` and ``logic``) is filled by
    that stage's schema."""
    from posttrain.stages import stage as registered

    _fill(own, stage.schema, key, value)
    for section, other in stage.nested.items():
        if isinstance(own.get(section), dict):
            _fill(own[section], registered(other).schema, key, value)


def _fill(data: dict[str, Any], schema: type[BaseModel], key: str, value: Any) -> None:
    """Set ``key`` wherever the schema has it under ``data``; absent sections are filled from their defaults."""
    for name, info in schema.model_fields.items():
        if name == key:
            data.setdefault(key, copy.deepcopy(value))
            continue
        sub = _model_in(info.annotation)
        if sub is None or not _has_key(sub, key):
            continue
        if name not in data:
            default = info.get_default(call_default_factory=True)
            if not isinstance(default, BaseModel):
                continue  # an optional section that is off stays off
            data[name] = default.model_dump(mode="json")
        if isinstance(data[name], dict):
            _fill(data[name], sub, key, value)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _has_key(schema: type[BaseModel], key: str, seen: frozenset = frozenset()) -> bool:
    if schema in seen:
        return False
    for name, info in schema.model_fields.items():
        sub = _model_in(info.annotation)
        if name == key or (sub is not None and _has_key(sub, key, seen | {schema})):
            return True
    return False
