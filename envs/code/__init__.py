"""The ``code`` environment: Python problems verified by running hidden tests in the sandbox.

Two kinds of task: ``function`` (write a function; hidden assert-based tests call it) and ``stdio`` (write a program;
hidden tests feed stdin and compare stdout). Task sets: the 164 HumanEval problems (``task_set("humaneval")``) and a
seeded generator (``generate_tasks(n, seed)``). Single-turn: the assistant answers once; the step's reward is the
verification score (the fraction of hidden tests passed; ``passed`` needs all of them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from envs.code.extract import extract_code, function_program
from envs.code.generator import generate_tasks
from envs.code.harness import check_task, run_tests, warm_pool
from envs.code.humaneval import humaneval_tasks
from posttrain.environment import Environment, Message, StepResult, Task, Trajectory, VerifyResult
from posttrain.errors import UserError
from posttrain.sandbox import SandboxBackend, get_backend
from posttrain.sandbox.warm import WarmPool

TASK_SET_LOADERS = {"humaneval": humaneval_tasks}


class CodeEnv(Environment):
    name = "code"
    description = ("Python coding: functions with hidden tests and stdin/stdout programs, executed in the sandbox "
                   "(HumanEval's 164 problems and a seeded generator)")
    TASK_SETS = tuple(TASK_SET_LOADERS)  # names for `posttrain envs generate code --set NAME`
    uses_sandbox = True  # `posttrain envs verify` checks the sandbox backend once before starting workers

    def __init__(self, backend: str | None = None, test_timeout_s: float = 3.0, wall_timeout_s: float = 30.0,
                 memory_mb: int = 512, warm: bool = True) -> None:
        """``warm``: keep warm sandboxes between verifications where the backend has them (bwrap); False starts one
        sandbox per verification (slower, same isolation)."""
        self.backend_name = backend
        self.use_warm = warm
        self.test_timeout_s = test_timeout_s
        self.wall_timeout_s = wall_timeout_s
        self.memory_mb = memory_mb
        self._sandbox: SandboxBackend | None = None
        self._warm: WarmPool | None = None
        self._task: Task | None = None
        self._done = False

    @property
    def sandbox(self) -> SandboxBackend:
        if self._sandbox is None:
            self._sandbox = get_backend(self.backend_name)
        return self._sandbox

    @property
    def warm(self) -> WarmPool:
        """This env's warm sandboxes (started on first use, one per concurrent verify call; see docs/sandbox.md)."""
        if self._warm is None:
            self._warm = warm_pool(self.sandbox, self.memory_mb)
        return self._warm

    def close(self) -> None:
        if self._warm is not None:
            self._warm.close()
            self._warm = None

    def __getstate__(self) -> dict[str, Any]:  # a copy in another process starts its own sandboxes
        return {**self.__dict__, "_sandbox": None, "_warm": None}

    def reset(self, task: Task) -> tuple[list[Message], list[dict[str, Any]]]:
        check_task(task)
        self._task, self._done = task, False
        return [dict(m) for m in task.get("messages", [])], list(task.get("tools") or [])

    def step(self, assistant_message: Message) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError("code env: step() needs a reset() first and takes a single assistant turn")
        self._done = True
        result = self.verify(Trajectory(self._task, [*self._task.get("messages", []), assistant_message]))
        return StepResult(observations=[], reward=result.score, done=True, info={"verify": result.to_dict()})

    def verify(self, trajectory: Trajectory) -> VerifyResult:
        task = trajectory.task
        check_task(task)
        code = extract_code(trajectory.final_answer)
        n_tests = len(task["tests"])
        if not code.strip():
            return VerifyResult(passed=False, score=0.0, reasons=["no_code"], details={"n_tests": n_tests,
                                                                                       "n_passed": 0})
        program = function_program(task.get("prompt", ""), code, task["entry_point"]) \
            if task["kind"] == "function" else code
        test_timeout = float(task.get("test_timeout_s", self.test_timeout_s))
        wall = min(self.wall_timeout_s, test_timeout * (n_tests + 1) + 1.0)
        return run_tests(self.sandbox, task, program, test_timeout_s=test_timeout, wall_s=wall,
                         memory_mb=self.memory_mb, warm=self.warm if self.use_warm else None)

    def generate_tasks(self, n: int, seed: int) -> Iterator[Task]:
        return generate_tasks(n, seed)

    def task_set(self, name: str) -> list[Task]:
        """A fixed, named task set (``humaneval``)."""
        if name not in TASK_SET_LOADERS:
            raise UserError(f"code env: unknown task set {name!r}; expected one of: {', '.join(TASK_SET_LOADERS)}")
        return TASK_SET_LOADERS[name]()
