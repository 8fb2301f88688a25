"""``posttrain eval``: several models on verifiable task sets and by reward-model win rate, in one table.

    models {name: folder}     sets {name: task recipe | built task set}     chat: held-out prompts + reward model
      -> per model (compatible models share one set of rollout workers, switched by weight updates):
           accuracy: one answer per prompt (greedy by default)  } rollout pool + agent loop in each row's env,
           pass@k:   n sampled answers per prompt               } verified by VerifyPool while the next batch generates
           chat:     one answer per held-out prompt
      -> every model's and the reference's (SFT) chat answers scored; win rate against the reference, ties half
      -> OUT/results.json, OUT/results.md (rows = models), OUT/samples.jsonl, OUT/manifest.json

Every model gets the same prompts and the same sampling seeds, so the differences are the models'. A finished model's
samples are kept in ``OUT/parts/<model>``: a killed run, or a re-run with one more model, generates only what is
missing, and the same config with the same inputs again is a no-op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.evaluation.chat import answer_prompts, compare, load_chat_prompts
from posttrain.evaluation.config import EvalConfig, model_dirs
from posttrain.evaluation.metrics import ACCURACY, PASS_AT_K, set_metrics
from posttrain.evaluation.parts import Part, read_part, write_part
from posttrain.evaluation.table import comparison, markdown, rich_table
from posttrain.evaluation.workers import ModelWorkers, load_order
from posttrain.manifest import (
    file_sha256,
    finished_run,
    model_sha256,
    read_manifest,
    write_json,
    write_jsonl,
    write_manifest,
)
from posttrain.rejection.overlap import run_overlapped
from posttrain.rejection.shards import fingerprint
from posttrain.report import Progress, as_progress, results
from posttrain.report.live import JobsBar
from posttrain.rl.rewards import CombinedReward, check_weights, reward_inputs
from posttrain.rollout.agent_loop import run_episodes
from posttrain.rollout.sampling import SamplingParams
from posttrain.stages.contract import Stage, StageResult, Wiring
from posttrain.stages.sample import verify_batch
from posttrain.tasks import Batch, TaskRow, Verifiers, load_tasks, make_batches, row_seed

NAME = "eval"
REFERENCE = "_reference"  # the chat reference when it is a folder rather than one of `models` (not a valid name)
PASS_AT_K_SEED = 1_000_003  # pass@k samples use other seeds than a sampled accuracy answer: independent draws


@dataclass
class Job:
    """One generate call: a batch of a set (``accuracy`` or ``pass@k``) or the chat prompts, for one model."""

    model: str
    kind: str
    set: str = ""
    batch: Batch | None = None
    last: bool = False  # the model's last job: its part is complete once this one is finished

    @property
    def label(self) -> str:
        if self.batch is None:
            return f"{self.model} · chat answers"
        env = Path(self.batch.env).stem if "/" in self.batch.env else self.batch.env  # a plugin's file: its name
        return f"{self.model} · {self.set} {self.kind} · {env} batch {self.batch.index + 1}"


@dataclass
class Plan:
    """What the generation step needs: model folders, sampling per mode and bucket, chat prompts, each model's
    fingerprint (its part's name tag) and the jobs still to run."""

    models: dict[str, Path]
    params: dict[str, dict[str, SamplingParams]]
    chat_prompts: list[dict[str, Any]]
    prints: dict[str, str]
    jobs: list[Job]


def run_eval(cfg: EvalConfig, source: str = "config", progress: Progress | None = None, *, workers: Any = None,
             scorer: Any = None) -> StageResult:
    """Run the eval; the manifest's ``metrics`` hold the results and the table. ``workers``: a running
    ``RolloutPool`` to use while models are compatible with it (not shut down here); ``scorer``: a chat scorer to use
    instead of opening ``chat.scorer`` (anything with ``score(prompts, responses)``)."""
    report = as_progress(progress, NAME)
    say = report.say
    out = STAGE.open(cfg, source)  # the output folder may be written; the rollout engine takes its kwargs
    config = cfg.model_dump(mode="json")

    # 1. Inputs, all checked before any worker starts: models, task sets with per-bucket sampling, chat prompts.
    models = model_dirs(cfg, source)
    sets = {name: load_tasks(tasks, out / "sets" / name, key=f"sets.{name}") for name, tasks in cfg.sets.items()}
    buckets = sorted({row.bucket for rows, _ in sets.values() for row in rows})
    params = {ACCURACY: cfg.sampling.per_bucket(buckets, "sampling", n=1)}
    if cfg.pass_at_k is not None:
        params[PASS_AT_K] = cfg.pass_at_k.sampling.per_bucket(buckets, "pass_at_k.sampling", n=cfg.pass_at_k.n)
    ks = cfg.pass_at_k.k if cfg.pass_at_k is not None else []
    inputs = {f"model:{name}": model_sha256(path) for name, path in models.items()}
    for _, set_inputs in sets.values():
        inputs.update(set_inputs)
    if cfg.rewards is not None:
        check_weights(sorted({row.env for rows, _ in sets.values() for row in rows}), cfg.rewards)
        inputs.update(reward_inputs(cfg.rewards))
    chat_prompts, chat_stats, reference = [], {}, None
    if cfg.chat is not None:
        chat_prompts, chat_inputs, chat_stats = load_chat_prompts(cfg.chat, out / "sets" / "chat", source)
        cfg.chat.sampling.per_bucket({p["bucket"] for p in chat_prompts}, "chat.sampling", n=1)
        reference = _reference(cfg, models, inputs, source)
        inputs.update(chat_inputs)
        if cfg.chat.scorer.kind == "reward_model" and Path(cfg.chat.scorer.reward_model or "").is_dir():
            inputs["reward_model"] = model_sha256(Path(cfg.chat.scorer.reward_model))
    if cfg.resume and finished_run(out, NAME, config, inputs):
        say(f"{out} already holds this evaluation; nothing to do")
        return StageResult.read(out)

    # 2. What each model still needs (a finished part from an earlier run with the same inputs is reused).
    decides = {"sets": {name: set_inputs for name, (_, set_inputs) in sets.items()},
               "params": {kind: {b: p.model_dump() for b, p in per.items()} for kind, per in params.items()},
               "agent": cfg.agent.model_dump(), "envs": cfg.envs, "verify_timeout_s": cfg.verify.timeout_s,
               "seed": cfg.seed, "batch_size": cfg.batch_size,
               "rollout": cfg.rollout.model_dump(exclude={"resources", "max_chunk_failures"}),
               "chat": cfg.chat.sampling.model_dump() if cfg.chat else None,
               "chat_prompts": [p["id"] for p in chat_prompts],
               "rewards": cfg.rewards.model_dump() if cfg.rewards is not None else None,
               "chat_format": {"chat_template": cfg.chat_template, "tool_format": cfg.tool_format}}
    prints = {name: fingerprint({**decides, "model": inputs[f"model:{name}"]}) for name in models}
    parts = {name: read_part(out / "parts" / name, prints[name]) if cfg.resume else None for name in models}
    order = load_order(models, Path(workers.model_path) if workers is not None else None)
    plan = Plan(models, params, chat_prompts, prints, _jobs(cfg, order, sets, [n for n in order if parts[n] is None]))
    reused = [n for n in models if parts[n] is not None]
    if reused:
        say(f"reusing the samples of {', '.join(reused)} from an earlier run")

    # 3. Generate (one model after another, weights switched in place) and verify, overlapped.
    chat_scorer = scorer
    if cfg.chat is not None and chat_scorer is None:  # opened first: a bad reward-model folder fails before any work
        from posttrain.preference.scorers import open_scorer

        chat_scorer = open_scorer(cfg.chat.scorer, key=f"{source}: chat.scorer")
    loaded: dict[str, str] = {name: "earlier run" for name in reused}
    seconds: dict[str, float] = {}
    try:
        if plan.jobs:
            loaded, seconds = _generate_all(cfg, plan, parts, workers, out, report)
            loaded.update((name, "earlier run") for name in reused)
        done = {name: part for name, part in parts.items() if part is not None}
        assert len(done) == len(parts), "every model's part is finished here"

        # 4. Metrics per model and set; every model's chat answers scored and compared with the reference's.
        results = {name: {"path": str(models[name]), "sha256": inputs[f"model:{name}"], "loaded": loaded.get(name),
                          "generate_s": seconds.get(name),
                          "sets": {s: set_metrics([x for x in done[name].samples if x["set"] == s], ks,
                                                  with_rewards=cfg.rewards is not None) for s in sets}}
                   for name in cfg.models}
        chat_records: list[dict[str, Any]] = []
        if cfg.chat is not None:
            assert reference is not None
            say(f"scoring the chat answers of {len(done)} model(s) to {len(chat_prompts)} prompts "
                f"({cfg.chat.scorer.kind.replace('_', ' ')})")
            chat_results, chat_records = compare(chat_scorer, chat_prompts, {n: p.answers for n, p in done.items()},
                                                 reference, cfg.chat.tie_tolerance)
            for name in cfg.models:
                results[name]["chat"] = chat_results[name]
            chat_stats.update(reference=cfg.chat.reference, reference_mean_score=chat_results[reference]["mean_score"],
                              scorer=chat_scorer.stats() if hasattr(chat_scorer, "stats") else {})
    finally:
        if chat_scorer is not None and scorer is None:
            chat_scorer.close()

    # 5. The table, the files, the manifest.
    columns, rows = comparison(results, ks)
    metrics = {"models": results, "columns": columns, "rows": rows, "chat": chat_stats or None,
               "sets": {s: {"prompts": len(r), "buckets": sorted({x.bucket for x in r}),
                            "envs": sorted({x.env for x in r})} for s, (r, _) in sets.items()},
               "pass_at_k": {"n": cfg.pass_at_k.n, "k": ks} if cfg.pass_at_k else None}
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "samples.jsonl", [s for name in cfg.models for s in done[name].samples] + chat_records)
    write_json(out / "results.json", metrics)
    (out / "results.md").write_text(_report(cfg, columns, rows, metrics), encoding="utf-8")
    outputs = {f: file_sha256(out / f) for f in ("results.json", "results.md", "samples.jsonl")}
    write_manifest(out, {"stage": NAME, "config": config, "inputs": inputs, "outputs": outputs, "metrics": metrics})
    say(f"wrote {out / 'results.md'}")
    return StageResult.read(out)


