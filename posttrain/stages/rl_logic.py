"""The Logic track: verifiable-reward RL (GRPO or RLOO, PPO's clipped surrogate without a critic) on environment tasks.

The recipe, top to bottom:

1. inputs: the starting model, the training tasks and the held-out tasks (task recipes or built task datasets; every
   row's environment must accept it); the same config and inputs as a finished run -> nothing to do;
2. workers: the Ray rollout pool (vLLM or transformers engines) and one verifier pool per environment;
3. trainer: TRL's GRPOTrainer, generating through the pool and the multi-turn agent loop (environment tokens masked
   out of the loss), rewarded by each row's own environment, its weights pushed to the workers after every step, the
   held-out tasks evaluated every N steps;
4. train, resuming from the newest checkpoint in ``output_dir/checkpoints``;
5. outputs: the model, ``metrics.jsonl``, ``manifest.json`` (held-out reward before/after), a summary table.

``run_logic_track`` keeps no global state and writes only under ``output_dir``, so the parallel runner can call it
inside a Ray actor next to the Chat track.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from posttrain.config import validate
from posttrain.errors import UserError
from posttrain.manifest import METRICS_FILE, finished_run, model_sha256
from posttrain.models.chat import describe, load_chat
from posttrain.models.loading import resolve_model
from posttrain.report import Progress, as_progress
from posttrain.report.tables import print_finished
from posttrain.rl.config import LogicTrackConfig
from posttrain.rl.rewards import reward_inputs
from posttrain.stages.contract import Stage, StageResult, output_folder
from posttrain.tasks import TaskRow, Verifiers, load_tasks
from posttrain.training.arguments import trainer_arguments
from posttrain.training.checkpoints import RunIdentity, fit, resume_point
from posttrain.training.model import check_lora, load_model, peft_config, save_model
from posttrain.training.outputs import write_outputs

NAME = "rl-logic"
STAGE_ID = "rl_logic"  # the manifest's stage name (kept from before the commands were named after the stages)
# (training environments, verifier pool per environment) -> (TRL reward functions, their weights)
RewardFactory = Callable[[list[str], dict[str, Any]], tuple[list[Any], list[float]]]


def run_logic_track(config: LogicTrackConfig | dict[str, Any], source: str = "config",
                    progress: Progress | None = None, *, pool: Any = None,
                    rewards: RewardFactory | None = None) -> StageResult:
    """Train the Logic track as configured; its model is saved into ``output_dir``.

    ``config``: a validated config or a plain mapping (e.g. a section of the parallel run's YAML); ``progress``: gets
    each logged metrics row as a ``log`` event; ``pool``: running rollout workers to use (any weights: the trainer's
    are pushed before the first rollout), by default a pool is started from ``config.rollout`` and shut down at the
    end; ``rewards``: ``(train envs, verifiers by env) -> (reward functions, weights)`` replacing the per-env verify
    rewards and format penalty (the calibrate stage's RLCR reward).
    """
    cfg = config if isinstance(config, LogicTrackConfig) else validate(LogicTrackConfig, config, source)
    report = as_progress(progress, NAME)
    out = STAGE.open(cfg, source)  # the output folder may be written; trackers and engines exist
    settings = cfg.model_dump(mode="json")

    # 1. Inputs. Same config and inputs as a finished run: done.
    model_dir = resolve_model(cfg.model, key=f"{source}: model")
    rows, inputs = load_tasks(cfg.tasks, out / "tasks", key="tasks")
    heldout_rows: list[TaskRow] = []
    if cfg.heldout is not None:
        heldout_rows, heldout_inputs = load_tasks(cfg.heldout.tasks, out / "heldout_tasks", key="heldout.tasks")
        inputs.update(heldout_inputs)
    inputs[f"model:{model_dir}"] = model_sha256(model_dir)
    inputs.update(reward_inputs(cfg.rewards))  # your reward functions' files (each loaded once: a bad one fails now)
    if finished_run(out, STAGE_ID, settings, inputs):
        report.say(f"{out} is already trained with this config and these inputs; nothing to do")
        return StageResult.read(out, model_dir=out)
    envs = check_tasks(rows, heldout_rows, cfg)
    params = cfg.sampling.per_bucket({r.bucket for r in rows + heldout_rows})
    check_lora(cfg.lora, model_dir, f"{source}: lora")
    chat = load_chat(model_dir, cfg.chat_template, cfg.tool_format, source=source)  # the model's own format
    run = RunIdentity(STAGE_ID, settings, inputs)
    resume_point(out, run, cfg.resume)  # checkpoints of another run: refused before any worker starts
    report.say(describe(chat))

    # Imported only now, so that a bad config or task row fails before TRL, vLLM and Ray load (seconds each).
    from posttrain.rl.ahead import AheadRollout
    from posttrain.rl.heldout import HeldOutEval, evaluate_rows
    from posttrain.rl.progress import MetricsLog
    from posttrain.rl.rewards import combined_rewards, judge, reward_functions
    from posttrain.rl.rollout_func import PoolRollout, Refill
    from posttrain.rl.trainer import LogicGRPOTrainer
    from posttrain.rl.weight_sync import WeightSync
    from posttrain.rollout.pool import RolloutPool
    from posttrain.training.callbacks import training_callbacks

    with ExitStack() as stack:
        # 2. Workers: the rollout pool (able to load the policy's LoRA adapter when it is pushed) and one verifier
        # pool per environment; with rollouts ahead, one thread makes every call on them.
        if pool is None:
            pool = RolloutPool.from_config(model_dir, rollout_for_lora(cfg))
            stack.callback(pool.shutdown)
        verifiers = stack.enter_context(Verifiers.start(cfg.verify, envs, cfg.envs))
        thread = rollout_thread(cfg)
        if thread is not None:
            stack.callback(thread.close)  # runs first: the pool outlives what is queued on it
        on_rollout_thread = thread.run if thread is not None else (lambda job: job())

        # 3. Trainer: GRPO with our rollouts, rewards, weight pushes and held-out evaluation.
        tokenizer = chat.tokenizer
        model, stored_dtype = load_model(model_dir, cfg.lora)
        train_envs = list(dict.fromkeys(row.env for row in rows))
        make_rewards = rewards or (lambda envs_, verifiers_: reward_functions(envs_, verifiers_, cfg.rewards))
        reward_funcs, reward_weights = make_rewards(train_envs, verifiers)

        def verify(episodes: Any) -> None:  # verdicts kept on the episodes: the rewards read them
            for env in dict.fromkeys(ep.env for ep in episodes):
                judge([ep for ep in episodes if ep.env == env], verifiers[env])

        refill = None
        if cfg.dynamic_sampling is not None:
            refill = Refill(cfg.dynamic_sampling.max_rounds, verify=verify, score=lambda eps: combined_rewards(
                eps, reward_funcs, reward_weights, [ep.env for ep in eps]))
        play = PoolRollout(pool, rows, params, cfg.agent, cfg.envs, cfg.train.seed, refill=refill, chat=chat)
        ahead = AheadRollout(play, thread, cfg.max_staleness, verify) if thread is not None else None
        sync = WeightSync(pool, dtype=stored_dtype, mode=cfg.weight_push,
                          send=thread.send_push if thread is not None else None)
        hooks: list[Any] = [MetricsLog(out / METRICS_FILE), sync]
        heldout = None
        if cfg.heldout is not None:
            h = cfg.heldout
            heldout = HeldOutEval(
                lambda sampling: on_rollout_thread(
                    lambda: evaluate_rows(pool, heldout_rows, sampling, cfg.agent, cfg.envs, verifiers, chat)),
                heldout_rows, params, h.every_steps, h.at_start, h.samples_per_task, h.temperature, cfg.train.seed)
            hooks.append(heldout)
        trainer = LogicGRPOTrainer(
            model=model, reward_funcs=reward_funcs, args=grpo_arguments(cfg, out, reward_weights),
            train_dataset=prompt_dataset(rows), processing_class=tokenizer, peft_config=peft_config(cfg.lora),
            rollout_func=ahead or play, callbacks=hooks + training_callbacks(cfg.train, out, report),
            weight_sync=sync, ahead=ahead, leave_one_out=cfg.algorithm == "rloo")
        if heldout is not None:
            heldout.attach(trainer)
        report.say(f"weights reach the rollout workers as {push_description(trainer.model, cfg)}; rollouts "
                   + (f"run up to {cfg.max_staleness} step(s) ahead of training" if cfg.max_staleness
                      else "are on-policy"))

        # 4. Train, resuming from the newest checkpoint.
        trained, _ = fit(trainer, out, cfg.resume, run)

    # 5. Outputs: the model, metrics.jsonl, the manifest, a summary.
    outputs = save_model(trainer, out, tokenizer, cfg.lora, stored_dtype)
    history = trainer.state.log_history
    metrics = track_metrics(trained, history, trainer.state.global_step, len(rows), len(heldout_rows))
    metrics["weight_sync"] = sync.stats()
    metrics["episodes_played"] = play.episodes_played
    metrics["rollouts"] = ahead.summary() if ahead is not None else {"max_staleness": 0}
    if refill is not None:
        metrics["dynamic_sampling"] = {**play.stats, "zero_variance_fraction": round(
            play.stats["zero_variance"] / play.stats["groups"], 4) if play.stats["groups"] else None}
    metrics["chat"] = chat.record()
    metrics["rollout_forks"] = play.forks  # rows a history-rewriting template cut off (not in GRPO's loss)
    write_outputs(out, STAGE_ID, settings, inputs, outputs, metrics, history, cfg.train.keep_checkpoints)
    if not report.forwarding:
        print_finished(NAME, out, metrics)
    return StageResult.read(out, model_dir=out)


# ------------------------------------------------------------------------------------------------------------ inputs
def check_tasks(rows: list[TaskRow], heldout_rows: list[TaskRow], cfg: LogicTrackConfig) -> list[str]:
    """Every row's environment accepts its task (``reset``), held-out tasks are not trained on, and every ``envs``
    entry is used. Returns the environments, training ones first."""
    from posttrain.environment import make_env
    from posttrain.rl.rewards import check_weights

    train_prompts = {json.dumps(r.task.get("messages"), sort_keys=True) for r in rows}
    leaked = [r.id for r in heldout_rows if json.dumps(r.task.get("messages"), sort_keys=True) in train_prompts]
    if leaked:
        raise UserError(f"heldout.tasks: {len(leaked)} held-out prompts are also training prompts (e.g. row id "
                        f"{leaked[0]}); held-out tasks must be unseen")
    envs = list(dict.fromkeys(r.env for r in [*rows, *heldout_rows]))
    check_weights(list(dict.fromkeys(r.env for r in rows)), cfg.rewards)
    unused = sorted(set(cfg.envs) - set(envs))
    if unused:
        raise UserError(f"envs: {', '.join(unused)}: no task uses this environment (tasks use {', '.join(envs)})")
    for env_name in envs:
        try:
            env = make_env(env_name, **cfg.envs.get(env_name, {}))
        except TypeError as e:
            raise UserError(f"envs.{env_name}: {e}") from None
        try:
            for where, row in [("tasks", r) for r in rows] + [("heldout.tasks", r) for r in heldout_rows]:
                if row.env != env_name:
                    continue
                try:
                    env.reset(row.task)
                except Exception as e:  # the env's own message says what is wrong with the task
                    message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
                    raise UserError(f"{where}: row {row.index} (id {row.id}): environment {env_name} rejects the "
                                    f"task: {message}") from None
        finally:
            env.close()
    return envs


def prompt_dataset(rows: list[TaskRow]) -> Any:
    """What the trainer iterates: the prompt (for logs), the row index (for the rollout), env and bucket (rewards)."""
    import datasets

    prompts = [[{"role": str(m.get("role")), "content": str(m.get("content") or "")} for m in r.task["messages"]]
               for r in rows]
    return datasets.Dataset.from_dict({"prompt": prompts, "row": [i for i in range(len(rows))],
                                       "env": [r.env for r in rows], "bucket": [r.bucket for r in rows]})


def rollout_thread(cfg: LogicTrackConfig) -> Any:
    """The thread every pool call goes through when rollouts run ahead of training; None when they are on-policy."""
    from posttrain.rl.ahead import RolloutThread

    return RolloutThread() if cfg.max_staleness else None


def rollout_for_lora(cfg: LogicTrackConfig) -> Any:
    """The rollout section, with vLLM's LoRA support switched on when the policy's adapter is what gets pushed."""
    if cfg.lora is None or cfg.weight_push == "merged" or cfg.rollout.engine != "vllm":
        return cfg.rollout
    kwargs = dict(cfg.rollout.engine_kwargs)
    kwargs.setdefault("enable_lora", True)
    kwargs.setdefault("max_lora_rank", next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= cfg.lora.r))
    return cfg.rollout.model_copy(update={"engine_kwargs": kwargs})


def push_description(model: Any, cfg: LogicTrackConfig) -> str:
    from posttrain.rl.weight_sync import push_mode

    mode = push_mode(model, cfg.weight_push)
    return {"full": "full weights each step", "merged": "merged weights (LoRA folded in) each step",
            "adapter": "the LoRA adapter only each step (the base once, when the workers might hold another)"}[mode]


# ----------------------------------------------------------------------------------------------------------- trainer
def grpo_arguments(cfg: LogicTrackConfig, out: Path, reward_weights: list[float]) -> Any:
    """TRL's ``GRPOConfig`` for the track: the shared mapping plus GRPO's own settings."""
    from trl import GRPOConfig

    t, s = cfg.train, cfg.sampling.resolve()
    longest = s.max_tokens * cfg.agent.max_turns
    return trainer_arguments(
        GRPOConfig, t, out,
        per_device_train_batch_size=t.micro_batch_size,
        num_generations=t.num_generations,
        num_iterations=t.num_iterations,
        loss_type=t.loss_type,
        epsilon=t.epsilon,
        epsilon_high=t.epsilon_high,
        beta=t.beta,
        scale_rewards=cfg.scale_rewards,
        reward_weights=reward_weights,
        temperature=s.temperature,  # the trainer re-scores episodes at the sampling temperature
        max_completion_length=min(longest, cfg.agent.max_episode_tokens or longest),  # dr_grpo's normalizer
        vllm_importance_sampling_correction=t.importance_sampling.correction,
        vllm_importance_sampling_mode=t.importance_sampling.mode,
        vllm_importance_sampling_clip_max=t.importance_sampling.clip_max,
        vllm_importance_sampling_clip_min=t.importance_sampling.clip_min,
        mask_truncated_completions=t.mask_truncated_completions,
        data_seed=t.seed,
        log_completions=False,
    )


# ----------------------------------------------------------------------------------------------------------- outputs
def track_metrics(result: Any, history: list[dict[str, Any]], steps: int, n_tasks: int,
                  n_heldout: int) -> dict[str, Any]:
    """The manifest's numbers: training reward first/last, held-out reward/accuracy before and after, timing."""
    train_rows = [r for r in history if "reward" in r]
    evals = [{k: v for k, v in r.items() if k == "step" or k.startswith("heldout/")}
             for r in history if "heldout/reward" in r]
    metrics: dict[str, Any] = {
        "steps": steps,
        "tasks": n_tasks,
        "heldout_tasks": n_heldout,
        "train_reward_first": train_rows[0]["reward"] if train_rows else None,
        "train_reward_last": train_rows[-1]["reward"] if train_rows else None,
        "train_reward_mean": (sum(r["reward"] for r in train_rows) / len(train_rows)) if train_rows else None,
        "duration_s": round(float(result.metrics.get("run_seconds", result.metrics.get("train_runtime", 0.0))), 3),
        "sessions": result.metrics.get("sessions", 1),
        "heldout": evals,
    }
    if evals:
        metrics["heldout_before"], metrics["heldout_after"] = evals[0], evals[-1]
    return metrics


STAGE = Stage(NAME, LogicTrackConfig, run_logic_track,
              "Verifiable-reward RL on math, code and tool-calling tasks: GRPO or RLOO through the rollout workers.",
              model_dir=output_folder, manifest_stage=STAGE_ID)
