"""Rollouts: engines that generate from token ids (vLLM, transformers), Ray workers that own them, a pool that spreads
prompt batches over the workers, and the multi-turn agent loop that plays episodes against environments.

    config.py      the ``rollout`` section (engine, workers, resources): light, for config validation
    sampling.py    sampling presets, per-bucket overrides, concrete params
    engines.py     the engine interface; hf_engine.py, vllm_engine.py
    workers.py     Ray actors owning an engine; pool.py spreads batches and weight updates over them
    packing.py     weights packed in one buffer for the push to the workers
    agent_loop.py  multi-turn episodes against environments, token-exact
"""