def _reference(cfg: EvalConfig, models: dict[str, Path], inputs: dict[str, str], source: str) -> str:
    """The chat reference's name: one of ``models``, or ``_reference`` for a folder given directly (added to
    ``models`` so its answers are generated like the others')."""
    from posttrain.models.loading import resolve_model

    assert cfg.chat is not None
    if cfg.chat.reference in models:
        return cfg.chat.reference
    models[REFERENCE] = resolve_model(cfg.chat.reference, key=f"{source}: chat.reference (not one of models: "
                                      f"{', '.join(cfg.models)}; as a folder)")
    inputs[f"model:{REFERENCE}"] = model_sha256(models[REFERENCE])
    return REFERENCE


def _jobs(cfg: EvalConfig, order: list[str], sets: dict[str, tuple[list[TaskRow], Any]],
          todo: list[str]) -> list[Job]:
    """Every generate call still needed, model after model in ``order``; the internal reference answers chat only."""
    jobs: list[Job] = []
    for name in (n for n in order if n in todo):
        mine: list[Job] = []
        if name != REFERENCE:
            for set_name, (rows, _) in sets.items():
                for kind in [ACCURACY] + ([PASS_AT_K] if cfg.pass_at_k else []):
                    mine += [Job(name, kind, set_name, batch) for batch in make_batches(rows, cfg.batch_size)]
        if cfg.chat is not None:
            mine.append(Job(name, "chat"))
        mine[-1].last = True
        jobs += mine
    return jobs


