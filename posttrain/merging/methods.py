"""The three merge methods, as mergekit computes them, and the one place that maps our config onto mergekit's.

With base ``b``, inputs ``m_i``, weights ``w_i`` and task vectors ``d_i = m_i - b``, per tensor:

- ``linear``: ``sum_i w_i m_i / sum_i w_i`` (a weighted average; the base only supplies config and tokenizer).
- ``task_arithmetic``: ``b + scale * sum_i w_i d_i``.
- ``ties``: trim each ``d_i`` to its ``density`` fraction of largest magnitudes (``k = max(1, int(density * numel))``
  per tensor), elect each element's sign as the sign of ``sum_i w_i trim(d_i)`` (zero counts as +), then take the
  weighted mean over the inputs whose trimmed value is non-zero and has the elected sign:
  ``b + scale * sum_{i agrees} w_i trim(d_i) / sum_{i agrees} w_i``.

``merge_tensors`` runs the very mergekit kernel that ``run_mergekit`` runs for a whole model, with the same
parameters, so a hand-computed check on a small tensor tests what the stage does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

METHODS = ("linear", "task_arithmetic", "ties")
COMPUTE_DTYPE = "float32"  # arithmetic precision, whatever the inputs' and output's dtype


def method_parameters(method: str, weights: Sequence[float], density: float | None,
                      scale: float | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(shared parameters, per-input parameters) in mergekit's terms, stated explicitly rather than left to its
    per-method defaults (which differ: ``normalize`` is on for ties and off for task_arithmetic)."""
    if method == "linear":
        return {"normalize": True}, [{"weight": float(w)} for w in weights]
    if method == "task_arithmetic":
        shared = {"normalize": False, "rescale": False, "lambda": float(1.0 if scale is None else scale)}
        return shared, [{"weight": float(w)} for w in weights]
    if method == "ties":
        shared = {"normalize": True, "rescale": False, "lambda": float(1.0 if scale is None else scale)}
        return shared, [{"weight": float(w), "density": float(density)} for w in weights]
    raise ValueError(f"unknown merge method {method!r}; expected one of {METHODS}")


def mergekit_config(method: str, base: Path, models: Sequence[Path], weights: Sequence[float],
                    density: float | None, scale: float | None, out_dtype: str) -> dict[str, Any]:
    """The mergekit ``MergeConfiguration`` (as plain data, also stored in the manifest) for full-model inputs."""
    shared, per_input = method_parameters(method, weights, density, scale)
    config: dict[str, Any] = {
        "merge_method": method,
        "models": [{"model": str(path), "parameters": params} for path, params in zip(models, per_input, strict=True)],
        "parameters": shared,
        "dtype": COMPUTE_DTYPE,
        "out_dtype": out_dtype,
    }
    if method != "linear":  # linear averages the inputs only; mergekit would ask for a weight for the base
        config["base_model"] = str(base)
    return config


def run_mergekit(config: dict[str, Any], out_dir: Path, show_progress: bool = False) -> None:
    """Merge tensor by tensor on CPU into ``out_dir`` (weights + config.json; no tokenizer, no model card)."""
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.io.tasks import LoaderCache
        from mergekit.merge import MergeOptions, run_merge
    except ImportError:
        raise UserError("merging needs mergekit, an optional dependency: pip install 'posttrain[merge]'") from None

    options = MergeOptions(device="cpu", copy_tokenizer=False, write_model_card=False, quiet=not show_progress,
                           trust_remote_code=False)
    try:
        run_merge(MergeConfiguration.model_validate(config), str(out_dir), options)
    finally:
        # mergekit keeps one process-wide cache of open checkpoints keyed by path; a later merge in this process
        # (the pipeline, tests) must not read a stale index of a folder that has since been rewritten.
        cache = LoaderCache()
        cache.flush_all()
        cache.loaders.clear()


def merge_tensors(method: str, base: Any, tensors: Sequence[Any], weights: Sequence[float],
                  density: float | None = None, scale: float | None = None) -> Any:
    """Merge one tensor from several inputs exactly as the whole-model merge does; returns a float32 tensor."""
    import torch
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    shared, per_input = method_parameters(method, weights, density, scale)
    parameters = dict(shared)
    for name in per_input[0]:
        parameters[name] = [params[name] for params in per_input]
    if method == "linear":
        group = TensorGroup.from_tensors(list(tensors))
    else:
        group = TensorGroup.from_tensors([base, *tensors], base_index=0)
    (merged,) = registry.get(method)([group], parameters=parameters, dtype=torch.float32)
    return merged
