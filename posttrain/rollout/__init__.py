"""Rollouts: engines that generate from token ids (vLLM, transformers), Ray workers that own them, a pool that spreads
prompt batches over the workers, and the multi-turn agent loop that plays episodes against environments."""

from posttrain.rollout.engines import Engine, Sample, make_engine
from posttrain.rollout.sampling import PRESETS, SamplingConfig, SamplingOverrides, SamplingParams, preset

__all__ = ["PRESETS", "Engine", "Sample", "SamplingConfig", "SamplingOverrides", "SamplingParams", "make_engine",
           "preset"]
