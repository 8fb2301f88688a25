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
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    batch_size: int = Field(16, ge=1, description="prompts per batch (and per shard)")
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
    out = Path(cfg.output_dir)
    model = resolve_model(cfg.model, key=f"{source}: model")
    config = cfg.model_dump(mode="json")

    # 1. Prompts, their sampling params (per bucket) and the batches they are cut into.
    rows, inputs = load_tasks(cfg.tasks, out / "tasks")
    params = cfg.sampling.per_bucket({r.bucket for r in rows})
    batches = make_batches(rows, cfg.batch_size)
    inputs[f"model:{model.name}"] = model_sha256(model)
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

    # 4. Generate and verify, overlapped; each finished batch becomes a shard.
    timing: dict[str, Any] = {}
    restarts = 0
    if todo:
        own_pool = pool is None
        if pool is None:
            from posttrain.rollout.pool import RolloutPool

            report.say(f"starting {cfg.rollout.num_workers} {cfg.rollout.engine} rollout worker(s) for {model}")
            pool = RolloutPool.from_config(model, cfg.rollout)
        try:
            with Verifiers.start(cfg.verify, {b.env for b in todo}, cfg.envs) as verifiers:
                def generate(batch: Batch) -> list[Episode]:
                    return generate_batch(pool, batch, params, cfg, chat)

                def finish(batch: Batch, episodes: list[Episode]) -> None:
                    records = verify_batch(verifiers[batch.env], batch, episodes)
                    store.write(batch.index, records)
                    passed = sum(s["passed"] for r in records for s in r["samples"])
                    report.say(f"batch {batch.index + 1}/{len(batches)} ({batch.env}, {len(batch.rows)} prompts): "
                               f"{sum(len(r['samples']) for r in records)} samples, {passed} passed")

                restarts_before = pool.restarts
                times = run_overlapped(todo, generate, finish)
                restarts = pool.restarts - restarts_before
        finally:
            if own_pool:
                pool.shutdown()
        timing = {"wall_s": round(times.wall_s, 3), "generate_s": round(times.generate_s, 3),
                  "verify_s": round(times.finish_s, 3), "generate_waited_s": round(times.waits_s, 3),
                  "overlap_ratio": round(times.wall_s / max(times.generate_s, times.finish_s, 1e-9), 4)}

    # 5. Select from every shard (in batch order) and write the dataset and its manifest.
    data_rows, metrics = _assemble(store, batches, cfg.selection, cfg.reasoning)
    out.mkdir(parents=True, exist_ok=True)
    data_sha = write_chat_parquet(out / DATA_FILE, data_rows)
    metrics.update(timing=timing, rollout_restarts=restarts, chat=chat.record(),
                   batches={"total": len(batches), "from_earlier_run": len(batches) - len(todo),
                            "generated": len(todo)})
    write_manifest(out, {"stage": NAME, "kind": "chat", "columns": COLUMNS, "config": config, "inputs": inputs,
                         "outputs": {DATA_FILE: data_sha}, "metrics": metrics})
    total = metrics["total"]
    report.say(f"kept {total['kept']} of {total['samples']} samples ({total['passed']} passed); pass@1 "
               f"{total['pass@1']:.3f}; wrote {len(data_rows)} rows to {out / DATA_FILE}")
    return StageResult.read(out)


def generate_batch(pool: Any, batch: Batch, params: dict[str, SamplingParams], cfg: SampleConfig,
                   chat: Any = None) -> list[Episode]:
    """N episodes per prompt of one batch; each prompt's seed comes from the run's seed and the prompt."""
    sampling = [params[row.bucket].with_updates(seed=row_seed(cfg.seed, row)) for row in batch.rows]
    return run_episodes(pool, batch.env, [row.task for row in batch.rows], sampling,
                        max_turns=cfg.agent.max_turns, max_episode_tokens=cfg.agent.max_episode_tokens,
                        env_kwargs=cfg.envs.get(batch.env), chat=chat)


def verify_batch(verifier: Any, batch: Batch, episodes: list[Episode]) -> list[dict[str, Any]]:
    """Verify a batch's episodes; one shard record per prompt, holding all its samples and their verdicts."""
    from posttrain.environment import VerifyResult

    to_check = [i for i, ep in enumerate(episodes) if ep.end_reason != "env_error"]
    verdicts: dict[int, VerifyResult] = {}
    for j, result in verifier.verify_many(episodes[i].trajectory for i in to_check):
        verdicts[to_check[j]] = result
    records: dict[int, dict[str, Any]] = {}
    by_id = {id(row.task): row for row in batch.rows}  # run_episodes keeps each task object on its episodes
    for i, ep in enumerate(episodes):
        row: TaskRow = by_id[id(ep.task)]
        rec = records.setdefault(row.index, {"index": row.index, "id": row.id, "bucket": row.bucket,
                                             "source": row.source, "env": row.env, "task_id": row.task.get("id"),
                                             "samples": []})
        verdict = verdicts.get(i) or VerifyResult.failure(ep.error or "the episode did not run", reason="env_error")
        rec["samples"].append(_sample_record(ep, verdict))
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
              reasoning: str = "keep") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Apply the selection policy to every prompt in the shards; the kept rows (in prompt order) and the metrics."""
    stats: dict[str, BucketStats] = {}
    kept_rows: list[tuple[int, int, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    for batch in batches:
        for prompt in store.read(batch.index):
            kept, dropped = select(prompt["samples"], selection)
            stats.setdefault(prompt["bucket"], BucketStats()).add_prompt(prompt["samples"], set(kept), dropped)
            for s in prompt["samples"]:
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


STAGE = Stage(NAME, SampleConfig, run_sample,
              "Sample N episodes per task prompt, verify them in their environments, keep verified successes as SFT "
              "data.")