def _generate_all(cfg: EvalConfig, plan: Plan, parts: dict[str, Part | None], pool: Any, out: Path,
                  report: Progress) -> tuple[dict[str, str], dict[str, float]]:
    """Run every job: generation in this thread (switching models as the jobs do), verification and the writing of
    finished parts in the background, so batch i is verified while batch i+1 generates. Returns how each model got
    into the workers ("weights" or "started") and its generation seconds."""
    from posttrain.models.chat import load_chat

    jobs, models, params = plan.jobs, plan.models, plan.params
    # Each model's own chat format (or the config's template and tool format), checked before any worker starts.
    chats = {name: load_chat(models[name], cfg.chat_template, cfg.tool_format, source=f"eval: models.{name}")
             for name in dict.fromkeys(job.model for job in jobs)}

    loaded: dict[str, str] = {}
    seconds: dict[str, float] = {}
    envs = {job.batch.env for job in jobs if job.batch is not None}
    rewards = CombinedReward(cfg.rewards) if cfg.rewards is not None else None
    verifiers = Verifiers.start(cfg.verify, envs, cfg.envs)
    building = {job.model: Part() for job in jobs}
    progress = JobsBar(NAME, len(jobs), report.say)
    workers = ModelWorkers(cfg.rollout, pool=pool, log=progress.note)
    try:
        with progress:
            def generate(job: Job) -> Any:
                progress.working_on(job.label)
                started = time.perf_counter()
                pool, how = workers.load(job.model, models[job.model])
                loaded.setdefault(job.model, how)
                if job.batch is None:
                    assert cfg.chat is not None
                    result = answer_prompts(pool, chats[job.model].tokenizer, plan.chat_prompts,
                                            cfg.chat.sampling, cfg.seed)
                else:
                    seed = cfg.seed + (PASS_AT_K_SEED if job.kind == PASS_AT_K else 0)
                    sampling = [params[job.kind][row.bucket].with_updates(seed=row_seed(seed, row))
                                for row in job.batch.rows]
                    result = run_episodes(pool, job.batch.env, [row.task for row in job.batch.rows], sampling,
                                          max_turns=cfg.agent.max_turns,
                                          max_episode_tokens=cfg.agent.max_episode_tokens,
                                          env_kwargs=cfg.envs.get(job.batch.env), chat=chats[job.model])
                seconds[job.model] = round(seconds.get(job.model, 0.0) + time.perf_counter() - started, 3)
                return result

            def finish(job: Job, result: Any) -> None:
                part = building[job.model]
                if job.batch is None:
                    part.answers = result
                    note = f"{sum(a['answer'] is not None for a in result)} answers"
                else:
                    samples = _sample_rows(job, verify_batch(verifiers[job.batch.env], job.batch, result, rewards))
                    part.samples += samples
                    note = f"{sum(s['passed'] for s in samples)}/{len(samples)} passed"
                progress.finished(f"{job.label}: {note}")
                if job.last:
                    write_part(out / "parts" / job.model, plan.prints[job.model], part)
                    parts[job.model] = part

            run_overlapped(jobs, generate, finish)
    finally:
        verifiers.close()
        workers.close()
    report.say(f"rollout workers started {workers.starts} time(s); {workers.weight_updates} model(s) loaded by weight "
        "update")
    return loaded, seconds


