"""The environment interface: what rejection sampling, the Logic RL track, evaluation and calibration all talk to.

In the spirit of skyrl-gym's ``BaseTextEnv`` and verifiers' ``Environment``/``Rubric``:

* ``reset(task)`` gives the initial chat messages and the tool schemas the model may call;
* ``step(assistant_message)`` feeds one assistant turn and gives observations (tool results or the next user turn),
  a reward, whether the episode is done, and info;
* ``verify(trajectory)`` is separate and pure: given the task and the whole conversation, it says, trustworthily,
  whether the task was solved (passed, score, reasons). One verifier per task kind, used by every stage.

Environments are plugins: a package under ``envs/`` (``envs.code``, ``envs.math``, ``envs.tool_calling``) or any
Python file/folder given by path that defines one :class:`Environment` subclass (with a ``name``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from posttrain.errors import UserError

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant"|"tool", "content": str}
Task = dict[str, Any]  # {"id": str, "env": str, "messages": [...], "tools": [...], <env-specific reference fields>}

BUILTIN_ENVS = ("code", "math", "tool_calling", "tool_call_match", "instruction_following", "mcp")


@dataclass
class StepResult:
    """What the environment answers to one assistant turn."""

    observations: list[Message] = field(default_factory=list)  # appended to the conversation (tool results, user turn)
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class VerifyResult:
    """A verdict on a whole trajectory. ``error`` is set when verification itself failed (crash, timeout): never a
    pass."""

    passed: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.error is not None:
            self.passed = False

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "score": self.score, "reasons": list(self.reasons),
                "details": self.details, "error": self.error}

    @classmethod
    def failure(cls, error: str, reason: str = "verification_error") -> VerifyResult:
        return cls(passed=False, score=0.0, reasons=[reason], error=error)


@dataclass
class Trajectory:
    """A task plus the full conversation the model had on it (initial messages included)."""

    task: Task
    messages: list[Message]

    @property
    def final_answer(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "assistant":
                return m.get("content") or ""
        return ""

    @property
    def assistant_turns(self) -> list[Message]:
        return [m for m in self.messages if m.get("role") == "assistant"]


class Environment(ABC):
    """Base class for environments. Subclasses set ``name`` and implement the four methods.

    An instance holds the state of one episode between ``reset`` and the last ``step``; ``verify`` must not depend on
    that state (it rebuilds whatever it needs from the trajectory), so verification can run anywhere, in any process.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abstractmethod
    def reset(self, task: Task) -> tuple[list[Message], list[dict[str, Any]]]:
        """Start an episode: the initial messages and the tool schemas (OpenAI function format; [] for none)."""

    @abstractmethod
    def step(self, assistant_message: Message) -> StepResult:
        """Feed one assistant turn; observations are what the environment appends before the model speaks again."""

    @abstractmethod
    def verify(self, trajectory: Trajectory) -> VerifyResult:
        """Decide whether the trajectory solved the task. Must never raise for bad model output."""

    @abstractmethod
    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        """Seeded, procedurally generated tasks with reference solutions (same n and seed, same tasks)."""

    def reference_trajectory(self, task: Task) -> list[Message]:
        """A conversation that solves ``task`` from its reference solution (tests, SFT sample data, sanity checks)."""
        raise NotImplementedError(f"environment {self.name!r} has no reference trajectories")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sandboxes, pools)."""


def _find_env_class(module: Any, origin: str) -> type[Environment]:
    found = [
        obj for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Environment) and obj is not Environment and not inspect.isabstract(obj)
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise UserError(f"{origin}: expected exactly one Environment subclass, found {len(found)}")
    return found[0]


def load_env_class(name_or_path: str) -> type[Environment]:
    """Resolve an environment by built-in name (``math``), module (``envs.math``, ``mypkg.myenv``) or path."""
    path = Path(name_or_path)
    if name_or_path.endswith(".py") or path.is_dir() or path.is_file():
        target = path / "__init__.py" if path.is_dir() else path
        if not target.is_file():
            raise UserError(f"{name_or_path}: environment file not found (expected a .py file or a package folder)")
        mod_name = f"posttrain_user_env_{abs(hash(str(target.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, target,
                                                      submodule_search_locations=[str(path)] if path.is_dir() else None)
        if spec is None or spec.loader is None:
            raise UserError(f"{name_or_path}: cannot import this file as an environment")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        return _find_env_class(module, name_or_path)
    module_name = f"envs.{name_or_path}" if name_or_path in BUILTIN_ENVS else name_or_path
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        known = ", ".join(BUILTIN_ENVS)
        raise UserError(f"environment {name_or_path!r}: not found ({e.name}); built-in environments: {known}, "
                        "or give a module name or a path to a .py file") from None
    return _find_env_class(module, name_or_path)


def make_env(name_or_path: str, **kwargs: Any) -> Environment:
    """Instantiate an environment by name or path."""
    return load_env_class(name_or_path)(**kwargs)
