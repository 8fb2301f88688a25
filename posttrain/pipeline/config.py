"""The pipeline's config file: the run folder, the starting model, and one section per stage.

Each stage section holds that stage's own config (what ``posttrain <command> --config`` reads), minus the inputs and
outputs the pipeline wires (``model``, ``data``, ``output_dir``, ...), which may still be set to override the wiring.
Two keys of a section belong to the pipeline and are taken out before the stage sees it:

    enabled: false        # skip the stage; it passes its input model through to the next stage
    ray_task: {num_cpus: 8, num_gpus: 1}   # run the stage as a Ray task with these resources (a GPU node of a cluster)

A stage whose section is absent is not part of the run (as if ``enabled: false``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from posttrain.config import Schema, apply_overrides, read_yaml, validate
from posttrain.errors import UserError
from posttrain.stages.training import Reporter

STAGES = ("data", "midtrain", "sft", "rs", "rm", "rl", "merge", "calibrate", "eval")


class RayTask(Schema):
    """Resources of the Ray task a stage runs in (a cluster places it on a node that has them)."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved (also the stage's torch threads)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved (a GPU group for the stage's trainer)")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources, e.g. {gpu_node: 1}")


class StageControl(Schema):
    enabled: bool = True
    ray_task: RayTask | None = None


class PipelineConfig(Schema):
    """``posttrain pipeline`` config."""

    run_dir: Path = Field(description="one folder per stage, the summary and the plots go here")
    model: str = Field(description="the starting model: a Hugging Face folder or a known name")
    report_to: list[Reporter] | None = Field(
        None, description="set train.report_to of every training stage (tensorboard, wandb, trackio)")
    data: dict[str, Any] | None = Field(None, description="datasets to build: name -> {recipe, overrides, seed}")
    midtrain: dict[str, Any] | None = None
    sft: dict[str, Any] | None = None
    rs: dict[str, Any] | None = None
    rm: dict[str, Any] | None = None
    rl: dict[str, Any] | None = None
    merge: dict[str, Any] | None = None
    calibrate: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None

    def section(self, stage: str) -> dict[str, Any] | None:
        return getattr(self, stage)


class DatasetSpec(Schema):
    recipe: Path = Field(description="a bucket recipe YAML file")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE overrides for the recipe")
    seed: int | None = Field(None, description="replaces the recipe's seed")


class DataStageConfig(Schema):
    """The data stage: each named dataset is ``posttrain data build RECIPE --out OUTPUT_DIR/NAME``."""

    output_dir: Path
    datasets: dict[str, DatasetSpec] = Field(min_length=1)


def load_pipeline_config(path: Path, overrides: list[str] | None = None) -> tuple[PipelineConfig, str]:
    """The config file with ``KEY=VALUE`` overrides applied, checked at the top level -> (config, source name)."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides or []))
    source = str(path) + (" (with overrides)" if overrides else "")
    for stage in STAGES:
        if stage in data and data[stage] is not None and not isinstance(data[stage], dict):
            raise UserError(f"{source}: {stage}: expected a section (a mapping of the stage's config keys), got "
                            f"{type(data[stage]).__name__}")
    return validate(PipelineConfig, data, source), source


def split_control(section: dict[str, Any] | None, where: str) -> tuple[StageControl, dict[str, Any]]:
    """A stage section -> (the pipeline's keys, the stage's own config). An absent section is a disabled stage."""
    if section is None:
        return StageControl(enabled=False), {}
    own = dict(section)
    control = {k: own.pop(k) for k in ("enabled", "ray_task") if k in own}
    return validate(StageControl, control, where), own
