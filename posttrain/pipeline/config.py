"""The pipeline's config file: the run folder, the starting model, and one section per stage.

Each stage section holds that stage's own config (what ``posttrain <command> --config`` reads), minus the inputs and
outputs the pipeline wires (``model``, ``data``, ``output_dir``, ...), which may still be set to override the wiring.
The sections are the registered pipeline stages (``posttrain.stages``); ``plugins`` names modules or ``.py`` files
that register more. Two keys of a section belong to the pipeline and are taken out before the stage sees it:

    enabled: false        # skip the stage; it passes its input model through to the next stage
    ray_task: {num_cpus: 8, num_gpus: 1}   # run the stage as a Ray task with these resources (a GPU node of a cluster)

A stage whose section is absent is not part of the run (as if ``enabled: false``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from posttrain.config import Schema, apply_overrides, read_yaml, validate
from posttrain.errors import UserError
from posttrain.models.settings import ToolFormatName
from posttrain.training.settings import Reporter


def stage_names() -> list[str]:
    from posttrain.stages import pipeline_stages

    return [s.name for s in pipeline_stages()]


class RayTask(Schema):
    """Resources of the Ray task a stage runs in (a cluster places it on a node that has them)."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved (also the stage's torch threads)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved (a GPU group for the stage's trainer)")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {gpu_node: 1}")


class StageControl(Schema):
    enabled: bool = True
    ray_task: RayTask | None = None


class PipelineConfig(Schema):
    """``posttrain pipeline`` config: these keys, and one section per pipeline stage (``data``, ``midtrain``, ...)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    run_dir: Path = Field(description="one folder per stage, the summary and the plots go here")
    model: str = Field(description="the starting model: a Hugging Face folder, a Hub id (org/name[@revision]) or a "
                       "known name")
    report_to: list[Reporter] | None = Field(
        None, description="set train.report_to of every training stage (tensorboard, wandb, trackio)")
    chat_template: str | None = Field(
        None, description="set chat_template of every stage (a .jinja file, Jinja text or chatml-tools); default: "
        "each model's own template")
    tool_format: ToolFormatName | None = Field(
        None, description="set tool_format of every stage; default: read off each model's template")
    plugins: list[str] = Field(default_factory=list, description="modules or .py files that register more stages")

    @model_validator(mode="before")
    @classmethod
    def _sections_are_stages(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = stage_names()
            for key, value in data.items():
                if key in cls.model_fields:
                    continue
                if key not in known:
                    raise PydanticCustomError("unknown_section", f"{key}: unknown key; expected one of: "
                                              f"{', '.join([*cls.model_fields, *known])}")
                if value is not None and not isinstance(value, dict):
                    raise PydanticCustomError("section", f"{key}: expected a section (a mapping of the stage's "
                                              f"config keys), got {type(value).__name__}")
        return data

    def section(self, stage: str) -> dict[str, Any] | None:
        return (self.model_extra or {}).get(stage)


def load_pipeline_config(path: Path, overrides: list[str] | None = None) -> tuple[PipelineConfig, str]:
    """The config file with ``KEY=VALUE`` overrides applied, its plugins loaded, checked at the top level ->
    (config, source name)."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides or []))
    source = str(path) + (" (with overrides)" if overrides else "")
    load_plugins(data.get("plugins") or [], Path(path).parent, source)
    return validate(PipelineConfig, data, source), source


def load_plugins(plugins: Any, base: Path, source: str) -> None:
    """Import each plugin (a dotted module, or a .py file relative to the config's folder); importing registers."""
    import importlib
    import importlib.util
    import sys

    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise UserError(f"{source}: plugins: expected a list of module names or .py files")
    for plugin in plugins:
        if plugin.endswith(".py"):
            file = (base / plugin) if not Path(plugin).is_absolute() else Path(plugin)
            if not file.is_file():
                raise UserError(f"{source}: plugins: {plugin}: file not found (relative paths are read from the "
                                f"config's folder, {base})")
            name = f"posttrain_plugin_{file.stem}"
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            try:
                importlib.import_module(plugin)
            except ImportError as e:
                raise UserError(f"{source}: plugins: {plugin}: cannot import it ({e})") from None


def split_control(section: dict[str, Any] | None, where: str) -> tuple[StageControl, dict[str, Any]]:
    """A stage section -> (the pipeline's keys, the stage's own config). An absent section is a disabled stage."""
    if section is None:
        return StageControl(enabled=False), {}
    own = dict(section)
    control = {k: own.pop(k) for k in ("enabled", "ray_task") if k in own}
    return validate(StageControl, control, where), own
