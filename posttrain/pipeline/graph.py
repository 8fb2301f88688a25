"""The stage graph: which folder each stage reads and writes, worked out before anything runs.

    data ----------> RUN/data/<name>           (midtrain, sft, preference, tasks, heldout, ...)
    base model --midtrain--> RUN/midtrain --sft--> RUN/sft --rs--> RUN/rs/model --+--rm--> RUN/rm
                                                                                 +--rl--> RUN/rl/{chat,logic}/model
    RUN/rl/*/model --merge (base: RUN/rs/model)--> RUN/merge --calibrate--> RUN/calibrate --eval--> RUN/eval

Every stage's ``model`` is the previous enabled stage's output (a disabled stage passes its input through) and its
datasets are the data stage's outputs of the conventional names, unless the section sets them. Any string value of
a section may also name an output as ``@name`` (``@sft``, ``@rl.chat``, ``@data.tasks``, ``@base``, ...).

Every enabled stage's config is validated here, before the first stage starts: a typo in the eval section fails in
a second, not after an hour of training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from posttrain.config import validate
from posttrain.errors import UserError
from posttrain.pipeline.config import (
    STAGES,
    DataStageConfig,
    PipelineConfig,
    StageControl,
    split_control,
)

# Eval's default model names for the outputs of each model-producing stage.
EVAL_NAMES = {"base": "base", "midtrain": "midtrain", "sft": "sft", "rs": "rs", "rl.chat": "chat",
              "rl.logic": "logic", "merge": "merged", "calibrate": "final"}


@dataclass
class PlannedStage:
    name: str
    control: StageControl
    config: Any = None  # the validated stage config (None when disabled)
    products: dict[str, str] = field(default_factory=dict)  # output name -> folder, for the stages after it

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


class _Wiring:
    """What the stages planned so far produced: named outputs and the current policy model."""

    def __init__(self, cfg: PipelineConfig, source: str) -> None:
        self.run = Path(cfg.run_dir)
        self.source = source
        self.products: dict[str, str] = {"base": cfg.model}
        self.policy = cfg.model
        self.enabled: set[str] = set()
        self.eval_models: dict[str, str] = {"base": cfg.model}
        self.rl_tracks: list[str] = []
        self.chat_split: dict[str, Any] | None = None  # the Chat track's held-out split, for eval's win rate
        self.stage = ""  # the stage being wired (for messages)

    def dataset(self, name: str, where: str) -> str:
        ref = f"data.{name}"
        if ref not in self.products:
            raise UserError(f"{self.source}: {self.stage}: {where}: not set, and the data stage builds no dataset "
                            f"named {name!r} (add data.datasets.{name}, or set {self.stage}.{where})")
        return self.products[ref]

    def produced(self, ref: str, path: str, *, policy: bool = False) -> None:
        self.products[ref] = path
        if ref in EVAL_NAMES:
            self.eval_models[EVAL_NAMES[ref]] = path
        if policy:
            self.policy = path


def plan(cfg: PipelineConfig, source: str) -> Plan:
    """Wire and validate every stage, in order."""
    w = _Wiring(cfg, source)
    stages = []
    for name in STAGES:
        where = f"{source}: {name}"
        control, own = split_control(cfg.section(name), where)
        if name == "rl" and control.ray_task is not None:
            raise UserError(f"{where}: ray_task: the RL tracks already run as Ray tasks with their own resources; "
                            "set rl.resources.chat / rl.resources.logic instead")
        stage = PlannedStage(name, control)
        w.stage = name
        before = dict(w.products)
        if control.enabled:
            own = _substitute(own, w.products, where)
            if cfg.report_to is not None:
                _set_report_to(name, own, list(cfg.report_to))
            stage.config = WIRE[name](own, w, where)
            w.enabled.add(name)
        else:
            PASS_THROUGH[name](own, w)
        stage.products = {k: v for k, v in w.products.items() if before.get(k) != v}
        stages.append(stage)
    return Plan(w.run, stages, w.products)


# ------------------------------------------------------------------------------------------------------- each stage
def _data(own: dict[str, Any], w: _Wiring, where: str) -> Any:
    own.setdefault("output_dir", str(w.run / "data"))
    cfg = validate(DataStageConfig, own, where)
    for name in cfg.datasets:
        w.produced(f"data.{name}", str(cfg.output_dir / name))
    return cfg


def _trainer(name: str, schema_path: str) -> Any:
    """midtrain and sft: the policy + the dataset of the same name -> a model folder that becomes the policy."""
    def wire(own: dict[str, Any], w: _Wiring, where: str) -> Any:
        from importlib import import_module

        module, cls = schema_path.rsplit(":", 1)
        own.setdefault("model", w.policy)
        if "data" not in own:
            own["data"] = w.dataset(name, "data")
        own.setdefault("output_dir", str(w.run / name))
        cfg = validate(getattr(import_module(module), cls), own, where)
        w.produced(name, str(cfg.output_dir), policy=True)
        return cfg
    return wire


def _rs(own: dict[str, Any], w: _Wiring, where: str) -> Any:
    from posttrain.stages.rs_rounds import RSConfig

    own.setdefault("model", w.policy)
    own.setdefault("out", str(w.run / "rs"))
    for section, dataset in (("sample", "tasks"), ("heldout", "heldout")):
        part = own.setdefault(section, {})
        if isinstance(part, dict):
            part["tasks"] = _tasks(part.get("tasks"), w, dataset, f"{section}.tasks")
    cfg = validate(RSConfig, own, where)
    w.produced("rs", str(Path(cfg.out) / "model"), policy=True)  # run_rs links OUT/model to the last round's model
    return cfg


def _rm(own: dict[str, Any], w: _Wiring, where: str) -> Any:
    from posttrain.stages.rm import RMStageConfig

    own.setdefault("model", w.policy)
    if "data" not in own:
        own["data"] = w.dataset("preference", "data")
    own.setdefault("output_dir", str(w.run / "rm"))
    cfg = validate(RMStageConfig, own, where)
    w.produced("rm", str(cfg.output_dir))
    return cfg


def _rl(own: dict[str, Any], w: _Wiring, where: str) -> Any:
    from posttrain.stages.rl import TRACKS, RLConfig, track_config

    own.setdefault("model", w.policy)
    own.setdefault("output_dir", str(w.run / "rl"))
    tracks = own.get("tracks", list(TRACKS))
    if isinstance(tracks, list) and "chat" in tracks:
        own["chat"] = _wire_chat(dict(own.get("chat") or {}), w)
    if isinstance(tracks, list) and "logic" in tracks:
        logic = dict(own.get("logic") or {})
        logic["tasks"] = _tasks(logic.get("tasks"), w, "tasks", "logic.tasks")
        heldout = logic.setdefault("heldout", {})
        if isinstance(heldout, dict):
            heldout["tasks"] = _tasks(heldout.get("tasks"), w, "heldout", "logic.heldout.tasks")
        own["logic"] = logic
    cfg = validate(RLConfig, own, where)
    for track in cfg.tracks:  # each track's own config is checked now too
        checked = track_config(cfg, track, w.source + ": rl")
        # where each track leaves its final model (see posttrain.stages.rl.run_track)
        model_dir = Path(checked.output_dir) / "model" if track == "chat" else Path(checked.output_dir)
        w.produced(f"rl.{track}", str(model_dir))
        if track == "chat":
            w.chat_split = {"held_out_fraction": checked.eval_fraction, "split_seed": checked.seed,
                            "prompts": str(checked.on_policy.prompts if checked.on_policy else checked.offline.data)}
    w.rl_tracks = list(cfg.tracks)
    return cfg


def _tasks(given: Any, w: _Wiring, dataset: str, where: str) -> Any:
    """A task section: the data stage's dataset unless it names a recipe or a dataset itself (``limit`` etc. stay)."""
    if given is None:
        given = {}
    if isinstance(given, dict) and "recipe" not in given and "dataset" not in given:
        return {"dataset": w.dataset(dataset, where), **given}
    return given


