"""Pieces of the Logic RL track (verifiable-reward RL with TRL's GRPOTrainer), used by ``posttrain.stages.rl_logic``.

* ``config``       the track's config schema (``posttrain rl-logic --config configs/rl_logic.yaml``)
* ``trainer``      GRPOTrainer with posttrain's rollouts: task rows for the rollout function, importance-sampling
                   correction with the workers' log-probs, RLOO's leave-one-out advantages
* ``rollout_func`` episodes from the Ray rollout pool and the multi-turn agent loop, in TRL's rollout_func format
* ``rewards``      per-environment reward routing (each row's env verifies its episode) and format penalties
* ``weight_sync``  pushes the trained weights to the rollout workers after every optimizer step
* ``heldout``      held-out reward/accuracy through the same pool and verifiers, every N steps
* ``progress``     metrics.jsonl written live (callers get the same rows as Progress events)

Import the module you need; this package imports nothing heavy by itself.
"""
