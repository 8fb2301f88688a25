"""``posttrain sample``: rejection-sampled SFT data from verified trajectories.

    prompts (task recipe or built task dataset)
      -> N episodes per prompt (rollout pool + multi-turn agent loop, the prompt's env)
      -> verify every episode (VerifyPool per env)            } overlapped: batch i is verified while
      -> selection policy keeps some verified successes       } batch i+1 is generated
      -> one shard per batch (atomic), then OUT/data.parquet (chat rows) + OUT/manifest.json

A killed run resumes from its shards: finished batches are read back, the others regenerated with the same
per-prompt seeds, so the dataset equals an uninterrupted run's. A rollout worker that dies mid-run is replaced by the
pool and its prompts re-queued.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from posttrain.config import Schema
from posttrain.manifest import finished_run, model_sha256, write_manifest
from posttrain.models.chat import describe, load_chat
from posttrain.models.loading import resolve_model
from posttrain.models.settings import ChatSettings
from posttrain.rejection.metrics import BucketStats, summarize
from posttrain.rejection.output import COLUMNS, DATA_FILE, chat_row, write_chat_parquet
from posttrain.rejection.overlap import run_overlapped
from posttrain.rejection.selection import SelectionConfig, select
from posttrain.rejection.shards import ShardStore, fingerprint
from posttrain.report import Progress, as_progress
from posttrain.rl.rewards import CombinedReward, RewardFunctions, check_weights, reward_inputs
from posttrain.rollout.agent_loop import AgentLoopConfig, Episode, run_episodes
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.sampling import SamplingConfig, SamplingParams
from posttrain.stages.contract import Stage, StageResult
from posttrain.tasks import Batch, TaskRow, TasksConfig, Verifiers, VerifySettings, load_tasks, make_batches, row_seed

NAME = "sample"
MAX_ERROR_EXAMPLES = 20


class SampleSettings(Schema):
    """What to sample and what to keep (the ``sample`` section of an ``rs`` config, too)."""

    tasks: TasksConfig
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="n = samples per prompt")
    agent: AgentLoopConfig = Field(default_factory=AgentLoopConfig)
    envs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="constructor kwargs per environment")
    verify: VerifySettings = Field(default_factory=VerifySettings)
    rewards: RewardFunctions = Field(default_factory=RewardFunctions, description="each sample's reward: weighted "
                                     "verify scores plus your reward functions (selection.min_reward, best_k)")
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    batch_size: int = Field(16, ge=1, description="prompts per batch (and per shard)")
    resample_unsolved: int = Field(0, ge=0, description="a prompt none of whose samples passed gets this many more "
                                   "(one more pass over only those prompts, seeded apart); 0: off")
    seed: int = Field(0, description="per-prompt sampling seeds derive from it")
    resume: bool = Field(True, description="reuse finished shards in output_dir/shards (false: start over)")
    reasoning: Literal["keep", "drop"] = Field(
        "keep", description="the model's reasoning (<think>...</think>) in the SFT rows: keep it, or drop it and keep "
        "only the final answers (verification always judges the final answers)")


class SampleConfig(SampleSettings, ChatSettings):
    """``posttrain sample`` config."""

    renamed = {"out": "output_dir"}
    model: str = Field(description="HF model folder, Hub id (org/name[@revision]) or known name "
                       "(e.g. smollm2-135m-instruct)")
    output_dir: Path = Field(description="output folder: data.parquet, manifest.json, shards/")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


def run_sample(cfg: SampleConfig, source: str = "config", progress: Progress | None = None, *,
               pool: Any = None) -> StageResult:
    """Run the stage. ``pool``: running rollout workers to use (they must hold ``cfg.model``'s weights); by default a
    pool is started from ``cfg.rollout`` and shut down at the end."""
    report = as_progress(progress, NAME)
    out = STAGE.open(cfg, source)  # the output folder may be written; the rollout engine takes its kwargs
    model = resolve_model(cfg.model, key=f"{source}: model")
    config = cfg.model_dump(mode="json")

    # 1. Prompts, their sampling params (per bucket) and the batches they are cut into.
    rows, inputs = load_tasks(cfg.tasks, out / "tasks")
    check_weights(sorted({r.env for r in rows}), cfg.rewards)
    params = cfg.sampling.per_bucket({r.bucket for r in rows})
    batches = make_batches(rows, cfg.batch_size)
    inputs[f"model:{model.name}"] = model_sha256(model)
    inputs.update(reward_inputs(cfg.rewards))
    if finished_run(out, NAME, config, inputs):
        report.say(f"{out} already holds these samples (same config and inputs); nothing to do")
        return StageResult.read(out)

    # 2. The model's chat format: its own template (or the config's) and tool-call syntax.
    chat = load_chat(model, cfg.chat_template, cfg.tool_format, source=source)
    report.say(describe(chat))

    # 3. Shards: what an earlier run of the same config already finished is skipped.
    decides = {"model": inputs[f"model:{model.name}"], "tasks": inputs, "sampling": {b: p.model_dump() for b, p in
               params.items()}, "agent": cfg.agent.model_dump(), "envs": cfg.envs, "batch_size": cfg.batch_size,
               "seed": cfg.seed, "chat": chat.record()}
    store = ShardStore(out / "shards", fingerprint(decides), resume=cfg.resume)
    todo = [b for b in batches if not store.done(b.index)]
    report.say(f"{len(rows)} prompts in {len(batches)} batches; {len(batches) - len(todo)} already done")

    # 4. Generate and verify, overlapped; each finished batch becomes a shard. With resample_unsolved, the prompts
    # no sample solved get a second pass of that many samples (its own shards).
    rewards = CombinedReward(cfg.rewards) if cfg.rewards.functions or cfg.rewards.weights else None
    with _Workers(cfg, model, pool, report, rewards, chat) as workers:
        timing = workers.sample(store, todo, len(batches), params, cfg.seed, first_index=0)
        extra = _unsolved_pass(cfg, store, batches, params, decides, out, workers)
    reward_stats = rewards.stats() if rewards is not None else {}

    # 5. Select from every shard (in batch order) and write the dataset and its manifest.
    data_rows, metrics = _assemble(store, batches, cfg.selection, extra[0] if extra else None, cfg.reasoning)
    out.mkdir(parents=True, exist_ok=True)
    data_sha = write_chat_parquet(out / DATA_FILE, data_rows)
    metrics.update(timing=timing, rollout_restarts=workers.restarts, reward_functions=reward_stats,
                   chat=chat.record(), batches={"total": len(batches), "from_earlier_run": len(batches) - len(todo),
                            "generated": len(todo)})
    if extra:
        metrics["resample_unsolved"] = extra[1]
    write_manifest(out, {"stage": NAME, "kind": "chat", "columns": COLUMNS, "config": config, "inputs": inputs,
                         "outputs": {DATA_FILE: data_sha}, "metrics": metrics})
    total = metrics["total"]
    report.say(f"kept {total['kept']} of {total['samples']} samples ({total['passed']} passed); pass@1 "
               f"{total['pass@1']:.3f}; wrote {len(data_rows)} rows to {out / DATA_FILE}")
    return StageResult.read(out)


class _Workers:
    """The rollout pool (started on first use unless one was lent) and the verifiers, for one or two passes."""

    def __init__(self, cfg: SampleConfig, model: Path, pool: Any, report: Progress,
                 rewards: CombinedReward | None = None, chat: Any = None) -> None:
        self.cfg, self.model, self.pool, self.report, self.rewards = cfg, model, pool, report, rewards
        self.chat = chat
        self.own_pool = pool is None
        self.restarts = 0

    def __enter__(self) -> _Workers:
        return self

    def sample(self, store: ShardStore, todo: list[Batch], total: int, params: dict[str, SamplingParams], seed: int,
               first_index: int) -> dict[str, Any]:
        """Generate and verify ``todo`` (overlapped), each batch's records written as its shard; -> the timing.
        ``first_index``: the sample index of each prompt's first sample in this pass."""
        if not todo:
            return {}
        cfg = self.cfg
        if self.pool is None:
            from posttrain.rollout.pool import RolloutPool

            self.report.say(f"starting {cfg.rollout.num_workers} {cfg.rollout.engine} rollout worker(s) for "
                            f"{self.model}")
            self.pool = RolloutPool.from_config(self.model, cfg.rollout)
        with Verifiers.start(cfg.verify, {b.env for b in todo}, cfg.envs) as verifiers:
            def generate(batch: Batch) -> list[Episode]:
                return generate_batch(self.pool, batch, params, cfg, seed, self.chat)

            def finish(batch: Batch, episodes: list[Episode]) -> None:
                records = verify_batch(verifiers[batch.env], batch, episodes, self.rewards, first_index)
                store.write(batch.index, records)
                passed = sum(s["passed"] for r in records for s in r["samples"])
                self.report.say(f"batch {batch.index + 1}/{total} ({batch.env}, {len(batch.rows)} prompts): "
                                f"{sum(len(r['samples']) for r in records)} samples, {passed} passed")

            restarts_before = self.pool.restarts
            times = run_overlapped(todo, generate, finish)
            self.restarts += self.pool.restarts - restarts_before
        return {"wall_s": round(times.wall_s, 3), "generate_s": round(times.generate_s, 3),
                "verify_s": round(times.finish_s, 3), "generate_waited_s": round(times.waits_s, 3),
                "overlap_ratio": round(times.wall_s / max(times.generate_s, times.finish_s, 1e-9), 4)}

    def __exit__(self, *exc: object) -> None:
        if self.own_pool and self.pool is not None:
            self.pool.shutdown()


UNSOLVED_SEED = 7_919  # the second pass's seeds are apart from the first's


def _unsolved_pass(cfg: SampleConfig, store: ShardStore, batches: list[Batch], params: dict[str, SamplingParams],
                   decides: dict[str, Any], out: Path,
                   workers: _Workers) -> tuple[ShardStore, dict[str, int]] | None:
    """``resample_unsolved`` more samples for every prompt no first-pass sample solved; -> (its shards, counts)."""
    if not cfg.resample_unsolved:
        return None
    solved = {p["index"] for b in batches for p in store.read(b.index) if any(s["passed"] for s in p["samples"])}
    unsolved = [row for b in batches for row in b.rows if row.index not in solved]
    again = make_batches(unsolved, cfg.batch_size)
    extra = {b: p.with_updates(n=cfg.resample_unsolved) for b, p in params.items()}
    store2 = ShardStore(out / "shards_unsolved", fingerprint({**decides, "unsolved": [r.index for r in unsolved],
                                                              "n": cfg.resample_unsolved}), resume=cfg.resume)
    first = max((p.n for p in params.values()), default=0)
    workers.sample(store2, [b for b in again if not store2.done(b.index)], len(again), extra,
                   cfg.seed + UNSOLVED_SEED, first_index=first)
    by_prompt = {p["index"]: p for b in again for p in store2.read(b.index)}
    counts = {"prompts": len(unsolved), "samples": sum(len(p["samples"]) for p in by_prompt.values()),
              "solved": sum(any(s["passed"] for s in p["samples"]) for p in by_prompt.values())}
    workers.report.say(f"resampled {counts['prompts']} unsolved prompts x {cfg.resample_unsolved}: "
                       f"{counts['solved']} solved now")
    return store2, counts


def generate_batch(pool: Any, batch: Batch, params: dict[str, SamplingParams], cfg: SampleConfig,
                   seed: int | None = None, chat: Any = None) -> list[Episode]:
    """N episodes per prompt of one batch; each prompt's seed comes from the run's seed and the prompt."""
    seed = cfg.seed if seed is None else seed
    sampling = [params[row.bucket].with_updates(seed=row_seed(seed, row)) for row in batch.rows]
    return run_episodes(pool, batch.env, [row.task for row in batch.rows], sampling,
                        max_turns=cfg.agent.max_turns, max_episode_tokens=cfg.agent.max_episode_tokens,
                        env_kwargs=cfg.envs.get(batch.env), chat=chat)


def verify_batch(verifier: Any, batch: Batch, episodes: list[Episode], rewards: CombinedReward | None = None,
                 first_index: int = 0) -> list[dict[str, Any]]:
    """Verify a batch's episodes; one shard record per prompt, holding all its samples and their verdicts (with
    ``rewards``, each sample's combined reward and your functions' rewards; ``first_index``: the sample index of each
    prompt's first sample, for a second pass)."""
    from posttrain.environment import VerifyResult

    to_check = [i for i, ep in enumerate(episodes) if ep.end_reason != "env_error"]
    verdicts: dict[int, VerifyResult] = {}
    for j, result in verifier.verify_many(episodes[i].trajectory for i in to_check):
        verdicts[to_check[j]] = result
    by_id = {id(row.task): row for row in batch.rows}  # run_episodes keeps each task object on its episodes
    scored: dict[int, tuple[float, dict[str, float | None]]] = {}
    if rewards is not None and to_check:
        rows = [by_id[id(episodes[i].task)] for i in to_check]
        combined = rewards.score([episodes[i] for i in to_check], [verdicts[i].score for i in to_check],
                                 [r.env for r in rows], [r.bucket for r in rows])
        scored = dict(zip(to_check, combined, strict=True))
    records: dict[int, dict[str, Any]] = {}
    for i, ep in enumerate(episodes):
        row: TaskRow = by_id[id(ep.task)]
        rec = records.setdefault(row.index, {"index": row.index, "id": row.id, "bucket": row.bucket,
                                             "source": row.source, "env": row.env, "task_id": row.task.get("id"),
                                             "samples": []})
        verdict = verdicts.get(i) or VerifyResult.failure(ep.error or "the episode did not run", reason="env_error")
        reward, parts = scored.get(i, (float(verdict.score) if rewards is None else 0.0, {}))
        rec["samples"].append({**_sample_record(ep, verdict), "reward": reward, "rewards": parts,
                               "sample_index": first_index + ep.sample_index})
    return [records[row.index] for row in batch.rows]


def _sample_record(ep: Episode, verdict: Any) -> dict[str, Any]:
    prompt_messages = next((k for k, m in enumerate(ep.messages) if m.get("role") == "assistant"), len(ep.messages))
    return {
        "sample_index": ep.sample_index, "messages": ep.messages, "tools": ep.tools,
        "prompt_messages": prompt_messages, "passed": verdict.passed, "score": verdict.score,
        "reasons": list(verdict.reasons), "error": verdict.error, "end_reason": ep.end_reason,
        "finish_reasons": ep.finish_reasons, "truncated": bool(ep.finish_reasons) and ep.finish_reasons[-1] == "length",
        "model_tokens": sum(sum(r.mask) for r in ep.rows), "total_tokens": sum(len(r.token_ids) for r in ep.rows),
        "rows": len(ep.rows), "exact": ep.exact, "episode_error": ep.error,
    }


def _assemble(store: ShardStore, batches: list[Batch], selection: SelectionConfig,
              again: ShardStore | None = None, reasoning: str = "keep") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Apply the selection policy to every prompt in the shards (and its second-pass samples, ``again``); the kept
    rows (in prompt order) and the metrics. pass@k counts the first pass only (every prompt's n samples)."""
    stats: dict[str, BucketStats] = {}
    kept_rows: list[tuple[int, int, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    second = {p["index"]: p["samples"] for b in _batches_of(again) for p in again.read(b)} if again else {}
    for batch in batches:
        for prompt in store.read(batch.index):
            samples = prompt["samples"] + second.get(prompt["index"], [])
            kept, dropped = select(samples, selection)
            first = {s["sample_index"] for s in prompt["samples"]}
            stats.setdefault(prompt["bucket"], BucketStats()).add_prompt(
                prompt["samples"], {k for k in kept if k in first}, {k: v for k, v in dropped.items() if k in first})
            for s in samples:
                if s["sample_index"] in kept:
                    kept_rows.append((prompt["index"], s["sample_index"], chat_row(prompt, s, reasoning)))
                elif s["error"] and len(errors) < MAX_ERROR_EXAMPLES:
                    errors.append({"id": prompt["id"], "task_id": prompt["task_id"], "sample": s["sample_index"],
                                   "reasons": s["reasons"], "error": s["error"]})
    kept_rows.sort(key=lambda r: r[:2])
    rows = [r for _, _, r in kept_rows]
    metrics = summarize(stats)
    metrics.update(rows=len(rows), tokens=metrics["total"]["kept_total_tokens"],
                   selection=selection.model_dump(), error_examples=errors)
    return rows, metrics


def _batches_of(store: ShardStore) -> list[int]:
    return sorted(int(p.stem.removeprefix("batch_")) for p in store.folder.glob("batch_*.jsonl"))


STAGE = Stage(NAME, SampleConfig, run_sample,
              "Sample N episodes per task prompt, verify them in their environments, keep verified successes as SFT "
              "data.")
