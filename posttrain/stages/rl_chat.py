"""The Chat RL track: DPO on offline preference pairs, then rounds of on-policy DPO, measured by reward-model win rate.

    SFT model --round 0: DPO on offline pairs (a preference recipe bucket)-->
              --round r: rollout workers sample K answers per prompt with the current policy; a scorer (reward
                         model or LLM judge) scores them; best and worst become chosen and rejected; DPO--> ...
              --> OUT/model

After every round the new weights are pushed to the running workers (``update_weights_from_path``), which then answer
held-out prompts greedily; the scorer compares those answers with the SFT model's (generated once, at the start):
the win rate. Each round keeps its samples, pairs, model and metrics in ``OUT/rounds/NN``; a round is finished when its
``manifest.json`` exists, so a killed track resumes where it stopped (inside a round, from the newest DPO checkpoint),
and raising ``on_policy.rounds`` later adds rounds. ``run_chat_track`` holds no global state and writes only under
``output_dir``, so a parallel runner can call it inside a Ray actor.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from posttrain.config import Schema
from posttrain.errors import UserError
from posttrain.manifest import (
    MANIFEST,
    METRICS_FILE,
    finished_run,
    model_sha256,
    read_jsonl,
    read_manifest,
    write_json,
    write_jsonl,
    write_manifest,
)
from posttrain.models.folders import replace_with_model
from posttrain.models.loading import load_tokenizer, resolve_model
from posttrain.models.settings import ChatSettings
from posttrain.preference.data import load_prompts, resolve_data, split_held_out
from posttrain.preference.dpo import DPOTrain, train_dpo
from posttrain.preference.pairs import build_pairs
from posttrain.preference.rollouts import sample_responses
from posttrain.preference.scorers import Scorer, ScorerConfig, check_reward_model, open_scorer
from posttrain.preference.winrate import win_rate
from posttrain.report import Progress, as_progress
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.sampling import SamplingConfig
from posttrain.stages.contract import Stage, StageResult
from posttrain.training.data import built_dataset
from posttrain.training.model import check_lora
from posttrain.training.outputs import write_outputs
from posttrain.training.settings import LoraSettings

NAME = "rl-chat"
STAGE_ID = "rl_chat"  # the manifest's stage name (kept from before the commands were named after the stages)
# Keys that may change between runs of one output folder (how it runs, not what it computes).
RESUMABLE_CHANGES = ("on_policy.rounds", "rollout", "scorer.judge_rollout", "resume")


# Sampling defaults live in the schema (not in a default instance), so overriding one key keeps the others.
class OnPolicySampling(SamplingConfig):
    max_tokens: int | None = Field(128, ge=1)


class GreedySampling(SamplingConfig):
    temperature: float | None = Field(0.0, ge=0.0)
    max_tokens: int | None = Field(128, ge=1)


class OfflineConfig(Schema):
    data: Path = Field(..., description="preference dataset folder or recipe .yaml")
    train: DPOTrain = Field(default_factory=DPOTrain)


class OnPolicyConfig(Schema):
    rounds: int = Field(2, ge=0)
    prompts: Path = Field(..., description="dataset folder or recipe .yaml with prompts (preference, task or chat)")
    prompts_per_round: int = Field(32, ge=1)
    samples_per_prompt: int = Field(4, ge=2, description="K answers per prompt; best and worst make the pair")
    sampling: OnPolicySampling = Field(default_factory=OnPolicySampling)
    train: DPOTrain = Field(default_factory=DPOTrain)


class WinRateConfig(Schema):
    prompts: int = Field(32, ge=0, description="held-out prompts compared after each round; 0 turns it off")
    sampling: GreedySampling = Field(default_factory=GreedySampling, description="greedy by default")
    tie_tolerance: float = Field(0.0, ge=0)


class ChatTrackConfig(ChatSettings):
    """``posttrain rl-chat`` config (``tool_format`` is not used: pairs and prompts are rendered as written)."""

    model: str = Field(..., description="the SFT model: a folder, Hub id or known name")
    output_dir: Path
    seed: int = 0
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of prompts held out from all training")
    offline: OfflineConfig | None = None
    on_policy: OnPolicyConfig | None = None
    scorer: ScorerConfig | None = None
    lora: LoraSettings | None = Field(None, description="every round trains a LoRA adapter on the round's starting "
                                      "policy and merges it into the round's model (the next round starts there)")
    win_rate: WinRateConfig = Field(default_factory=WinRateConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    resume: bool = Field(True, description="continue a track found in output_dir (false: start it over)")

    @model_validator(mode="after")
    def _complete(self) -> ChatTrackConfig:
        if self.offline is None and self.on_policy is None:
            raise ValueError("nothing to train: set offline (preference pairs) and/or on_policy (sampled rounds)")
        if self.lora is not None and not self.lora.merge:
            raise ValueError("lora.merge: false would keep only an adapter, but every round's model is the next "
                             "round's start and is loaded into the rollout workers; the Chat track merges each "
                             "round's adapter (set lora.merge: true)")
        if self.scorer is None and (self.on_policy is not None or self.win_rate.prompts > 0):
            raise ValueError("scorer: required for on-policy rounds and the win rate (set scorer.reward_model to a "
                             "`posttrain rm` folder, or scorer.kind: judge), or set win_rate.prompts: 0")
        if self.on_policy is not None and self.on_policy.sampling.n is not None:
            raise ValueError("on_policy.sampling.n: set on_policy.samples_per_prompt instead")
        if self.on_policy is not None and self.on_policy.sampling.resolve().greedy:
            raise ValueError("on_policy.sampling.temperature: 0 (greedy) would give K identical answers per prompt; "
                             "sample with a temperature above 0")
        return self


@dataclass
class Track:
    """One run of the track: its config and inputs, read once, and what every round uses (the workers, the scorer,
    the SFT model's answers to the held-out prompts)."""

    config: ChatTrackConfig
    out: Path
    sft_dir: Path
    inputs: dict[str, str]
    report: Progress
    offline_train: list[dict[str, Any]] = field(default_factory=list)
    offline_eval: list[dict[str, Any]] = field(default_factory=list)
    train_prompts: list[dict[str, Any]] = field(default_factory=list)
    held_prompts: list[dict[str, Any]] = field(default_factory=list)
    pool: Any = None
    tokenizer: Any = None
    scorer: Scorer | None = None
    reference: list[dict[str, Any]] = field(default_factory=list)


def run_chat_track(config: ChatTrackConfig, source: str = "config", progress: Progress | None = None, *,
                   workers: Any = None) -> StageResult:
    """Run (or resume) the whole track; its final model is ``output_dir/model``. ``workers``: a running
    ``RolloutPool`` to use instead of starting one (its weights are replaced)."""
    report = as_progress(progress, NAME)
    out = STAGE.open(config, source)  # the output folder may be written; trackers and engines exist

    # 1. Inputs: the SFT model, the reward model; the data (offline pairs split by prompt; prompts to sample from and
    # to hold out). A folder started with another config is refused; a finished one is a no-op.
    track = read_inputs(config, out, source, report)
    if finished_run(out, STAGE_ID, config.model_dump(mode="json"), track.inputs):
        report.event("done", f"{out} already holds this finished track; nothing to do",
                     metrics=read_manifest(out)["metrics"])
        return StageResult.read(out, model_dir=out / "model")

    # 2. The scorer, and the policy's workers (started from the SFT weights).
    track.scorer = open_scorer(config.scorer, key=f"{source}: scorer") if config.scorer else None
    own_pool = False
    try:
        track.pool = workers
        if workers is None and (config.on_policy is not None or track.held_prompts):
            from posttrain.rollout.pool import RolloutPool

            report.say(f"starting {config.rollout.num_workers} {config.rollout.engine} rollout worker(s)")
            track.pool, own_pool = RolloutPool.from_config(track.sft_dir, config.rollout), True
        elif workers is not None:
            workers.update_weights_from_path(track.sft_dir)
        track.tokenizer = load_tokenizer(track.sft_dir, config.chat_template, key=f"{source}: chat_template")

        # 3. The SFT model's answers to the held-out prompts, once: every round's win rate compares against them.
        track.reference = _reference_answers(track) if track.held_prompts else []

        # 4. Rounds: offline first, then on-policy; each from the previous round's model.
        rounds = config.on_policy.rounds if config.on_policy else 0
        policy, summaries = track.sft_dir, []
        for r in ([0] if config.offline else []) + list(range(1, rounds + 1)):
            round_dir = out / "rounds" / f"{r:02d}"
            if (round_dir / MANIFEST).is_file():
                summary = read_manifest(round_dir)["metrics"]
                report.say(f"round {r} already finished", round_=r)
            else:
                if track.pool is not None:
                    track.pool.update_weights_from_path(policy)
                summary = run_round(track, r, round_dir, policy)
            policy = _abs(out, summary["model_dir"])
            summaries.append(summary)
            report.event("round", f"round {r} done: {_brief(summary)}", round_=r, metrics=summary)
    finally:
        if track.scorer is not None:
            track.scorer.close()
        if own_pool:
            track.pool.shutdown()

    # 5. The final model, the track's metrics and manifest.
    final = out / "model"
    replace_with_model(policy, final)
    _write_track_metrics(out, summaries)
    last_rate = next((s["win_rate"]["rate"] for s in reversed(summaries) if s.get("win_rate")), None)
    metrics = {"rounds": summaries, "final_win_rate": last_rate, "held_out_prompts": len(track.held_prompts),
               "train_prompts": len(track.train_prompts),
               "offline_pairs": {"train": len(track.offline_train), "eval": len(track.offline_eval)}}
    write_manifest(out, {"stage": STAGE_ID, "config": config.model_dump(mode="json"), "inputs": track.inputs,
                         "metrics": metrics, "model": "model"})
    report.event("done", f"final model {final}; win rate vs SFT {last_rate}", metrics=metrics)
    return StageResult.read(out, model_dir=final)


def read_inputs(config: ChatTrackConfig, out: Path, source: str, report: Progress) -> Track:
    """The models and data of a run, checked; the offline pairs and the prompts split by prompt into training and
    held out (one split for pairs, on-policy prompts and the win rate)."""
    sft_dir = resolve_model(config.model, key=f"{source}: model")
    check_lora(config.lora, sft_dir, f"{source}: lora")
    if config.scorer is not None and config.scorer.kind == "reward_model":
        check_reward_model(config.scorer.reward_model, f"{source}: scorer.reward_model")  # type: ignore[arg-type]
    offline_train: list[dict[str, Any]] = []
    offline_eval: list[dict[str, Any]] = []
    if config.offline is not None:
        folder = resolve_data(config.offline.data, out / "data" / "offline", f"{source}: offline.data")
        rows = built_dataset(folder, "preference", source)[0].to_list()
        offline_train, offline_eval = split_held_out(rows, config.eval_fraction, config.seed)
    prompt_source = config.on_policy.prompts if config.on_policy else config.offline.data  # type: ignore[union-attr]
    key = "on_policy.prompts" if config.on_policy else "offline.data"
    prompt_rows, _ = load_prompts(resolve_data(prompt_source, out / "data" / "prompts", f"{source}: {key}"),
                                  f"{source}: {key}")
    train_prompts, held_prompts = split_held_out(prompt_rows, config.eval_fraction, config.seed)
    held_prompts = sorted(held_prompts, key=lambda r: r["id"])[:config.win_rate.prompts]
    if config.on_policy is not None and not train_prompts:
        raise UserError(f"{source}: on_policy.prompts: every prompt is held out by eval_fraction="
                        f"{config.eval_fraction}; nothing is left to sample from")
    if config.win_rate.prompts and not held_prompts:
        raise UserError(f"{source}: eval_fraction={config.eval_fraction} holds out no prompts of {key} for the win "
                        "rate; raise eval_fraction or set win_rate.prompts: 0")
    inputs = _prepare(config, out, sft_dir, source)
    return Track(config, out, sft_dir, inputs, report, offline_train, offline_eval, train_prompts, held_prompts)


def run_round(track: Track, r: int, round_dir: Path, policy: Path) -> dict[str, Any]:
    """One round: its pairs (offline, or sampled + scored), DPO from ``policy``, then the win rate of the result."""
    config, out, report = track.config, track.out, track.report
    round_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"round": r, "kind": "offline" if r == 0 else "on_policy"}
    if r == 0:
        assert config.offline is not None
        pairs, train = track.offline_train, config.offline.train
    else:
        assert config.on_policy is not None
        pairs, summary["pairs"] = _on_policy_pairs(track, r, round_dir)
        train = config.on_policy.train
    if not pairs:
        report.say(f"round {r}: no pairs; the policy is unchanged", round_=r)
        summary.update(model_dir=_rel(out, policy), trained=False)
    else:
        model_dir = round_dir / "model"
        reference_dir = policy if train.reference == "round_start" else track.sft_dir
        report.say(f"round {r}: DPO on {len(pairs)} pairs", round_=r)
        dpo, outputs, history = train_dpo(policy, reference_dir, pairs, track.offline_eval, train, model_dir,
                                          config.resume, report, r, lora=config.lora,
                                          chat_template=config.chat_template)
        summary.update(model_dir=_rel(out, model_dir), trained=True, dpo=dpo)
        if track.pool is not None:
            track.pool.update_weights_from_path(model_dir)
        write_outputs(model_dir, f"{STAGE_ID}.dpo", config.model_dump(mode="json"),
                      {**track.inputs, "policy": str(policy)}, outputs, dpo, history, train.keep_checkpoints)
    if track.held_prompts:
        summary["win_rate"] = _win_rate(track, round_dir)
    write_manifest(round_dir, {"stage": f"{STAGE_ID}.round", "config": config.model_dump(mode="json"),
                               "inputs": track.inputs, "metrics": summary})
    return summary