def _wire_chat(chat: dict[str, Any], w: _Wiring) -> dict[str, Any]:
    """The Chat track reads the preference pairs (offline), prompts (on-policy) and the reward model."""
    if isinstance(chat.get("offline"), dict) and "data" not in chat["offline"]:
        chat["offline"] = {"data": w.dataset("preference", "chat.offline.data"), **chat["offline"]}
    if isinstance(chat.get("on_policy"), dict) and "prompts" not in chat["on_policy"]:
        chat["on_policy"] = {"prompts": w.dataset("preference", "chat.on_policy.prompts"), **chat["on_policy"]}
    scorer = chat.get("scorer", {} if "rm" in w.enabled else None)
    if isinstance(scorer, dict) and scorer.get("kind", "reward_model") == "reward_model" and not scorer.get(
            "reward_model"):
        if "rm" not in w.enabled:
            raise UserError(f"{w.source}: rl: chat.scorer.reward_model: not set and the rm stage is not enabled; "
                            "enable rm, set chat.scorer.reward_model, or use chat.scorer.kind: judge")
        chat["scorer"] = {**scorer, "reward_model": w.products["rm"]}
    return chat


def _merge(own: dict[str, Any], w: _Wiring, where: str) -> Any:
    from posttrain.stages.merge import MergeConfig

    if "models" not in own:
        if not w.rl_tracks:
            raise UserError(f"{where}: models: not set and the rl stage is not enabled, so there are no track models "
                            "to merge; disable merge (enabled: false) or set merge.models")
        own["models"] = [{"path": w.products[f"rl.{t}"]} for t in w.rl_tracks]
    own.setdefault("base", w.policy)
    own.setdefault("output_dir", str(w.run / "merge"))
    cfg = validate(MergeConfig, own, where)
    w.produced("merge", str(cfg.output_dir), policy=True)
    return cfg


