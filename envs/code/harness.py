"""The parent's side of a code verification: send the job into the sandbox, accept only the judge's nonce-signed
verdict, and decide pass/fail from its per-test results (never from an exit code)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from envs.code.sandboxed import VERDICT_PREFIX
from posttrain.environment import Task, VerifyResult
from posttrain.errors import UserError
from posttrain.sandbox import HARNESS, Limits, RunResult, SandboxBackend

JUDGE_SOURCE = (Path(__file__).parent / "sandboxed.py").read_text()
KINDS = ("function", "stdio")


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


def run_tests(backend: SandboxBackend, task: Task, program: str, *, test_timeout_s: float, wall_s: float,
              memory_mb: int) -> VerifyResult:
    """Run ``program`` against the task's hidden tests in the sandbox."""
    nonce = secrets.token_hex(16)
    job = {"nonce": nonce, "kind": task["kind"], "source": program, "entry_point": task.get("entry_point", ""),
           "prompt": task.get("prompt", ""), "test_setup": task.get("test_setup", ""), "tests": task["tests"],
           "test_timeout_s": test_timeout_s, "budget_s": wall_s - min(1.0, 0.2 * wall_s)}
    # judge + worker + a few processes of the candidate's own; total memory stays under max_processes x memory_mb
    limits = Limits(wall_s=wall_s, cpu_s=int(wall_s) + 1, memory_mb=memory_mb, max_processes=8,
                    stdout_bytes=8 << 20)
    res = backend.run({}, [backend.python, "-I", "-S", f"{HARNESS}/judge.py", "judge"], stdin=json.dumps(job),
                      limits=limits, readonly_files={"judge.py": JUDGE_SOURCE})
    verdict = find_verdict(res.stdout, nonce)
    if verdict is None:
        return _no_verdict(res)
    if "harness_error" in verdict:
        return VerifyResult.failure(f"the test harness failed on this task: {verdict['harness_error']}",
                                    reason="harness_error")
    return _judge(task, verdict, res)


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


def _judge(task: Task, verdict: dict[str, Any], res: RunResult) -> VerifyResult:
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
               "sandbox": _sandbox_info(res)}
    return VerifyResult(passed=passed, score=n_passed / len(expected), reasons=reasons, details=details)
