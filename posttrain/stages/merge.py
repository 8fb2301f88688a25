"""`posttrain merge`: combine models fine-tuned from one base (the Chat- and Logic-track RL models) into one model.

The stage, top to bottom:

1. Check the inputs. ``base`` is a model folder (or a known model name); each of ``models`` is a full HF folder or a
   peft LoRA adapter on that base. Architecture, tensor names and shapes, and tokenizer vocabularies must match the
   base; a mismatch is a UserError naming the config key, the folder and the tensor.
2. If ``output_dir`` already holds this merge (same config, same input hashes), stop: re-running is a no-op.
3. Fold each LoRA adapter into a float32 copy of the base with peft (``posttrain.merging.lora``). From here on every
   input is a full model.
4. Let mergekit merge tensor by tensor on CPU (memory stays near one tensor per input) into a staging folder next to
   ``output_dir``; see ``posttrain.merging.methods`` for what each method computes.
5. Copy the base's tokenizer, chat template and generation config, measure how far the merge moved from each input,
   write ``manifest.json``, and move the staging folder into place (a killed run never leaves half a model).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.manifest import (
    STAGE_MARK,
    TRACKED_PACKAGES,
    finished_run,
    library_versions,
    model_sha256,
    write_manifest,
)
from posttrain.merging.distances import l2_distances
from posttrain.merging.inputs import (
    TOKENIZER_FILES,
    MergeInput,
    check_architecture,
    check_same_tensors,
    check_same_tokenizer,
    has_tokenizer,
    input_manifest,
    inspect_input,
    model_shapes,
    read_json,
)
from posttrain.merging.lora import check_adapter, merge_adapter
from posttrain.merging.methods import COMPUTE_DTYPE, mergekit_config, method_parameters, run_mergekit
from posttrain.models.loading import resolve_model
from posttrain.report import Progress, as_progress
from posttrain.stages.contract import Stage, StageResult, Wiring, output_folder

NAME = "merge"
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_DENSITY = 0.2  # TIES paper: keep the top 20% of each task vector


class MergeModel(Schema):
    path: str = Field(description="A full HF model folder or a peft LoRA adapter folder, fine-tuned from `base`.")
    weight: float = Field(1.0, allow_inf_nan=False, description="This model's weight w_i.")


class MergeConfig(Schema):
    base: str = Field(description="The model every input was fine-tuned from (folder or known name).")
    models: list[MergeModel] = Field(min_length=1)
    method: Literal["linear", "task_arithmetic", "ties"] = "ties"
    density: float | None = Field(None, gt=0, le=1, validate_default=True,
                                  description="ties only: fraction of each task vector kept per tensor "
                                              f"(default {DEFAULT_DENSITY}).")
    scale: float | None = Field(None, allow_inf_nan=False, validation_alias=AliasChoices("scale", "lambda"),
                                validate_default=True,
                                description="task_arithmetic/ties: factor on the merged task vector (default 1).")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="Output weights' dtype (default: the base's). Arithmetic is always float32.")
    output_dir: str
    overwrite: bool = Field(False, description="Replace output_dir if it holds something else.")

    # Settings a method does not use are errors (never silently ignored); the ones it uses get their defaults, so
    # --dry-run shows what will run. Fields validate in order, so `method` is known when density and scale are.
    @model_validator(mode="before")
    @classmethod
    def _one_name_for_scale(cls, data: Any) -> Any:
        if isinstance(data, dict) and "scale" in data and "lambda" in data:
            raise PydanticCustomError("merge", "give either scale or lambda (two names for one setting), not both")
        return data

    @field_validator("method")
    @classmethod
    def _weights_fit_method(cls, method: str, info: ValidationInfo) -> str:
        weights = [m.weight for m in info.data.get("models", [])]
        if method == "linear" and weights and sum(weights) == 0:
            raise PydanticCustomError("merge", "method linear normalizes the weights by their sum, which is 0 here")
        bad = next((i for i, w in enumerate(weights) if w <= 0), None)
        if method == "ties" and bad is not None:
            raise PydanticCustomError("merge", f"method ties takes a weighted mean, so weights must be > 0; "
                                               f"models.{bad}.weight is {weights[bad]}")
        return method

    @field_validator("density")
    @classmethod
    def _density_for_ties(cls, density: float | None, info: ValidationInfo) -> float | None:
        method = info.data.get("method")
        if method == "ties":
            return DEFAULT_DENSITY if density is None else density
        if density is not None and method is not None:
            raise PydanticCustomError("merge", f"density is used only by method ties (method is {method}); remove it")
        return density

    @field_validator("scale")
    @classmethod
    def _scale_for_task_vectors(cls, scale: float | None, info: ValidationInfo) -> float | None:
        method = info.data.get("method")
        if method == "linear" and scale is not None:
            raise PydanticCustomError("merge", "scale/lambda is not used by method linear (a weighted average); "
                                               "remove it")
        if method in ("task_arithmetic", "ties"):
            return 1.0 if scale is None else scale
        return scale


def run_merge(cfg: MergeConfig, source: str = "config", progress: Progress | None = None) -> StageResult:
    """Merge ``cfg.models`` onto ``cfg.base`` into ``cfg.output_dir``."""
    report = as_progress(progress, NAME)
    say = report.say
    started = time.monotonic()
    out = STAGE.open(cfg, source)  # the output folder is not an input nor (unless overwrite) something else

    # 1. Inputs must all fit the base.
    base = resolve_model(cfg.base, key=f"{source}: base")
    if not has_tokenizer(base):
        raise UserError(f"base: {base} has no tokenizer; the merged model takes the base's tokenizer and chat template")
    base_shapes = model_shapes(base, "base")
    items = [inspect_input(m.path, f"models.{i}.path") for i, m in enumerate(cfg.models)]
    for item in items:
        check_input(base, base_shapes, item)
    check_distinct(base, items, out)

    # 2. Nothing to do when the output already is this merge.
    hashes = {str(p.resolve()): model_sha256(p) for p in (base, *(item.path for item in items))}
    if finished_run(out, NAME, cfg.model_dump(mode="json"), hashes, ignore=("overwrite",)):
        say(f"{out} already holds this merge (same config and input hashes); nothing to do")
        return StageResult.read(out, model_dir=out)
    if out.exists() and (not out.is_dir() or any(p.name != STAGE_MARK for p in out.iterdir())) and not cfg.overwrite:
        raise UserError(f"output_dir: {out} exists and holds something else; choose another folder or set "
                        "overwrite=true")

    out_dtype = cfg.dtype or base_dtype(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.lora.", dir=out.parent))
    try:
        # 3. LoRA adapters become full float32 models.
        full: list[Path] = []
        for i, item in enumerate(items):
            if item.kind == "lora":
                say(f"folding LoRA adapter {item.path} into the base with peft")
                full.append(merge_adapter(item, base, scratch / f"model{i}"))
            else:
                full.append(item.path)

        # 4. mergekit does the arithmetic.
        weights = [m.weight for m in cfg.models]
        engine_config = mergekit_config(cfg.method, base, full, weights, cfg.density, cfg.scale, out_dtype)
        say(f"merging {len(items)} model(s) with {cfg.method} (mergekit, {COMPUTE_DTYPE} arithmetic, "
            f"{out_dtype} output)")
        run_mergekit(engine_config, staging, show_progress=not report.forwarding)

        # 5. Tokenizer from the base, distances, manifest, then into place.
        for name in (*TOKENIZER_FILES, "generation_config.json"):
            if (base / name).is_file():
                shutil.copy2(base / name, staging / name)
        distances = l2_distances(staging, base, {m.path: path for m, path in zip(cfg.models, full, strict=True)})
        write_manifest(staging, build_manifest(cfg, base, items, hashes, engine_config, distances))
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"merged model written to {out} in {time.monotonic() - started:.1f}s; L2 distance of the merge from each "
        "input: " + ", ".join(f"{k} {v:.4g}" for k, v in distances["l2_merged_to_input"].items()))
    return StageResult.read(out, model_dir=out)


def check_input(base: Path, base_shapes: dict[str, tuple[int, ...]], item: MergeInput) -> None:
    if item.kind == "lora":
        check_adapter(item, base, base_shapes)
    else:
        check_architecture(base, item)
        check_same_tensors(base, base_shapes, item, model_shapes(item.path, item.key))
    check_same_tokenizer(base, item)


def check_distinct(base: Path, items: list[MergeInput], out: Path) -> None:
    """No input twice, and the output folder (which may be replaced) neither is nor holds nor sits in an input."""
    seen = {base.resolve(): "base"}
    for item in items:
        where = item.path.resolve()
        if where in seen:
            raise UserError(f"{item.key}: {item.path} is the same folder as {seen[where]}")
        seen[where] = item.key
    target = out.expanduser().resolve()
    for where, key in seen.items():
        if target == where or where.is_relative_to(target) or target.is_relative_to(where):
            raise UserError(f"output_dir: {out} overlaps {key} ({where}); write the merge somewhere else")


def base_dtype(base: Path) -> str:
    """The dtype the base is stored in (what the output keeps unless `dtype` says otherwise)."""
    config = read_json(base / "config.json", "base")
    dtype = config.get("dtype") or config.get("torch_dtype")
    return dtype if dtype in DTYPES else "float32"


def build_manifest(cfg: MergeConfig, base: Path, items: list[MergeInput], hashes: dict[str, str],
                   engine_config: dict[str, Any], distances: dict[str, Any]) -> dict[str, Any]:
    shared, per_input = method_parameters(cfg.method, [m.weight for m in cfg.models], cfg.density, cfg.scale)
    models = []
    for model, item, params in zip(cfg.models, items, per_input, strict=True):
        entry: dict[str, Any] = {
            "path": model.path,
            "kind": item.kind,
            "weight": model.weight,
            "sha256": hashes[str(item.path.resolve())],
            "manifest": input_manifest(item.path),
            "merged_via": "peft merge_and_unload onto the base (float32), then mergekit" if item.kind == "lora"
            else "mergekit",
            "parameters": params,
            "l2_merged_to_input": distances["l2_merged_to_input"][model.path],
            "l2_input_to_base": distances["l2_input_to_base"][model.path],
        }
        if item.kind == "lora":
            entry["adapter_base_model_name_or_path"] = read_json(item.path / "adapter_config.json",
                                                                 item.key).get("base_model_name_or_path")
        models.append(entry)
    return {
        "stage": NAME,
        "config": cfg.model_dump(mode="json"),
        "inputs": hashes,
        "base": {"path": cfg.base, "resolved": str(base), "sha256": hashes[str(base.resolve())],
                 "manifest": input_manifest(base)},
        "models": models,
        "method": cfg.method,
        "parameters": shared,
        "engine": {"name": "mergekit", "config": _without_scratch_paths(engine_config, cfg, items)},
        "metrics": distances,
        "versions": library_versions((*TRACKED_PACKAGES, "mergekit")),
    }


def _without_scratch_paths(engine_config: dict[str, Any], cfg: MergeConfig, items: list[MergeInput]) -> dict[str, Any]:
    """The engine config as recorded: a folded adapter's temporary folder is named by the adapter it came from."""
    recorded = {**engine_config, "models": [dict(m) for m in engine_config["models"]]}
    for entry, model, item in zip(recorded["models"], cfg.models, items, strict=True):
        if item.kind == "lora":
            entry["model"] = f"{model.path} (LoRA folded into the base)"
    return recorded


