"""How the pipeline calls each stage, what each stage reads, and the few numbers of each stage worth a summary row.

The stages are called through their public run functions with their own validated configs, exactly as their own
commands call them; nothing here changes what a stage computes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.manifest import MANIFEST

Log = Callable[[str], None]
COMMANDS = {"data": "posttrain data build RECIPE --out DIR", "midtrain": "posttrain midtrain", "sft": "posttrain sft",
            "rs": "posttrain rs", "rm": "posttrain rm", "rl": "posttrain rl", "merge": "posttrain merge",
            "calibrate": "posttrain calibrate", "eval": "posttrain eval"}
OUTPUT_KEYS = {"output_dir", "out"}  # a stage's own folders are outputs, never inputs
PATH_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl", ".parquet", ".py", ".csv")


class StageFailed(Exception):
    """A stage ran and failed in a way that is not a config error (e.g. an RL track crashed). Exit code 1."""


# ------------------------------------------------------------------------------------------------------------- run
def run_stage(name: str, cfg: Any, source: str, log: Log) -> None:
    """Run one stage in this process, as its own command would."""
    where = f"{source}: {name}"
    if name == "data":
        from posttrain.data import build_dataset

        for dataset, spec in cfg.datasets.items():
            log(f"data: building {dataset} from {spec.recipe}")
            build_dataset(spec.recipe, Path(cfg.output_dir) / dataset, spec.overrides, spec.seed, log=log)
    elif name == "midtrain":
        from posttrain.stages.midtrain import run_midtrain

        run_midtrain(cfg, where)
    elif name == "sft":
        from posttrain.stages.sft import run_sft

        run_sft(cfg, where)
    elif name == "rs":
        from posttrain.cli.sample import print_rounds
        from posttrain.stages.rs_rounds import run_rs

        print_rounds(run_rs(cfg, log=log))
    elif name == "rm":
        from posttrain.stages.rm import run_rm

        run_rm(cfg, where)
    elif name == "rl":
        from posttrain.stages.rl import TrackFailed, run

        try:
            run(cfg, source=where)
        except TrackFailed as e:
            raise StageFailed(str(e)) from None
    elif name == "merge":
        from posttrain.stages.merge import run

        run(cfg, log=log)
    elif name == "calibrate":
        from posttrain.stages.calibrate import run_calibrate

        manifest = run_calibrate(cfg, log=log, source=where)
        if manifest.get("status") == "guard_failed":  # the stage kept the input model: later stages can go on
            log("calibrate: the accuracy guard failed; the input model is kept as the stage's output")
    elif name == "eval":
        from posttrain.cli.common import console
        from posttrain.evaluation.table import rich_table
        from posttrain.stages.evaluate import run_eval

        metrics = run_eval(cfg, source=where, log=log)["metrics"]
        console.print(rich_table(metrics["columns"], metrics["rows"], f"eval: {cfg.output_dir}"))
    else:  # pragma: no cover - the graph only has the stages above
        raise ValueError(name)


# ---------------------------------------------------------------------------------------------------------- inputs
def stage_inputs(name: str, cfg: Any) -> dict[str, str]:
    """What decides a stage's result besides its config: every existing path or known model its config names (not its
    own output folders), and for the data stage every local source file of its recipes."""
    from posttrain.models.fetch import KNOWN_MODELS

    found: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in OUTPUT_KEYS:
                    walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}")
        elif isinstance(value, str) and _looks_like_path(value):
            if value.lower() in KNOWN_MODELS or Path(value).expanduser().exists():
                found[key] = value

    walk(cfg.model_dump(mode="json"), "")
    if name == "data":
        for dataset, spec in cfg.datasets.items():
            for label, path in recipe_sources(spec.recipe, spec.overrides, spec.seed).items():
                found[f"datasets.{dataset}.sources.{label}"] = str(path)
    return found


def _looks_like_path(value: str) -> bool:
    from posttrain.models.fetch import KNOWN_MODELS

    if "\n" in value or len(value) > 4096:
        return False
    return value.lower() in KNOWN_MODELS or "/" in value or value.endswith(PATH_SUFFIXES)


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


def work_folders(name: str, cfg: Any) -> list[Path]:
    """The folders a stage writes (cleared when its config or inputs changed since a run left them half done)."""
    if name == "rs":
        return [Path(cfg.out)]
    if name == "data":
        return [Path(cfg.output_dir) / dataset for dataset in cfg.datasets]
    return [Path(cfg.output_dir)]


# --------------------------------------------------------------------------------------------------------- metrics
def key_metrics(name: str, cfg: Any) -> dict[str, Any]:
    """``{"gains": [{"metric", "before", "after"}], "details": {...}}`` from what the stage wrote."""
    return SUMMARIES[name](cfg)


def _manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: missing; the stage finished without writing its manifest")
    return json.loads(path.read_text(encoding="utf-8"))


def _gain(metric: str, before: Any, after: Any) -> dict[str, Any]:
    return {"metric": metric, "before": before, "after": after}


def _data_summary(cfg: Any) -> dict[str, Any]:
    details = {}
    for dataset in cfg.datasets:
        m = _manifest(Path(cfg.output_dir) / dataset)
        details[dataset] = {"kind": m.get("kind"), "rows": m["metrics"].get("rows"),
                            "tokens": m["metrics"].get("tokens")}
    return {"gains": [], "details": details}


def _training_summary(cfg: Any) -> dict[str, Any]:
    m = _manifest(cfg.output_dir)["metrics"]
    keep = ("steps", "eval_loss", "eval_perplexity", "tokens", "duration_s", "rows_train", "documents_train")
    return {"gains": [_gain("train loss", m.get("train_loss_first"), m.get("train_loss_last"))],
            "details": {k: m[k] for k in keep if m.get(k) is not None}}


def _rs_summary(cfg: Any) -> dict[str, Any]:
    rounds = _manifest(Path(cfg.out))["metrics"]["rounds"]
    measured = [r for r in rounds if r.get("heldout")]
    gains = [_gain("held-out pass@1", measured[0]["heldout"]["pass@1"], measured[-1]["heldout"]["pass@1"])]
    first, last = measured[0]["heldout"].get("buckets", {}), measured[-1]["heldout"].get("buckets", {})
    gains += [_gain(f"held-out pass@1 {b}", first[b]["pass@1"], last[b]["pass@1"]) for b in first if b in last]
    details = {"rounds": len(rounds) - 1, "kept_per_round": [r.get("sample", {}).get("kept") for r in rounds[1:]],
               "stopped": next((r["stopped"] for r in rounds if r.get("stopped")), None)}
    return {"gains": gains, "details": {k: v for k, v in details.items() if v is not None}}


def _rm_summary(cfg: Any) -> dict[str, Any]:
    m = _manifest(cfg.output_dir)["metrics"]
    return {"gains": [_gain("held-out pairwise accuracy", m.get("eval_accuracy_before"), m.get("eval_accuracy_after")),
                      _gain("train pairwise accuracy", m.get("train_accuracy_before"), m.get("train_accuracy_after"))],
            "details": {k: m[k] for k in ("steps", "pairs_train", "pairs_eval", "duration_s") if k in m}}


def _rl_summary(cfg: Any) -> dict[str, Any]:
    tracks = _manifest(cfg.output_dir)["tracks"]
    gains, details = [], {}
    chat = tracks.get("chat")
    if chat and chat.get("status") == "ok":
        gains.append(_gain("chat win rate vs start", 0.5, chat.get("win_rate")))  # the start model ties itself
        margins = [r["dpo"]["margin"] for r in chat.get("rounds", []) if r.get("dpo") and r["dpo"]["margin"]["count"]]
        if margins:
            gains.append(_gain("chat DPO margin", margins[0]["first"], margins[-1]["last"]))
        details["chat_rounds"] = len(chat.get("rounds", []))
    logic = tracks.get("logic")
    if logic and logic.get("status") == "ok":
        m = logic.get("metrics", {})
        before, after = m.get("heldout_before") or {}, m.get("heldout_after") or {}
        if before and after:
            gains.append(_gain("logic held-out reward", before.get("heldout/reward"), after.get("heldout/reward")))
            gains.append(_gain("logic held-out accuracy", before.get("heldout/accuracy"),
                               after.get("heldout/accuracy")))
        gains.append(_gain("logic train reward", m.get("train_reward_first"), m.get("train_reward_last")))
        details["logic_steps"] = m.get("steps")
    details["failed"] = [t for t, s in tracks.items() if s.get("status") != "ok"]
    return {"gains": gains, "details": details}


def _merge_summary(cfg: Any) -> dict[str, Any]:
    m = _manifest(cfg.output_dir)
    distances = m.get("metrics", {}).get("l2_merged_to_input", {})
    return {"gains": [], "details": {"method": m.get("method"),
                                     **{f"L2 to {_short(k)}": v for k, v in distances.items()}}}


def _short(path: str) -> str:
    """A model folder's name for a table: its own name, or its parent's when it is called ``model``."""
    p = Path(path)
    return p.parent.name if p.name == "model" and p.parent.name else p.name


def _calibrate_summary(cfg: Any) -> dict[str, Any]:
    m = _manifest(cfg.output_dir)["metrics"]
    before, after = m["before"], m["after"]
    return {"gains": [_gain("ECE (held-out)", before["ece"], after["ece"]),
                      _gain("accuracy (held-out)", before["accuracy"], after["accuracy"]),
                      _gain("Brier (held-out)", before["brier"], after["brier"])],
            "details": {"status": m["status"], "method": cfg.method}}


def _eval_summary(cfg: Any) -> dict[str, Any]:
    m = _manifest(cfg.output_dir)["metrics"]
    return {"gains": [], "details": {}, "table": {"columns": m["columns"], "rows": m["rows"]}}


SUMMARIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "data": _data_summary, "midtrain": _training_summary, "sft": _training_summary, "rs": _rs_summary,
    "rm": _rm_summary, "rl": _rl_summary, "merge": _merge_summary, "calibrate": _calibrate_summary,
    "eval": _eval_summary,
}
