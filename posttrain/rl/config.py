"""The Logic track's config: what ``configs/rl_logic.yaml`` may say, checked before anything starts.

Every section is a :class:`posttrain.config.Schema` (unknown keys are errors). Cross-field rules that pydantic cannot
express on one field (batch shapes, RLOO's unscaled advantages, sampling that TRL must be able to re-score) are checked
here too, so a bad config fails in a second with a message naming the key, not after a model has loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator, model_validator

from posttrain.config import Schema
from posttrain.models.settings import ChatSettings
from posttrain.rl.rewards import RewardSettings
from posttrain.rollout.agent_loop import AgentLoopConfig
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.sampling import SamplingConfig
from posttrain.tasks import TasksConfig, VerifySettings
from posttrain.training.settings import Checkpoints, LoraSettings, Scheduler, TrainerSettings

LossType = Literal["grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
ISMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


class ImportanceSampling(Schema):
    """Correct for the gap between the rollout engine's sampling log-probs and the trainer's own (TRL's
    ``vllm_importance_sampling_*``): the loss is weighted by pi_train / pi_sampler, truncated or masked at bounds."""

    correction: bool = True
    mode: ISMode = Field("token_truncate", description="per-token ratios, clipped at clip_max (robust for long "
                         "multi-turn episodes, where a per-sequence ratio multiplies many small differences)")
    clip_max: PositiveFloat | None = 3.0
    clip_min: PositiveFloat | None = None

    @field_validator("clip_min")
    @classmethod
    def _below_max(cls, value: float | None, info: ValidationInfo) -> float | None:
        top = info.data.get("clip_max")
        if value is not None and top is not None and value >= top:
            raise ValueError(f"must be below clip_max ({top})")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> ImportanceSampling:
        if self.correction and self.mode.endswith("truncate") and self.clip_min is None and self.clip_max is None:
            raise ValueError(f"mode {self.mode} needs clip_max or clip_min")
        return self


class RLTrain(TrainerSettings, Checkpoints):
    """Optimisation: how many prompts and samples make a step, the clipped surrogate, KL, schedule, bookkeeping."""

    max_steps: PositiveInt = 50
    prompts_per_step: PositiveInt = Field(4, description="distinct task prompts per optimizer step")
    num_generations: int = Field(4, ge=2, description="group size: episodes sampled per prompt (advantages compare "
                                 "them)")
    num_iterations: PositiveInt = Field(1, description="optimizer steps on each generated batch (PPO epochs); "
                                        "above 1 the clipped ratio is taken against the policy that sampled")
    learning_rate: PositiveFloat = 1e-6
    lr_scheduler: Scheduler = "constant"
    loss_type: LossType = Field("dapo", description="TRL's loss aggregation; grpo normalizes per sequence, dapo per "
                                "token over the batch, dr_grpo by a constant")
    epsilon: PositiveFloat = Field(0.2, description="clip range below 1 (and above, unless epsilon_high is set)")
    epsilon_high: PositiveFloat | None = Field(None, description="clip range above 1 (DAPO's clip-higher: 0.28)")
    beta: float = Field(0.0, ge=0.0, description="KL coefficient against the starting model (0: no reference model)")
    scale_rewards: Literal["group", "batch", "none"] | None = Field(
        None, description="divide advantages by the reward std of the group or batch; default group for grpo, none "
        "for rloo (RLOO's advantages are unscaled)")
    importance_sampling: ImportanceSampling = Field(default_factory=ImportanceSampling)
    mask_truncated_completions: bool = Field(False, description="leave episodes whose last turn hit max_tokens out "
                                             "of the loss (DAPO)")
    save_steps: PositiveInt = 25

    @model_validator(mode="after")
    def _batch_shape(self) -> RLTrain:
        completions = self.prompts_per_step * self.num_generations
        if completions % self.grad_accumulation:
            raise ValueError(f"grad_accumulation: prompts_per_step x num_generations = {completions} episodes per "
                             f"step must split evenly into {self.grad_accumulation} micro-batches")
        return self

    @property
    def micro_batch_size(self) -> int:
        return self.prompts_per_step * self.num_generations // self.grad_accumulation


class HeldOutSettings(Schema):
    """Held-out tasks scored through the same rollout pool and verifiers, before training and every N steps."""

    tasks: TasksConfig
    every_steps: PositiveInt = Field(10, description="evaluate after every N optimizer steps (and after the last)")
    at_start: bool = Field(True, description="evaluate the starting model too (the 'before' number)")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy (then samples_per_task must be 1)")
    samples_per_task: PositiveInt = Field(1, description="episodes per held-out task")

    @field_validator("samples_per_task")
    @classmethod
    def _greedy_once(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("temperature") == 0.0 and value > 1:
            raise ValueError(f"{value} greedy samples (temperature 0) would all be the same; use 1 or a temperature "
                             "above 0")
        return value


class DynamicSampling(Schema):
    """DAPO's dynamic sampling: a prompt whose episodes all get the same reward (all solved, all failed) has zero
    advantages and teaches nothing; its group is replaced by another prompt's before the loss."""

    max_rounds: PositiveInt = Field(2, description="refill rounds per batch: each replaces every group still flat by "
                                    "a freshly drawn prompt's group; what is still flat after the last is kept")