def _sample_rows(job: Job, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verified samples of one batch as ``samples.jsonl`` rows (one per sample)."""
    rows = []
    for rec in records:
        for s in rec["samples"]:
            response = next((m.get("content") or "" for m in reversed(s["messages"]) if m["role"] == "assistant"), "")
            rows.append({"kind": "task", "model": job.model, "set": job.set, "mode": job.kind, "index": rec["index"],
                         "row_id": rec["id"], "task_id": rec["task_id"], "bucket": rec["bucket"], "env": rec["env"],
                         "sample_index": s["sample_index"], "response": response, "passed": s["passed"],
                         "score": s["score"], "reward": s["reward"], "rewards": s["rewards"],
                         "reasons": s["reasons"], "error": s["error"],
                         "end_reason": s["end_reason"], "truncated": s["truncated"],
                         "model_tokens": s["model_tokens"], "messages": s["messages"]})
    return rows


def _report(cfg: EvalConfig, columns: list[str], rows: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    """results.md: the table, then what its numbers are."""
    notes = []
    for name, info in metrics["sets"].items():
        notes.append(f"- `{name}`: {info['prompts']} prompts; buckets {', '.join(info['buckets'])}; "
                     f"environments {', '.join(info['envs'])}.")
    if cfg.sets:
        base = cfg.sampling.resolve()
        how = "greedy" if base.greedy else f"one sample at temperature {base.temperature} (pass@1)"
        notes.append(f"- `acc`: share of prompts whose answer passed its environment's verifier; {how}, "
                     f"max_tokens {base.max_tokens}, up to {cfg.agent.max_turns} turns.")
    if cfg.pass_at_k is not None:
        sampled = cfg.pass_at_k.sampling.resolve()
        notes.append(f"- `pass@k`: unbiased estimator over n={cfg.pass_at_k.n} samples per prompt at temperature "
                     f"{sampled.temperature}, averaged over prompts.")
    if cfg.chat is not None:
        chat = metrics["chat"]
        notes.append(f"- `win rate`: against `{cfg.chat.reference}` on {chat['compared']} held-out chat prompts "
                     f"(ties count half), scored by the {cfg.chat.scorer.kind.replace('_', ' ')}; `reward`: mean "
                     "score of the model's answers.")
    header = f"# Evaluation: {', '.join(cfg.models)}\n\n"
    return header + markdown(columns, rows) + "\n" + "\n".join(notes) + "\n"



# ----------------------------------------------------------------------------------------------- in the pipeline
def show_table(done: StageResult) -> None:
    results.print(rich_table(done.metrics["columns"], done.metrics["rows"], f"eval: {done.output_dir}"))


def wire_eval(section: dict[str, Any], w: Wiring) -> None:
    """Every model the run made (a list picks some by name), the data stage's task set of each set's name (default:
    ``heldout``), and the chat win rate on the prompts the Chat track held out, scored by the run's reward model,
    against ``sft``."""
    models = section.get("models")
    if models is None or isinstance(models, list):
        wanted = list(w.models) if models is None else models
        unknown = [m for m in wanted if m not in w.models]
        if unknown:
            raise UserError(f"{w.source}: eval: models: {', '.join(map(str, unknown))}: not a model of this run; "
                            f"expected names among {', '.join(w.models)}, or a mapping name -> folder")
        section["models"] = {name: w.models[name] for name in wanted}
    if "sets" not in section and "data.heldout" in w.products:
        section["sets"] = {"heldout": {}}
    if isinstance(section.get("sets"), dict):  # a set without a source reads the data stage's dataset of its name
        section["sets"] = {name: w.tasks(tasks, str(name), f"sets.{name}") for name, tasks in section["sets"].items()}
    if "chat" not in section and w.enabled("rm") and "data.preference" in w.products:
        section["chat"] = {}
    chat = section.get("chat")
    if isinstance(chat, dict):
        split = w.shared.get("chat_split") or {}
        if "prompts" not in chat:
            chat["prompts"] = split.get("prompts") or w.dataset("preference", "chat.prompts")
        for key in ("held_out_fraction", "split_seed"):  # only the prompts the Chat track never trained on
            if key in split:
                chat.setdefault(key, split[key])
        chat.setdefault("reference", "sft" if "sft" in section["models"] else next(iter(section["models"])))
        if "scorer" not in chat and w.enabled("rm"):
            chat["scorer"] = {"kind": "reward_model", "reward_model": w.products["rm"]}


def eval_summary(cfg: EvalConfig) -> dict[str, Any]:
    m = read_manifest(cfg.output_dir)["metrics"]
    return {"gains": [], "details": {}, "table": {"columns": m["columns"], "rows": m["rows"]}}


def eval_products(cfg: EvalConfig, w: Wiring) -> None:
    return None  # the end of the run: nothing reads its folder


STAGE = Stage(NAME, EvalConfig, run_eval,
              "Compare models on verifiable sets (accuracy, pass@k per bucket) and by win rate against the SFT model.",
              wire=wire_eval, produces=eval_products, summary=eval_summary, show=show_table)