def _calibrate(own: dict[str, Any], w: _Wiring, where: str) -> Any:
    from posttrain.stages.calibrate import CalibrateConfig

    own.setdefault("model", w.policy)
    own.setdefault("output_dir", str(w.run / "calibrate"))
    if "generate" not in own:  # tasks from an environment's generator need no dataset
        own["tasks"] = _tasks(own.get("tasks"), w, "calibration" if "data.calibration" in w.products else "tasks",
                              "tasks")
    cfg = validate(CalibrateConfig, own, where)
    w.produced("calibrate", str(cfg.output_dir), policy=True)
    return cfg


def _eval(own: dict[str, Any], w: _Wiring, where: str) -> Any:
    from posttrain.stages.evaluate import EvalConfig

    models = own.get("models")
    if models is None or isinstance(models, list):  # a list picks among the pipeline's models by name
        wanted = list(w.eval_models) if models is None else models
        unknown = [m for m in wanted if m not in w.eval_models]
        if unknown:
            raise UserError(f"{where}: models: {', '.join(map(str, unknown))}: not a model of this run; expected "
                            f"names among {', '.join(w.eval_models)}, or a mapping name -> folder")
        own["models"] = {name: w.eval_models[name] for name in wanted}
    if "sets" not in own and "data.heldout" in w.products:
        own["sets"] = {"heldout": {}}
    if isinstance(own.get("sets"), dict):  # a set without a source reads the data stage's dataset of its name
        own["sets"] = {name: _tasks(tasks, w, str(name), f"sets.{name}") for name, tasks in own["sets"].items()}
    if "chat" not in own and "rm" in w.enabled and "data.preference" in w.products:
        own["chat"] = {}
    chat = own.get("chat")
    if isinstance(chat, dict):
        split = w.chat_split or {}
        if "prompts" not in chat:
            chat["prompts"] = split.get("prompts") or w.dataset("preference", "chat.prompts")
        for key in ("held_out_fraction", "split_seed"):  # only the prompts the Chat track never trained on
            if key in split:
                chat.setdefault(key, split[key])
        chat.setdefault("reference", "sft" if "sft" in own["models"] else next(iter(own["models"])))
        if "scorer" not in chat and "rm" in w.enabled:
            chat["scorer"] = {"kind": "reward_model", "reward_model": w.products["rm"]}
    own.setdefault("output_dir", str(w.run / "eval"))
    return validate(EvalConfig, own, where)


WIRE = {
    "data": _data, "midtrain": _trainer("midtrain", "posttrain.stages.midtrain:MidtrainStageConfig"),
    "sft": _trainer("sft", "posttrain.stages.sft:SFTStageConfig"), "rs": _rs, "rm": _rm, "rl": _rl,
    "merge": _merge, "calibrate": _calibrate, "eval": _eval,
}


# ------------------------------------------------------------------------------------------- disabled: pass through
def _through(ref: str) -> Any:
    def passthrough(own: dict[str, Any], w: _Wiring) -> None:
        w.products[ref] = w.policy  # the next stage reads what this one would have read
    return passthrough


def _rl_through(own: dict[str, Any], w: _Wiring) -> None:
    for track in ("chat", "logic"):
        w.products[f"rl.{track}"] = w.policy


def _merge_through(own: dict[str, Any], w: _Wiring) -> None:
    """A disabled merge passes its first input through: the first track's model (the policy without RL)."""
    first = w.products[f"rl.{w.rl_tracks[0]}"] if w.rl_tracks else w.policy
    w.products["merge"] = first
    w.policy = first


def _nothing(own: dict[str, Any], w: _Wiring) -> None:
    return None


PASS_THROUGH = {
    "data": _nothing, "midtrain": _through("midtrain"), "sft": _through("sft"), "rs": _through("rs"), "rm": _nothing,
    "rl": _rl_through, "merge": _merge_through, "calibrate": _through("calibrate"), "eval": _nothing,
}


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


# ------------------------------------------------------------------------------------------------------- report_to
def _set_report_to(stage: str, own: dict[str, Any], value: list[str]) -> None:
    """The pipeline's ``report_to`` goes to every training section that has the key (a section's own value wins)."""
    from posttrain.stages import calibrate, evaluate, merge, midtrain, rm, rs_rounds, sft

    schemas = {"midtrain": midtrain.MidtrainStageConfig, "sft": sft.SFTStageConfig, "rs": rs_rounds.RSConfig,
               "rm": rm.RMStageConfig, "merge": merge.MergeConfig, "calibrate": calibrate.CalibrateConfig,
               "eval": evaluate.EvalConfig}
    if stage == "rl":
        from posttrain.rl.config import LogicTrackConfig
        from posttrain.stages.rl_chat import ChatTrackConfig

        for track, schema in (("chat", ChatTrackConfig), ("logic", LogicTrackConfig)):
            if isinstance(own.get(track), dict):
                _fill(own[track], schema, "report_to", value)
    elif stage in schemas:
        _fill(own, schemas[stage], "report_to", value)


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