def _on_policy_pairs(track: Track, r: int, round_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample K answers per prompt with the current policy, score them, keep best vs worst (samples.jsonl and
    pairs.jsonl in the round folder)."""
    on, report, scorer = track.config.on_policy, track.report, track.scorer
    assert on is not None and scorer is not None
    stats_file = round_dir / "pairs_stats.json"
    if stats_file.is_file():  # a resumed round reuses its pairs: its checkpoints were trained on them
        return read_jsonl(round_dir / "pairs.jsonl"), json.loads(stats_file.read_text(encoding="utf-8"))
    n, train_prompts = on.prompts_per_round, track.train_prompts
    start = ((r - 1) * n) % len(train_prompts)  # rounds walk through the prompts, wrapping around
    prompts = [train_prompts[(start + i) % len(train_prompts)] for i in range(min(n, len(train_prompts)))]
    report.say(f"round {r}: sampling {on.samples_per_prompt} answers for {len(prompts)} prompts", round_=r)
    sampling = on.sampling.model_copy(update={"n": on.samples_per_prompt})
    samples, too_long = sample_responses(track.pool, track.tokenizer, prompts, sampling,
                                         seed=track.config.seed * 1_000_003 + r * 10_007)
    kept = [(p, s) for p, s in zip(prompts, samples, strict=True) if s is not None]
    texts = [[x["text"] for x in s] for _, s in kept]
    flat_prompts = [p["prompt"] for p, s in kept for _ in s]
    counted = scorer.stats()
    flat_scores = scorer.score(flat_prompts, [t for row in texts for t in row]) if flat_prompts else []
    scores, at = [], 0
    for row in texts:
        scores.append(flat_scores[at:at + len(row)])
        at += len(row)
    write_jsonl(round_dir / "samples.jsonl", [
        {"id": p["id"], "bucket": p["bucket"], "prompt": p["prompt"],
         "samples": [{**x, "score": sc} for x, sc in zip(s, row_scores, strict=True)]}
        for (p, s), row_scores in zip(kept, scores, strict=True)])
    min_gap = track.config.scorer.min_gap if track.config.scorer else 0.0
    pairs, stats = build_pairs([p for p, _ in kept], texts, scores, min_gap)
    write_jsonl(round_dir / "pairs.jsonl", pairs)
    scorer_stats = {k: v - counted.get(k, 0) for k, v in scorer.stats().items()}  # this round's share
    result = {**stats.to_dict(), "prompts_too_long": too_long, "scorer": scorer_stats}
    write_json(stats_file, result)  # last: its presence means samples and pairs are complete
    report.say(f"round {r}: {stats.pairs} pairs from {len(prompts)} prompts ({stats.skipped_ties} all-tie, "
               f"{stats.skipped_unscored} unscored, {too_long} too long)", round_=r, metrics=result)
    return pairs, result


def _reference_answers(track: Track) -> list[dict[str, Any]]:
    """The SFT model's scored answers to the held-out prompts (``reference/answers.jsonl``, made once)."""
    path = track.out / "reference" / "answers.jsonl"
    if path.is_file():
        rows = read_jsonl(path)
        if [r["id"] for r in rows] == [h["id"] for h in track.held_prompts]:
            return rows
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _scored_answers(track)
    write_jsonl(path, rows)
    return rows


def _scored_answers(track: Track) -> list[dict[str, Any]]:
    """The policy in the workers answers every held-out prompt once (greedy by default); the scorer scores it."""
    held, scorer = track.held_prompts, track.scorer
    assert scorer is not None
    sampling = track.config.win_rate.sampling.model_copy(update={"n": 1})
    samples, _ = sample_responses(track.pool, track.tokenizer, held, sampling, seed=0)
    answers = [s[0]["text"] if s else None for s in samples]
    ok = [i for i, a in enumerate(answers) if a is not None]
    got = scorer.score([held[i]["prompt"] for i in ok], [answers[i] for i in ok]) if ok else []  # type: ignore[misc]
    scores: list[float | None] = [None] * len(held)
    for i, s in zip(ok, got, strict=True):
        scores[i] = s
    return [{"id": h["id"], "bucket": h["bucket"], "answer": a, "score": s}
            for h, a, s in zip(held, answers, scores, strict=True)]


def _win_rate(track: Track, round_dir: Path) -> dict[str, Any]:
    """The round's policy (loaded in the workers) against the SFT answers, overall and per bucket."""
    held, reference, tolerance = track.held_prompts, track.reference, track.config.win_rate.tie_tolerance
    answers = _scored_answers(track)
    write_jsonl(round_dir / "win_rate.jsonl", [{**a, "reference_answer": ref["answer"], "reference_score": ref["score"]}
                                               for a, ref in zip(answers, reference, strict=True)])
    overall = win_rate([a["score"] for a in answers], [ref["score"] for ref in reference], tolerance)
    buckets = {}
    for bucket in sorted({h["bucket"] for h in held}):
        idx = [i for i, h in enumerate(held) if h["bucket"] == bucket]
        buckets[bucket] = win_rate([answers[i]["score"] for i in idx], [reference[i]["score"] for i in idx],
                                   tolerance).to_dict()
    return {**overall.to_dict(), "buckets": buckets}


def _prepare(config: ChatTrackConfig, out: Path, sft_dir: Path, source: str) -> dict[str, str]:
    """Fingerprints of the inputs; refuse to resume a folder started with a different config or inputs."""
    inputs = {"model": model_sha256(sft_dir)}
    if config.scorer is not None and config.scorer.reward_model:
        inputs["reward_model"] = model_sha256(Path(config.scorer.reward_model))
    started = {"config": _comparable(config.model_dump(mode="json")), "inputs": inputs}
    track_file = out / "track.json"
    if track_file.is_file() and config.resume:
        previous = json.loads(track_file.read_text(encoding="utf-8"))
        changed = _changed_keys(previous, started)
        if changed:
            raise UserError(f"{source}: {out} holds a Chat track started with a different "
                            f"{', '.join(changed)}; use another output_dir, or resume: false to start it over")
    elif track_file.is_file():
        for name in ("rounds", "reference", "model", MANIFEST, METRICS_FILE):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(track_file, started)
    return inputs


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config without the keys that may change between runs of the same track."""
    config = json.loads(json.dumps(config))
    for dotted in RESUMABLE_CHANGES:
        *parents, last = dotted.split(".")
        node: Any = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return config


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".").removeprefix("config.")] if old != new else []


def _write_track_metrics(out: Path, summaries: list[dict[str, Any]]) -> None:
    """OUT/metrics.jsonl: every round's DPO training logs (with the round number), then its pairs and win rate."""
    rows: list[dict[str, Any]] = []
    for s in summaries:
        logs = _abs(out, s["model_dir"]) / METRICS_FILE
        if s.get("trained") and logs.is_file():
            rows += [{"round": s["round"], "kind": "train", **row} for row in read_jsonl(logs)]
        if "pairs" in s:
            rows.append({"round": s["round"], "kind": "pairs", **s["pairs"]})
        if s.get("win_rate"):
            rows.append({"round": s["round"], "kind": "win_rate",
                         **{k: v for k, v in s["win_rate"].items() if k != "buckets"}})
    write_jsonl(out / METRICS_FILE, rows)


def _rel(out: Path, path: Path) -> str:
    """Paths inside the track folder are stored relative to it (the folder can be moved); others as given."""
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _abs(out: Path, stored: str) -> Path:
    return out / stored if not Path(stored).is_absolute() else Path(stored)


def _brief(summary: dict[str, Any]) -> str:
    parts = []
    if summary.get("dpo"):
        margin = summary["dpo"]["margin"]
        parts.append(f"DPO margin {margin['first']:.3g} -> {margin['last']:.3g}" if margin["count"] else "trained")
    if "pairs" in summary:
        parts.append(f"{summary['pairs']['pairs']} pairs")
    if summary.get("win_rate") and summary["win_rate"]["rate"] is not None:
        parts.append(f"win rate {summary['win_rate']['rate']:.3f}")
    return ", ".join(parts) or "no training"



STAGE = Stage(NAME, ChatTrackConfig, run_chat_track,
              "The Chat RL track: DPO on offline pairs, then on-policy rounds (sample K, score, best vs worst, DPO), "
              "with the reward-model win rate against the SFT model after each round. Resumes a killed run.",
              model_dir=lambda cfg: Path(cfg.output_dir) / "model", manifest_stage=STAGE_ID)