def replace_folder(staging: Path, out: Path) -> None:
    """Move the finished staging folder to ``out``, replacing what is there only after the new one is complete."""
    if not out.exists():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    out.rename(old / out.name)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- in the pipeline
def wire_merge(section: dict[str, Any], w: Wiring) -> None:
    """The RL tracks' models onto the policy they started from."""
    if "models" not in section:
        tracks = w.shared.get("rl_tracks") or []
        if not tracks:
            raise UserError(f"{w.source}: merge: models: not set and the rl stage is not enabled, so there are no "
                            "track models to merge; disable merge (enabled: false) or set merge.models")
        section["models"] = [{"path": w.products[f"rl.{t}"]} for t in tracks]
    section.setdefault("base", w.policy)


def merge_skipped(w: Wiring) -> None:
    """A disabled merge passes its first input through: the first track's model (the policy without RL)."""
    tracks = w.shared.get("rl_tracks") or []
    first = w.products[f"rl.{tracks[0]}"] if tracks else w.policy
    w.products[NAME] = first
    w.policy = first


def merge_summary(cfg: MergeConfig) -> dict[str, Any]:
    from posttrain.manifest import read_manifest

    m = read_manifest(cfg.output_dir)
    distances = m.get("metrics", {}).get("l2_merged_to_input", {})
    return {"gains": [], "details": {"method": m.get("method"),
                                     **{f"L2 to {_short(k)}": v for k, v in distances.items()}}}


def _short(path: str) -> str:
    """A model folder's name for a table: its own name, or its parent's when it is called ``model``."""
    p = Path(path)
    return p.parent.name if p.name == "model" and p.parent.name else p.name


STAGE = Stage(NAME, MergeConfig, run_merge,
              "Merge models fine-tuned from one base with linear, task_arithmetic or ties (see docs/merge.md).",
              model_dir=output_folder, policy=True, eval_name="merged", wire=wire_merge, pass_through=merge_skipped,
              summary=merge_summary)
