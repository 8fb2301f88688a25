"""The parent's side of a code verification: send the job into the sandbox (a warm one when the backend has them),
accept only the judge's nonce-carrying verdict, and decide pass/fail from its per-test results (never from an exit
code)."""

from __future__ import annotations

import json
import py_compile
import secrets
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from posttrain.environment import Task, VerifyResult
from posttrain.errors import UserError
from posttrain.sandbox import HARNESS, Limits, RunResult, SandboxBackend
from posttrain.sandbox.warm import JobResult, WarmPool

JUDGE_DIR = Path(__file__).parent / "judge"
WARM_MODULE = "judge.warm"
VERDICT_PREFIX = "POSTTRAIN-VERDICT "
KINDS = ("function", "stdio")
JOB_PROCESSES = 8  # the judge, its launcher, the worker and a few processes of the candidate's own
MAX_VERDICT = 8 << 20


def check_task(task: Any) -> None:
    """A code task must say what to run and how to test it; anything else is the user's data error."""
    where = f"code task {task.get('id', '?')!r}" if isinstance(task, dict) else "code task"
    if not isinstance(task, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(task).__name__}")
    kind = task.get("kind")
    if kind not in KINDS:
        raise UserError(f"{where}: key 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    tests = task.get("tests")
    if not isinstance(tests, list) or not tests:
        raise UserError(f"{where}: key 'tests' must be a non-empty list")
    need = ("name", "code") if kind == "function" else ("name", "input", "output")
    for i, t in enumerate(tests):
        if not isinstance(t, dict) or not all(isinstance(t.get(k), str) for k in need):
            raise UserError(f"{where}: tests[{i}] must be an object with string keys {', '.join(need)}")
    if kind == "function" and not (isinstance(task.get("entry_point"), str) and task["entry_point"].isidentifier()):
        raise UserError(f"{where}: key 'entry_point' must be a Python identifier")
    for key in ("prompt", "test_setup"):
        if not isinstance(task.get(key, ""), str):
            raise UserError(f"{where}: key {key!r} must be a string")


def find_verdict(stdout: str, nonce: str) -> dict[str, Any] | None:
    """The one verdict line carrying our nonce; lines without it (a candidate's forgeries) are ignored."""
    found = []
    for line in stdout.splitlines():
        if not line.startswith(VERDICT_PREFIX):
            continue
        try:
            data = json.loads(line[len(VERDICT_PREFIX):])
        except ValueError:
            continue
        if isinstance(data, dict) and secrets.compare_digest(str(data.get("nonce", "")), nonce):
            found.append(data)
    return found[0] if len(found) == 1 else None


@cache
def judge_files() -> dict[str, str | bytes]:
    """The judge package as it lies under {harness}/judge/ in the sandbox (read-only), with its bytecode: nothing
    can be cached in a read-only harness, and compiling the judge would cost every cold run ~10 ms. An interpreter
    of another version inside the sandbox ignores the bytecode (other cache tag) and compiles the sources."""
    files: dict[str, str | bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(JUDGE_DIR.glob("*.py")):
            files[f"judge/{path.name}"] = path.read_text()
            pyc = Path(tmp) / path.name
            py_compile.compile(str(path), cfile=str(pyc), dfile=f"judge/{path.name}", doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            files[f"judge/__pycache__/{path.stem}.{sys.implementation.cache_tag}.pyc"] = pyc.read_bytes()
    return files


def warm_pool(backend: SandboxBackend, memory_mb: int) -> WarmPool:
    """Warm sandboxes holding the judge, for one code env (its jobs all use ``memory_mb``)."""
    return WarmPool(backend, judge_files(), WARM_MODULE,
                    Limits(memory_mb=memory_mb, max_processes=JOB_PROCESSES, stdout_bytes=MAX_VERDICT))


def run_tests(backend: SandboxBackend, task: Task, program: str, *, test_timeout_s: float, wall_s: float,
              memory_mb: int, warm: WarmPool | None = None) -> VerifyResult:
    """Run ``program`` against the task's hidden tests in the sandbox: in ``warm``'s sandboxes when it has them."""
    nonce = secrets.token_hex(16)
    job = {"nonce": nonce, "kind": task["kind"], "source": program, "entry_point": task.get("entry_point", ""),
           "prompt": task.get("prompt", ""), "test_setup": task.get("test_setup", ""), "tests": task["tests"],
           "test_timeout_s": test_timeout_s, "budget_s": wall_s - min(1.0, 0.2 * wall_s)}
    # the processes of one run together stay under max_processes x memory_mb
    limits = Limits(wall_s=wall_s, cpu_s=int(wall_s) + 1, memory_mb=memory_mb, max_processes=JOB_PROCESSES,
                    stdout_bytes=MAX_VERDICT)
    payload = json.dumps(job).encode()
    done = warm.run(payload, limits) if warm is not None else None
    if done is not None:
        return _warm_verdict(task, done, nonce, backend.name)
    res = backend.run({}, [backend.python, "-I", "-S", f"{HARNESS}/judge/__main__.py"], stdin=payload,
                      limits=limits, readonly_files=judge_files())
    verdict = find_verdict(res.stdout, nonce)
    info = _sandbox_info(res)
    if verdict is None:
        return _no_verdict(res)
    return _judge(task, verdict, info)


def _warm_verdict(task: Task, done: JobResult, nonce: str, backend: str) -> VerifyResult:
    info = {"backend": backend, "warm": True, "duration_s": round(done.duration_s, 4), "exit_code": done.exit_code,
            "timed_out": done.timed_out}
    try:
        verdict = json.loads(done.output) if done.output is not None else None
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict) or not secrets.compare_digest(str(verdict.get("nonce", "")), nonce):
        if done.timed_out:
            msg, reason = f"the sandbox hit its wall-clock limit ({done.duration_s:.1f}s) before a verdict", "timeout"
        else:
            msg, reason = f"no verdict from the test harness: {'; '.join(done.notes)[-300:]}", "no_verdict"
        result = VerifyResult.failure(msg, reason=reason)
        result.details["sandbox"] = info
        return result
    return _judge(task, verdict, info)


def _sandbox_info(res: RunResult) -> dict[str, Any]:
    return {"backend": res.backend, "duration_s": round(res.duration_s, 4), "exit_code": res.exit_code,
            "killed_by_signal": res.killed_by_signal, "timed_out": res.timed_out, "truncated": res.truncated}


def _no_verdict(res: RunResult) -> VerifyResult:
    if res.timed_out:
        msg, reason = f"the sandbox hit its wall-clock limit ({res.duration_s:.1f}s) before a verdict", "timeout"
    else:
        how = f"signal {res.killed_by_signal}" if res.killed_by_signal else f"exit code {res.exit_code}"
        msg, reason = f"no verdict from the test harness ({how}); stderr: {res.stderr[-300:]!r}", "no_verdict"
    result = VerifyResult.failure(msg, reason=reason)
    result.details["sandbox"] = _sandbox_info(res)
    return result


def _judge(task: Task, verdict: dict[str, Any], sandbox_info: dict[str, Any]) -> VerifyResult:
    if "harness_error" in verdict:
        return VerifyResult.failure(f"the test harness failed on this task: {verdict['harness_error']}",
                                    reason="harness_error")
    tests = verdict.get("tests")
    expected = [t["name"] for t in task["tests"]]
    if not isinstance(tests, list) or [t.get("name") if isinstance(t, dict) else None for t in tests] != expected:
        return VerifyResult.failure("the test harness reported results for other tests than were sent",
                                    reason="harness_error")
    n_passed = sum(1 for t in tests if t.get("passed") is True and t.get("status") == "passed")
    passed = n_passed == len(expected)
    reasons = ["passed"] if passed else sorted({str(t.get("status")) for t in tests} - {"passed"})
    details = {"n_tests": len(expected), "n_passed": n_passed, "tests": tests,
               "load_error": verdict.get("load_error"), "candidate_output": verdict.get("candidate_output", ""),
               "sandbox": sandbox_info}
    return VerifyResult(passed=passed, score=n_passed / len(expected), reasons=reasons, details=details)
