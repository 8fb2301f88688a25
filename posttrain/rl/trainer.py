"""TRL's GRPOTrainer with posttrain's rollout workers as the generation backend.

Three small additions, each something TRL does for its own vLLM engine but has no public switch for when generation
happens elsewhere (``rollout_func``):

1. **Task rows for the rollout function.** TRL passes ``rollout_func`` only the prompts; the episodes need each row's
   task and environment, so the batch's dataset rows are exposed as ``rollout_inputs`` for the duration of the call.
2. **Importance-sampling correction with the workers' log-probs.** TRL weights the loss by pi_train / pi_sampler
   (truncated or masked, ``vllm_importance_sampling_*``) only when it owns a vLLM engine (``use_vllm``). Our workers
   return the same "processed" sampling log-probs, so after construction the trainer takes the same path: ``use_vllm``
   is set, and the object TRL asks to ``sync_weights()`` before each generation is our :class:`WeightSync` check.
   Nothing else reads ``use_vllm`` once ``rollout_func`` is set (TRL's own generation and tool loop are not used).
3. **RLOO's leave-one-out advantages.** TRL 1.16's RLOOTrainer has no ``rollout_func`` and no environment mask, so
   ``algorithm: rloo`` runs here: with unscaled rewards GRPO's advantage is ``r_i - mean(r)``, and RLOO's
   ``r_i - mean_{j != i}(r_j)`` equals ``G / (G - 1)`` times it (G = group size), an exact rescaling.
4. **The next steps' batches, early.** With rollouts running ahead (:mod:`posttrain.rl.ahead`), the batches of the
   next ``max_staleness`` optimizer steps are pulled from the trainer's own dataloader when a step starts (the data
   order is the trainer's, unchanged) and their generation is started at once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from trl import GRPOTrainer

from posttrain.rl.weight_sync import WeightSync


class _SyncBeforeRollout:
    """What TRL calls ``vllm_generation``: it only calls ``sync_weights()`` on it, right before a rollout."""

    def __init__(self, trainer: LogicGRPOTrainer, sync: WeightSync) -> None:
        self.trainer, self.sync = trainer, sync

    def sync_weights(self) -> None:
        self.sync.ensure(self.trainer.model, self.trainer.state.global_step)


class LogicGRPOTrainer(GRPOTrainer):
    def __init__(self, *args: Any, weight_sync: WeightSync, leave_one_out: bool = False, ahead: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.rollout_func is None:
            raise ValueError("LogicGRPOTrainer generates through rollout_func; pass one")
        self.leave_one_out = leave_one_out
        self.weight_sync = weight_sync
        self.ahead = ahead  # an AheadRollout when rollouts run ahead of training
        self._lookahead: deque[Any] = deque()
        self._lookahead_source: Any = None
        self.rollout_inputs: list[dict[str, Any]] = []
        if self.args.vllm_importance_sampling_correction:
            self.use_vllm = True
            self.vllm_generation = _SyncBeforeRollout(self, weight_sync)
            self._last_loaded_step = -1

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        """The step's micro-batches, as the Trainer pulls them; with rollouts ahead, the next steps' ones are pulled
        too (kept for those steps) and their generation started. One generation batch per optimizer step: the
        dataloader repeats it once per micro-batch (``steps_per_generation`` = ``grad_accumulation``)."""
        if self.ahead is None or self.ahead.max_staleness == 0:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        if epoch_iterator is not self._lookahead_source:  # a new epoch: nothing of the old one is left
            self._lookahead, self._lookahead_source = deque(), epoch_iterator
        while len(self._lookahead) < num_batches * (1 + self.ahead.max_staleness):
            try:
                self._lookahead.append(next(epoch_iterator))
            except StopIteration:
                break
        batch = [self._lookahead.popleft() for _ in range(min(num_batches, len(self._lookahead)))]
        upcoming = batch + list(self._lookahead)  # this step's generation batch first (queued in step order)
        for k in range(self.ahead.max_staleness + 1):
            step, first = self.state.global_step + k, k * num_batches
            if step < self.state.max_steps and first < len(upcoming):
                self.ahead.ahead(step, [x["row"] for x in upcoming[first]], self.num_generations)
        return batch, self._get_num_items_in_batch(batch, device)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self.rollout_inputs = inputs
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self.rollout_inputs = []
        if self.leave_one_out:
            group = self.num_generations if self.model.training else self.num_generations_eval
            output["advantages"] = output["advantages"] * (group / (group - 1))
        return output
