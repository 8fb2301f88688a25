"""An example stage written outside posttrain: a model card next to the model it describes.

Add it to a pipeline with two keys of the pipeline config (the stage runs after ``sft`` and hands its folder on as
the model the next stage trains)::

    plugins: [examples/stages/model_card.py]   # relative to the config's folder, or a dotted module name
    model-card: {title: "My SFT model"}

It reads the model the pipeline wires to it (the current policy), and writes ``output_dir/``: the model's files
(weights hard-linked, not copied), ``README.md`` (what trained it and its numbers, from the model's own manifest)
and ``manifest.json``. The pipeline fingerprints, skips, resumes and summarises it like any built-in stage; the whole
contract is the ``Stage`` at the bottom and the ``register`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.manifest import MANIFEST, finished_run, model_sha256, start_fresh, write_manifest
from posttrain.models.folders import replace_with_model
from posttrain.models.loading import resolve_model
from posttrain.report import Progress, as_progress
from posttrain.stages import register
from posttrain.stages.contract import Stage, StageResult, Wiring, output_folder

NAME = "model-card"


class ModelCardConfig(Schema):
    model: str = Field(description="the model to describe (in a pipeline: the current policy)")
    output_dir: Path
    title: str = Field("posttrain model", description="the card's heading")


def run_model_card(cfg: ModelCardConfig, source: str = "config", progress: Progress | None = None) -> StageResult:
    report = as_progress(progress, NAME)
    out = Path(cfg.output_dir)
    model_dir = resolve_model(cfg.model, key=f"{source}: model")

    # 1. Same config and the same model as a finished run: nothing to do.
    config, inputs = cfg.model_dump(mode="json"), {"model": model_sha256(model_dir)}
    if finished_run(out, NAME, config, inputs):
        report.say(f"{out} already holds this card; nothing to do")
        return StageResult.read(out, model_dir=out)
    start_fresh(out)

    # 2. The model's files, then the card (a run killed in between has no manifest, so it runs again).
    replace_with_model(model_dir, out)
    trained_by = _read_json(model_dir / MANIFEST)
    lines = [f"# {cfg.title}", "", f"Base: `{trained_by.get('config', {}).get('model', model_dir)}`",
             f"Trained by: `posttrain {trained_by.get('stage', '?')}`", "", "| metric | value |", "|:---|---:|"]
    metrics = {k: v for k, v in trained_by.get("metrics", {}).items() if isinstance(v, int | float)}
    lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_manifest(out, {"stage": NAME, "config": config, "inputs": inputs,
                         "metrics": {"card_metrics": len(metrics), "described_stage": trained_by.get("stage")}})
    report.say(f"wrote {out / 'README.md'}")
    return StageResult.read(out, model_dir=out)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def wire(section: dict[str, Any], w: Wiring) -> None:
    section.setdefault("model", w.policy)


def summary(cfg: ModelCardConfig) -> dict[str, Any]:
    m = StageResult.read(cfg.output_dir).metrics
    return {"gains": [], "details": {"describes": m.get("described_stage"), "metrics": m.get("card_metrics")}}


STAGE = register(Stage(NAME, ModelCardConfig, run_model_card, "Write a model card next to the current model.",
                       model_dir=output_folder, policy=True, wire=wire, summary=summary), after="sft")