class LogicTrackConfig(ChatSettings):
    """``posttrain rl-logic`` config: GRPO/RLOO on environment tasks with verifiable rewards."""

    model: str = Field(description="the starting model: HF folder, Hub id or known name (smollm2-135m-instruct)")
    output_dir: Path
    tasks: TasksConfig = Field(description="training prompts: a task recipe or a built task dataset")
    heldout: HeldOutSettings | None = None
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="grpo: group-normalized advantages; rloo: "
                                               "leave-one-out baseline")
    train: RLTrain = Field(default_factory=RLTrain)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    agent: AgentLoopConfig = Field(default_factory=AgentLoopConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    envs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="constructor kwargs per environment")
    rewards: RewardSettings = Field(default_factory=RewardSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    lora: LoraSettings | None = Field(None, description="train a LoRA adapter (TRL's peft_config) instead of every "
                                      "weight; merge: false saves only the adapter (the merge stage takes it)")
    weight_push: Literal["auto", "merged", "adapter"] = Field(
        "auto", description="how a LoRA policy reaches the rollout workers each step: adapter (only its tensors; the "
        "workers apply it on the base), merged (the full weights with it folded in), auto (adapter)")
    max_staleness: int = Field(0, ge=0, description="rollouts run up to this many optimizer steps ahead of training "
                               "(asynchronous, off-policy by at most that many steps); 0: on-policy, each batch "
                               "generated when the trainer needs it")
    dynamic_sampling: DynamicSampling | None = Field(None, description="replace prompt groups of equal rewards "
                                                     "(DAPO); off when absent")
    resume: bool = Field(True, description="resume from the newest checkpoint in output_dir/checkpoints")

    @model_validator(mode="after")
    def _consistent(self) -> LogicTrackConfig:
        if self.algorithm == "rloo" and self.train.scale_rewards not in (None, "none"):
            raise ValueError(f"train.scale_rewards: {self.train.scale_rewards!r} with algorithm rloo; RLOO's "
                             "leave-one-out advantages are not scaled (leave it unset or 'none')")
        s = self.sampling
        if s.n is not None:
            raise ValueError("sampling.n: the group size is train.num_generations; remove sampling.n")
        if s.seed is not None or any(b.seed is not None for b in s.buckets.values()):
            raise ValueError("sampling.seed: per-episode seeds derive from train.seed; remove sampling.seed")
        if s.logprobs is False or any(b.logprobs is False for b in s.buckets.values()):
            raise ValueError("sampling.logprobs: the trainer needs the sampling log-probs; remove logprobs: false")
        if self.weight_push != "auto" and self.lora is None:
            raise ValueError(f"weight_push: {self.weight_push} is how a LoRA policy reaches the workers; set lora, or "
                             "remove weight_push (full weights are pushed)")
        if self.max_staleness and self.train.num_iterations > 1:
            raise ValueError("max_staleness: rollouts ahead of training take one optimizer step per generated batch; "
                             "set train.num_iterations: 1 or max_staleness: 0")
        lora_kwargs = self.rollout.engine_kwargs.get("enable_lora")
        if self.lora is not None and self.weight_push in ("auto", "adapter") and self.rollout.engine == "vllm" \
                and lora_kwargs is False:
            raise ValueError("weight_push: adapter needs vLLM's LoRA support, but rollout.engine_kwargs.enable_lora "
                             "is false; remove it, or set weight_push: merged")
        base = s.resolve()
        if base.temperature == 0:
            raise ValueError("sampling.temperature: 0 (greedy) gives every episode of a group the same answer, so "
                             "there is nothing to compare; use a temperature above 0")
        for bucket, over in s.buckets.items():
            if over.temperature is not None and over.temperature != base.temperature:
                raise ValueError(f"sampling.buckets.{bucket}.temperature: the trainer re-scores every episode at one "
                                 f"temperature (sampling.temperature = {base.temperature}); per-bucket temperatures "
                                 "would bias the policy ratio")
        return self

    @property
    def scale_rewards(self) -> str:
        if self.train.scale_rewards is not None:
            return self.train.scale_rewards
        return "none" if self.algorithm == "rloo" else "group"

