"""``posttrain rs``: iterative rejection-sampling SFT.

    start the rollout workers once (base model); measure the held-out tasks      -> round_0/heldout
    for round i = 1..k:
        sample the train tasks with the current policy, keep verified passes     -> round_i/data
        SFT the current policy on them                                            -> round_i/model
        load the new weights into the running workers (update_weights_from_path)
        measure the held-out tasks again                                          -> round_i/heldout
        round_i/manifest.json: sample metrics, SFT metrics, held-out pass@1 before and after
    OUT/model -> the last round's model; OUT/manifest.json + a summary table

Every step resumes: sampling from its shards, SFT from its checkpoints (a finished SFT is a no-op), so a killed run
started again with the same config continues where it stopped. Each round samples with its own seed
(``sample.seed + i - 1``); the held-out set is always sampled with the same seed, so rounds are compared on equal
terms.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.manifest import read_manifest, write_manifest
from posttrain.rejection.tasks import TasksConfig
from posttrain.rollout.pool import RolloutConfig, RolloutPool
from posttrain.rollout.sampling import SamplingConfig
from posttrain.stages.sample import SampleConfig, SampleSettings, run_sample
from posttrain.stages.sft import SFTTrain
from posttrain.stages.training import LoraSettings

Log = Callable[[str], None]


class HeldOutConfig(Schema):
    tasks: TasksConfig
    sampling: SamplingConfig | None = Field(None, description="default: the sample section's sampling")
    seed: int = 1234


class RoundSFTConfig(Schema):
    """The ``sft`` section: how each round fine-tunes (model, data and output folder are set by the round)."""

    train: SFTTrain = Field(default_factory=SFTTrain)
    lora: LoraSettings | None = None


class RSConfig(Schema):
    """``posttrain rs`` config."""

    model: str = Field(description="the starting policy: HF model folder or known name")
    out: str
    rounds: int = Field(1, ge=1)
    sample: SampleSettings
    heldout: HeldOutConfig
    sft: RoundSFTConfig = Field(default_factory=RoundSFTConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


def run_rs(cfg: RSConfig, pool: RolloutPool | None = None, log: Log | None = None) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds; returns the run's manifest. ``pool``: running workers holding ``cfg.model``'s
    weights (by default they are started here, once, and shut down at the end)."""
    from posttrain.models.loading import resolve_model

    say = log or (lambda _msg: None)
    out = Path(cfg.out)
    base = resolve_model(cfg.model, key="model")
    _check_sft(cfg)  # before any sampling, not after the first round's

    own_pool = pool is None
    if pool is None:
        pool = RolloutPool.from_config(base, cfg.rollout)
    try:
        policy, loaded = base, base
        say("round 0: held-out tasks with the starting policy")
        before = _heldout(cfg, pool, policy, out / "round_0" / "heldout", say)
        rounds: list[dict[str, Any]] = [{"round": 0, "model": str(policy), "heldout": before,
                                         "worker_pids": _worker_pids(pool)}]
        for i in range(1, cfg.rounds + 1):
            folder = out / f"round_{i}"
            if policy != loaded:  # a resumed run: the workers start from the base weights
                pool.update_weights_from_path(policy)
                loaded = policy
            pids = _worker_pids(pool)

            say(f"round {i}: sampling the train tasks with {policy}")
            settings = {**cfg.sample.model_dump(), "seed": cfg.sample.seed + i - 1}
            data = run_sample(SampleConfig(**settings, model=str(policy), out=str(folder / "data"),
                                           rollout=cfg.rollout), pool=pool, log=say)
            kept = data["metrics"]["rows"]
            if kept == 0:
                say(f"round {i}: no sample passed verification; nothing to train on, stopping")
                rounds.append({"round": i, "stopped": "no verified samples to train on",
                               "sample": _sample_summary(data)})
                break

            say(f"round {i}: SFT on {kept} verified samples")
            model_dir = _run_sft(cfg, policy, folder)
            pool.update_weights_from_path(model_dir)
            policy = loaded = model_dir

            say(f"round {i}: held-out tasks with the new policy")
            after = _heldout(cfg, pool, policy, folder / "heldout", say)
            record = {"round": i, "model": str(model_dir), "sample": _sample_summary(data),
                      "sft": read_manifest(model_dir).get("metrics", {}), "heldout_before": before,
                      "heldout": after, "worker_pids": pids}
            write_manifest(folder, {"stage": "rs_round", "config": cfg.model_dump(mode="json"),
                                    "inputs": {"policy": str(rounds[-1]["model"])}, "metrics": record})
            rounds.append(record)
            before = after
    finally:
        if own_pool:
            pool.shutdown()

    _link(out / "model", policy)
    manifest = {"stage": "rs", "config": cfg.model_dump(mode="json"), "inputs": {"model": str(base)},
                "outputs": {"final_model": str(policy), "model": "model"}, "metrics": {"rounds": rounds}}
    write_manifest(out, manifest)
    return json.loads(json.dumps(manifest))


