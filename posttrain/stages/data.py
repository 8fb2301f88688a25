"""The pipeline's data stage: each named bucket recipe built into ``RUN/data/<name>`` (``posttrain data build RECIPE
--out DIR`` for each, deterministic). Later stages read the datasets by name (``sft`` reads ``data.sft``, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.manifest import read_manifest
from posttrain.report import Progress, as_progress
from posttrain.stages.contract import Stage, StageResult, Wiring

NAME = "data"


class DatasetSpec(Schema):
    recipe: Path = Field(description="a bucket recipe YAML file")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE overrides for the recipe")
    seed: int | None = Field(None, description="replaces the recipe's seed")


class DataStageConfig(Schema):
    """The data stage: each named dataset is ``posttrain data build RECIPE --out OUTPUT_DIR/NAME``."""

    output_dir: Path
    datasets: dict[str, DatasetSpec] = Field(min_length=1)


def run_data(cfg: DataStageConfig, source: str = "config", progress: Progress | None = None) -> StageResult:
    from posttrain.data import build_dataset

    report = as_progress(progress, NAME)
    STAGE.open(cfg, source)  # a folder of data builds (each build checks its own folder again)
    for dataset, spec in cfg.datasets.items():
        report.say(f"building {dataset} from {spec.recipe}")
        build_dataset(spec.recipe, Path(cfg.output_dir) / dataset, spec.overrides, spec.seed, log=report.say)
    return StageResult(Path(cfg.output_dir), {"stage": NAME, "datasets": list(cfg.datasets)})


def recipe_sources(recipe: Path, overrides: list[str], seed: int | None) -> dict[str, Path]:
    """The local files a recipe reads (sources, eval sets, tokenizer), by label."""
    from posttrain.data import load_recipe

    loaded = load_recipe(recipe, overrides, seed)
    found = {}
    for bucket, spec in loaded.recipe.buckets.items():
        for i, src in enumerate(spec.sources):
            if src.path is not None:
                found[f"{bucket}.{i}"] = loaded.source_path(src)
    for name, eval_set in loaded.recipe.eval_sets.items():
        found[f"eval_sets.{name}"] = (loaded.base / eval_set.path).resolve()
    if loaded.recipe.tokenizer:
        found["tokenizer"] = (loaded.base / loaded.recipe.tokenizer).resolve()
    return found


def sources(cfg: DataStageConfig) -> dict[str, str]:
    """Every local source file of the recipes: a changed source rebuilds its dataset."""
    return {f"datasets.{dataset}.sources.{label}": str(path)
            for dataset, spec in cfg.datasets.items()
            for label, path in recipe_sources(spec.recipe, spec.overrides, spec.seed).items()}


def dataset_folders(cfg: DataStageConfig) -> list[Path]:
    return [Path(cfg.output_dir) / dataset for dataset in cfg.datasets]


def datasets_made(cfg: DataStageConfig, w: Wiring) -> None:
    for name in cfg.datasets:
        w.produced(f"data.{name}", Path(cfg.output_dir) / name)


def data_summary(cfg: DataStageConfig) -> dict[str, Any]:
    details = {}
    for dataset in cfg.datasets:
        m = read_manifest(Path(cfg.output_dir) / dataset)
        details[dataset] = {"kind": m.get("kind"), "rows": m["metrics"].get("rows"),
                            "tokens": m["metrics"].get("tokens")}
    return {"gains": [], "details": details}


def _nothing_to_wire(section: dict[str, Any], w: Wiring) -> None:
    return None  # the recipes are the section's own


STAGE = Stage(NAME, DataStageConfig, run_data, "Build each named bucket recipe into RUN/data/<name>.",
              wire=_nothing_to_wire, produces=datasets_made, pass_through=lambda w: None, summary=data_summary,
              work_folders=dataset_folders, extra_inputs=sources, command=False)
