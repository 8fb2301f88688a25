"""The ``posttrain eval`` config: which models, which verifiable sets, how answers are sampled, and the chat win rate.

Model and set names become table columns and file names, so they are short identifiers. Per-bucket sampling
overrides must name buckets that exist in the sets (an unused override is an error, never silently ignored).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from posttrain.config import Schema
from posttrain.models.settings import ChatSettings
from posttrain.preference.scorers import ScorerConfig
from posttrain.rl.rewards import RewardFunctions
from posttrain.rollout.agent_loop import AgentLoopConfig
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.sampling import SamplingConfig
from posttrain.tasks import TasksConfig, VerifySettings

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NAME_HINT = "letters, digits, '_', '.' or '-', starting with a letter or digit"


class PassAtKConfig(Schema):
    """``n`` sampled answers per prompt; pass@k for each ``k`` with the unbiased estimator (Chen et al., 2021)."""

    n: int = Field(..., ge=2, description="samples per prompt")
    k: list[int] = Field(default_factory=list, description="k values to report; default [1, n]")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=1.0),
                                     description="how the n samples are drawn (temperature > 0); n comes from above")

    @model_validator(mode="after")
    def _ks(self) -> PassAtKConfig:
        if not self.k:
            self.k = [1, self.n]
        bad = [k for k in self.k if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"k: every k must be between 1 and n={self.n}, got {bad}")
        self.k = sorted(set(self.k))
        if self.sampling.n is not None or any(b.n is not None for b in self.sampling.buckets.values()):
            raise ValueError("sampling.n: the number of samples is pass_at_k.n; remove sampling.n")
        return self


class ChatEvalConfig(Schema):
    """Answers to held-out chat prompts from every model and from ``reference``, scored by a reward model (or a
    judge); each model's win rate against the reference counts ties as half."""

    prompts: str = Field(..., description="prompts: a recipe .yaml or a built preference, task or chat dataset")
    reference: str = Field("sft", description="a name under `models`, or a model folder")
    scorer: ScorerConfig = Field(..., description="reward_model: a `posttrain rm` folder (or kind: judge)")
    held_out_fraction: float | None = Field(
        None, gt=0, lt=1, description="keep only the prompts the Chat track held out: its eval_fraction (with "
        "split_seed = its seed); unset: every prompt is a held-out prompt")
    split_seed: int = 0
    limit: int | None = Field(64, ge=1, description="prompts compared at most (the first by prompt id)")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=128))
    tie_tolerance: float = Field(0.0, ge=0, description="scores this close count as a tie")

    @model_validator(mode="after")
    def _one_answer(self) -> ChatEvalConfig:
        if self.sampling.n not in (None, 1) or any(b.n not in (None, 1) for b in self.sampling.buckets.values()):
            raise ValueError("sampling.n: the win rate compares one answer per prompt; remove sampling.n")
        return self


class EvalConfig(ChatSettings):
    """``posttrain eval`` config (``chat_template`` and ``tool_format`` apply to every model it compares)."""

    models: dict[str, str] = Field(..., description="name -> model folder, Hub id or known name, e.g. sft, chat, "
                                   "logic")
    output_dir: Path = Field(..., description="results.json, results.md, samples.jsonl, manifest.json")
    sets: dict[str, TasksConfig] = Field(default_factory=dict, description="name -> task recipe or built task set")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=256),
        description="the one answer per prompt that accuracy counts (greedy by default; sampled = pass@1)")
    pass_at_k: PassAtKConfig | None = Field(None, description="also sample n answers per prompt for pass@k")
    agent: AgentLoopConfig = Field(default_factory=AgentLoopConfig)
    envs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="constructor kwargs per environment")
    verify: VerifySettings = Field(default_factory=VerifySettings)
    rewards: RewardFunctions | None = Field(None, description="also report each set's mean reward: weighted verify "
                                            "scores plus your reward functions")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    chat: ChatEvalConfig | None = None
    batch_size: int = Field(32, ge=1, description="prompts per generate call (and per verification batch)")
    seed: int = Field(0, description="sampling seeds derive from it; every model gets the same seeds")
    resume: bool = Field(True, description="reuse a model's samples from an earlier run with the same inputs")

    @field_validator("models", "sets")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [name for name in value if not NAME.match(name)]
        if bad:
            raise ValueError(f"names must be {NAME_HINT}; got {', '.join(repr(b) for b in bad)}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> EvalConfig:
        if not self.models:
            raise ValueError("models: give at least one model (name: folder)")
        if not self.sets and self.chat is None:
            raise ValueError("nothing to evaluate: give verifiable `sets` and/or a `chat` section")
        if self.pass_at_k is not None and not self.sets:
            raise ValueError("pass_at_k: needs verifiable `sets`")
        if self.sampling.n not in (None, 1) or any(b.n not in (None, 1) for b in self.sampling.buckets.values()):
            raise ValueError("sampling.n: accuracy counts one answer per prompt; use pass_at_k.n for more samples")
        return self


def model_dirs(config: EvalConfig, source: str) -> dict[str, Path]:
    """Every model's local folder, checked before anything starts (known names are fetched)."""
    from posttrain.models.loading import resolve_model

    return {name: resolve_model(spec, key=f"{source}: models.{name}") for name, spec in config.models.items()}
