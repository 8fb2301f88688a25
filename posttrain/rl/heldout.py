"""Held-out reward and accuracy during training, through the same rollout pool, agent loop and verifiers.

Before the first step (the starting model's numbers) and after every ``every_steps`` optimizer steps (and the last),
every held-out task is played ``samples_per_task`` times with the current weights (greedy by default) and each episode
is verified by its environment. Logged rows (``metrics.jsonl``, TensorBoard, Progress events):

    heldout/reward, heldout/accuracy            mean verify score and pass rate over all episodes
    heldout/<env>/reward, heldout/<env>/accuracy the same per environment
    heldout/malformed                           share of episodes with a format problem
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from transformers import Trainer, TrainerCallback

from posttrain.rl.rewards import env_label, format_problems
from posttrain.rl.rollout_func import episode_seed, play_rows
from posttrain.rollout.agent_loop import AgentLoopConfig
from posttrain.rollout.sampling import SamplingParams
from posttrain.tasks import TaskRow


def evaluate_rows(pool: Any, rows: Sequence[TaskRow], sampling: Sequence[SamplingParams], agent: AgentLoopConfig,
                  env_kwargs: Mapping[str, dict[str, Any]], verifiers: Mapping[str, Any],
                  chat: Any = None) -> dict[str, float]:
    """Play and verify every row (in the model's chat format ``chat``); the metrics above (without the
    ``heldout/`` prefix)."""
    started = time.perf_counter()
    episodes = play_rows(pool, rows, sampling, agent, env_kwargs, chat)
    row_of = [row for row, params in zip(rows, sampling, strict=True) for _ in range(params.n)]
    scores: dict[str, list[tuple[float, bool]]] = {}
    for env in dict.fromkeys(row.env for row in rows):
        mine = [i for i, row in enumerate(row_of) if row.env == env]
        results = verifiers[env].verify_all(episodes[i].trajectory for i in mine)
        scores[env] = [(float(r.score), bool(r.passed)) for r in results]
    every = [s for env_scores in scores.values() for s in env_scores]
    metrics = {"reward": _mean(s for s, _ in every), "accuracy": _mean(p for _, p in every),
               "malformed": _mean(bool(format_problems(ep)) for ep in episodes), "episodes": len(episodes)}
    for env, env_scores in scores.items():
        label = env_label(env)
        metrics[f"{label}/reward"] = _mean(s for s, _ in env_scores)
        metrics[f"{label}/accuracy"] = _mean(p for _, p in env_scores)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics


def _mean(values: Any) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


class HeldOutEval(TrainerCallback):
    """Runs :func:`evaluate_rows` at the start and every ``every_steps`` steps; logs through the trainer.

    Must come after :class:`WeightSync` in the callback list (callbacks run in order, so the workers hold the step's
    weights when the evaluation plays). Call :meth:`attach` with the trainer once it exists.
    """

    def __init__(self, evaluate: Callable[[list[SamplingParams]], dict[str, float]], rows: Sequence[TaskRow],
                 params: Mapping[str, SamplingParams], every_steps: int, at_start: bool, samples: int,
                 temperature: float, seed: int) -> None:
        self.evaluate, self.rows, self.every_steps, self.at_start = evaluate, list(rows), every_steps, at_start
        self.params = {bucket: p.with_updates(n=samples, temperature=temperature) for bucket, p in params.items()}
        self.seed = seed
        self.trainer: Trainer | None = None
        self.history: list[dict[str, Any]] = []

    def attach(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def run(self, step: int) -> dict[str, Any]:
        sampling = [self.params[row.bucket] if self.params[row.bucket].greedy
                    else self.params[row.bucket].with_updates(seed=episode_seed(self.seed, -1, i))
                    for i, row in enumerate(self.rows)]  # the same seeds at every step: only the weights change
        metrics = {f"heldout/{k}": v for k, v in self.evaluate(sampling).items()}
        self.history.append({"step": step, **metrics})
        if self.trainer is not None:
            # Trainer.log, not GRPOTrainer.log: the latter would also flush the step's pending training metrics.
            # Logging clears control.should_log, which would skip this step's own training row: keep it as it was.
            control = self.trainer.control
            should_log = control.should_log
            Trainer.log(self.trainer, dict(metrics))
            control.should_log = should_log
        return metrics

    def on_train_begin(self, args, state, control, **kwargs):
        if self.at_start and state.global_step == 0:  # a resumed run already logged its starting numbers
            self.run(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_steps == 0 or state.global_step >= state.max_steps:
            self.run(state.global_step)