def _link(link: Path, target: Path) -> None:
    """``OUT/model`` -> the last round's model, so later stages can name one folder whatever the round count."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target.resolve(), link.parent.resolve()), target_is_directory=True)
    os.replace(tmp, link)


def _check_sft(cfg: RSConfig) -> None:
    if cfg.sft.lora is not None and not cfg.sft.lora.merge:
        raise UserError("sft.lora.merge: false saves only an adapter, but every round reloads full weights into the "
                        "rollout workers; set sft.lora.merge: true")


def _run_sft(cfg: RSConfig, policy: Path, folder: Path) -> Path:
    from posttrain.stages.sft import SFTStageConfig, run_sft

    sft = SFTStageConfig(model=str(policy), data=folder / "data", output_dir=folder / "model", train=cfg.sft.train,
                         lora=cfg.sft.lora)
    return Path(run_sft(sft, source="rs config: sft"))


def _heldout(cfg: RSConfig, pool: RolloutPool, policy: Path, out: Path, say: Log) -> dict[str, Any]:
    """pass@1 per bucket on the held-out tasks (and the rest of the sample report), with the policy in ``pool``."""
    settings = cfg.sample.model_dump()
    settings.update(tasks=cfg.heldout.tasks.model_dump(), seed=cfg.heldout.seed)
    if cfg.heldout.sampling is not None:
        settings["sampling"] = cfg.heldout.sampling.model_dump()
    manifest = run_sample(SampleConfig(**settings, model=str(policy), out=str(out), rollout=cfg.rollout), pool=pool,
                          log=say)
    return _sample_summary(manifest)


def _sample_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    m = manifest["metrics"]
    keep = ("prompts", "samples", "passed", "pass@1", "kept", "rejection_reasons")
    return {"pass@1": m["total"]["pass@1"], "kept": m["rows"],
            "buckets": {b: {k: v for k, v in r.items() if k in keep or k.startswith("pass@")}
                        for b, r in m["buckets"].items()}}


def _worker_pids(pool: RolloutPool) -> list[int]:
    """Which processes serve the pool now: the same pids in every round means the workers were reused."""
    import ray

    return [info["pid"] for info in ray.get([w.info.remote() for w in pool.workers])]


def summary_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per round for the summary table: kept samples, train pass@1, held-out pass@1 (total and per bucket)."""
    rows = []
    for r in manifest["metrics"]["rounds"]:
        heldout = r.get("heldout") or {}
        rows.append({"round": r["round"], "kept": r.get("sample", {}).get("kept", ""),
                     "train_pass@1": r.get("sample", {}).get("pass@1", ""),
                     "sft_loss": r.get("sft", {}).get("train_loss", ""),
                     "heldout_pass@1": heldout.get("pass@1", ""),
                     **{f"heldout_{b}": v["pass@1"] for b, v in heldout.get("buckets", {}).items()},
                     "note": r.get("stopped", "")})
    return rows
