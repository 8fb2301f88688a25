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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.manifest import finished_run, model_sha256, read_manifest, write_manifest
from posttrain.models.folders import link_folder
from posttrain.models.loading import resolve_model
from posttrain.models.settings import ChatSettings
from posttrain.report import Progress, as_progress
from posttrain.report.tables import print_rows
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.sampling import SamplingConfig
from posttrain.stages.contract import Stage, StageResult, Wiring, gain, manifest_metrics
from posttrain.stages.sample import SampleConfig, SampleSettings, run_sample
from posttrain.stages.sft import SFTStageConfig, SFTTrain, run_sft
from posttrain.tasks import TasksConfig, load_tasks
from posttrain.training.settings import LoraSettings

NAME = "rs"


class HeldOutConfig(Schema):
    tasks: TasksConfig
    sampling: SamplingConfig | None = Field(None, description="default: the sample section's sampling")
    seed: int = 1234


class RoundSFTConfig(Schema):
    """The ``sft`` section: how each round fine-tunes (model, data and output folder are set by the round)."""

    train: SFTTrain = Field(default_factory=SFTTrain)
    lora: LoraSettings | None = None


class RSConfig(ChatSettings):
    """``posttrain rs`` config."""

    renamed = {"out": "output_dir"}
    model: str = Field(description="the starting policy: HF model folder, Hub id or known name")
    output_dir: Path = Field(description="round_<i>/ folders, model -> the last round's model, manifest.json")
    rounds: int = Field(1, ge=1)
    skip_solved: int | None = Field(None, ge=1, description="a prompt verified this many times in earlier rounds is "
                                    "not sampled again (its solutions are already trained on); unset: every round "
                                    "samples every prompt")
    sample: SampleSettings
    heldout: HeldOutConfig
    sft: RoundSFTConfig = Field(default_factory=RoundSFTConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


def run_rs(cfg: RSConfig, source: str = "config", progress: Progress | None = None, *,
           pool: Any = None) -> StageResult:
    """Run ``cfg.rounds`` rounds. ``pool``: running workers holding ``cfg.model``'s weights (by default they are
    started here, once, and shut down at the end)."""
    report = as_progress(progress, NAME)
    out = STAGE.open(cfg, source)  # the output folder may be written; the rollout engine takes its kwargs
    base = resolve_model(cfg.model, key=f"{source}: model")
    config = cfg.model_dump(mode="json")
    _check_sft(cfg)  # before any sampling, not after the first round's
    inputs = {"model": model_sha256(base)}
    for part in ("sample", "heldout"):  # the task sets' content, so that a rebuilt set is not taken as the same
        inputs.update(load_tasks(getattr(cfg, part).tasks, out / "tasks" / part, key=f"{part}.tasks")[1])
    if finished_run(out, NAME, config, inputs):
        report.say(f"{out} already holds these rounds (same config, model and tasks); nothing to do")
        return StageResult.read(out, model_dir=out / "model")

    own_pool = pool is None
    if pool is None:
        from posttrain.rollout.pool import RolloutPool

        pool = RolloutPool.from_config(base, cfg.rollout)
    try:
        policy, loaded = base, base
        report.say("round 0: held-out tasks with the starting policy")
        before = _heldout(cfg, pool, policy, out / "round_0" / "heldout", report)
        rounds: list[dict[str, Any]] = [{"round": 0, "model": str(policy), "heldout": before,
                                         "worker_pids": _worker_pids(pool)}]
        for i in range(1, cfg.rounds + 1):
            folder = out / f"round_{i}"
            if policy != loaded:  # a resumed run: the workers start from the base weights
                pool.update_weights_from_path(policy)
                loaded = policy
            pids = _worker_pids(pool)

            report.say(f"round {i}: sampling the train tasks with {policy}", round_=i)
            settings = {**cfg.sample.model_dump(), "seed": cfg.sample.seed + i - 1}
            left = _unsolved_tasks(cfg, out, i)
            if left is not None:
                settings["tasks"], skipped = {"dataset": str(left.path)}, left.skipped
                report.say(f"round {i}: {skipped} prompts verified {cfg.skip_solved}+ times are not sampled again",
                           round_=i)
                if left.rows == 0:
                    rounds.append({"round": i, "stopped": f"every prompt verified {cfg.skip_solved}+ times"})
                    break
            data = run_sample(SampleConfig(**settings, **_chat(cfg), model=str(policy), output_dir=folder / "data",
                                           rollout=cfg.rollout), progress=report, pool=pool).manifest
            kept = data["metrics"]["rows"]
            if kept == 0:
                report.say(f"round {i}: no sample passed verification; nothing to train on, stopping", round_=i)
                rounds.append({"round": i, "stopped": "no verified samples to train on",
                               "sample": _sample_summary(data)})
                break

            report.say(f"round {i}: SFT on {kept} verified samples", round_=i)
            model_dir = _run_sft(cfg, policy, folder, report)
            pool.update_weights_from_path(model_dir)
            policy = loaded = model_dir

            report.say(f"round {i}: held-out tasks with the new policy", round_=i)
            after = _heldout(cfg, pool, policy, folder / "heldout", report)
            record = {"round": i, "model": str(model_dir), "sample": _sample_summary(data),
                      "sft": read_manifest(model_dir).get("metrics", {}), "heldout_before": before,
                      "heldout": after, "worker_pids": pids}
            write_manifest(folder, {"stage": "rs_round", "config": config,
                                    "inputs": {"policy": str(rounds[-1]["model"])}, "metrics": record})
            rounds.append(record)
            before = after
    finally:
        if own_pool:
            pool.shutdown()

    link_folder(out / "model", policy)
    write_manifest(out, {"stage": NAME, "config": config, "inputs": inputs,
                         "outputs": {"final_model": str(policy), "model": "model"}, "metrics": {"rounds": rounds}})
    return StageResult.read(out, model_dir=out / "model")


def _check_sft(cfg: RSConfig) -> None:
    if cfg.sft.lora is not None and not cfg.sft.lora.merge:
        raise UserError("sft.lora.merge: false saves only an adapter, but every round reloads full weights into the "
                        "rollout workers; set sft.lora.merge: true")


def _chat(cfg: RSConfig) -> dict[str, Any]:
    """The chat settings every round's sample and SFT use (the SFT saves the template with its model)."""
    return {"chat_template": cfg.chat_template, "tool_format": cfg.tool_format}


def _run_sft(cfg: RSConfig, policy: Path, folder: Path, report: Progress) -> Path:
    sft = SFTStageConfig(model=str(policy), data=folder / "data", output_dir=folder / "model", train=cfg.sft.train,
                         lora=cfg.sft.lora, **_chat(cfg))
    return run_sft(sft, source="rs config: sft", progress=report.for_stage("sft")).output_dir


def _heldout(cfg: RSConfig, pool: Any, policy: Path, out: Path, report: Progress) -> dict[str, Any]:
    """pass@1 per bucket on the held-out tasks (and the rest of the sample report), with the policy in ``pool``."""
    settings = cfg.sample.model_dump()
    # the same draw for every round's measurement: no second pass for the unsolved ones
    settings.update(tasks=cfg.heldout.tasks.model_dump(), seed=cfg.heldout.seed, resample_unsolved=0)
    if cfg.heldout.sampling is not None:
        settings["sampling"] = cfg.heldout.sampling.model_dump()
    sampled = run_sample(SampleConfig(**settings, **_chat(cfg), model=str(policy), output_dir=out,
                                      rollout=cfg.rollout), progress=report, pool=pool)
    return _sample_summary(sampled.manifest)


def _sample_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    m = manifest["metrics"]
    keep = ("prompts", "samples", "passed", "pass@1", "kept", "rejection_reasons")
    return {"pass@1": m["total"]["pass@1"], "kept": m["rows"],
            "buckets": {b: {k: v for k, v in r.items() if k in keep or k.startswith("pass@")}
                        for b, r in m["buckets"].items()}}


def _worker_pids(pool: Any) -> list[int]:
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


@dataclass
class _Subset:
    path: Path
    rows: int
    skipped: int


def _unsolved_tasks(cfg: RSConfig, out: Path, i: int) -> _Subset | None:
    """With ``skip_solved``: round ``i``'s task dataset without the prompts earlier rounds verified that many times."""
    if cfg.skip_solved is None or i == 1:
        return None
    from posttrain.manifest import read_manifest
    from posttrain.rejection.adaptive import verified_passes, write_task_subset

    passes = verified_passes(out / f"round_{j}" / "data" / shards for j in range(1, i)
                             for shards in ("shards", "shards_unsolved"))
    source = Path(cfg.sample.tasks.dataset) if cfg.sample.tasks.dataset else out / "tasks" / "sample"
    rows, _ = load_tasks(cfg.sample.tasks, out / "tasks" / "sample", key="sample.tasks")
    keep = {r.id for r in rows if passes[r.id] < cfg.skip_solved}
    folder = write_task_subset(source, keep, out / f"round_{i}" / "tasks",
                               {"skip_solved": cfg.skip_solved, "after_round": i - 1})
    return _Subset(folder, int(read_manifest(folder)["metrics"]["rows"]), len(rows) - len(keep))


def show_rounds(done: StageResult) -> None:
    print_rows("rejection-sampling rounds", summary_rows(done.manifest))


def wire_rs(section: dict[str, Any], w: Wiring) -> None:
    """The policy, the data stage's ``tasks`` to sample and ``heldout`` tasks to measure."""
    section.setdefault("model", w.policy)
    for part, dataset in (("sample", "tasks"), ("heldout", "heldout")):
        sub = section.setdefault(part, {})
        if isinstance(sub, dict):
            sub["tasks"] = w.tasks(sub.get("tasks"), dataset, f"{part}.tasks")


def rs_summary(cfg: RSConfig) -> dict[str, Any]:
    rounds = manifest_metrics(cfg.output_dir)["rounds"]
    measured = [r for r in rounds if r.get("heldout")]
    gains = [gain("held-out pass@1", measured[0]["heldout"]["pass@1"], measured[-1]["heldout"]["pass@1"])]
    first, last = measured[0]["heldout"].get("buckets", {}), measured[-1]["heldout"].get("buckets", {})
    gains += [gain(f"held-out pass@1 {b}", first[b]["pass@1"], last[b]["pass@1"]) for b in first if b in last]
    details = {"rounds": len(rounds) - 1, "kept_per_round": [r.get("sample", {}).get("kept") for r in rounds[1:]],
               "stopped": next((r["stopped"] for r in rounds if r.get("stopped")), None)}
    return {"gains": gains, "details": {k: v for k, v in details.items() if v is not None}}


STAGE = Stage(NAME, RSConfig, run_rs,
              "Iterative rejection-sampling SFT: `rounds` x (sample -> verify -> SFT), held-out pass@1 every round.",
              model_dir=lambda cfg: Path(cfg.output_dir) / "model", policy=True, eval_name=NAME, wire=wire_rs,
              summary=rs_summary, show=show_rounds)
