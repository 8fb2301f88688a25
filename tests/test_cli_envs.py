"""`posttrain envs list / generate / verify` end to end (real envs, real sandbox, real worker processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posttrain.cli import app

runner = CliRunner()


def cli(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def cli_main(*args: str) -> subprocess.CompletedProcess:
    """The real entry point (user errors become exit code 2 there); stderr with rich's line wrapping undone."""
    done = subprocess.run([sys.executable, "-c", "from posttrain.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)
    done.stderr = " ".join(done.stderr.split())
    return done


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_list_shows_the_builtin_envs():
    out = cli("envs", "list").output
    for name in ("code", "math", "tool_calling", "tool_call_match", "instruction_following", "mcp"):
        assert name in out
    assert "humaneval" in out and "HumanEval" in out and "your task files only" in out


def test_generate_code_tasks_and_the_humaneval_set(tmp_path):
    out = tmp_path / "gen" / "tasks.jsonl"
    result = cli("envs", "generate", "code", "--n", "25", "--seed", "3", "--out", str(out))
    assert "wrote 25 code tasks" in result.output
    tasks = read_jsonl(out)
    assert len(tasks) == 25 and len({t["id"] for t in tasks}) == 25 and {t["env"] for t in tasks} == {"code"}
    again = tmp_path / "again.jsonl"
    cli("envs", "generate", "code", "--n", "25", "--seed", "3", "--out", str(again))
    assert again.read_text() == out.read_text()
    he = tmp_path / "he.jsonl"
    assert "wrote 164 code tasks" in cli("envs", "generate", "code", "--set", "humaneval", "--out", str(he)).output
    assert [t["id"] for t in read_jsonl(he)][:2] == ["HumanEval/0", "HumanEval/1"]


@pytest.mark.parametrize("env", ["math", "tool_calling", "tool_call_match", "instruction_following"])
def test_generate_works_for_the_other_envs(tmp_path, env):
    out = tmp_path / f"{env}.jsonl"
    cli("envs", "generate", env, "--n", "4", "--seed", "1", "--out", str(out))
    assert [t["env"] for t in read_jsonl(out)] == [env] * 4


def test_verify_code_rows_with_malformed_lines(tmp_path):
    he = tmp_path / "he.jsonl"
    cli("envs", "generate", "code", "--set", "humaneval", "--n", "4", "--out", str(he))
    tasks = read_jsonl(he)
    solved = {"role": "assistant", "content": tasks[3]["reference_solution"]}
    lines = [json.dumps({"task": tasks[0], "completion": tasks[0]["reference_solution"]}),
             json.dumps({"task": tasks[1], "completion": "    return None\n"}),
             "{broken json",
             "",
             json.dumps({"task": tasks[2]}),
             json.dumps({"task": tasks[3], "messages": [*tasks[3]["messages"], solved]})]
    traj = tmp_path / "traj.jsonl"
    traj.write_text("\n".join(lines) + "\n")
    res_path = tmp_path / "out" / "results.jsonl"
    result = runner.invoke(app, ["envs", "verify", "code", str(traj), "--out", str(res_path), "--workers", "2"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(res_path)
    assert [r["line"] for r in rows] == [1, 2, 3, 5, 6]  # one result per row, in file order
    assert [r["passed"] for r in rows] == [True, False, False, False, True]
    assert rows[0]["id"] == "HumanEval/0" and rows[0]["details"]["n_passed"] == rows[0]["details"]["n_tests"]
    assert rows[2]["reasons"] == ["malformed_row"] and f"{traj}:3: invalid JSON" in rows[2]["error"]
    assert rows[3]["reasons"] == ["malformed_row"] and f"{traj}:5: expected key 'messages'" in rows[3]["error"]
    out = result.output
    for label, value in [("rows", "5"), ("passed", "2"), ("failed", "1"), ("malformed rows", "2"),
                         ("pass rate", "66.7%")]:
        assert any(label in line and line.rstrip(" │").endswith(value) for line in out.splitlines()), (label, out)
    assert "malformed_row" in out and "traj.jsonl:3" in out
    # the same file through the bare runner: chosen for the workers only, with a warning
    bare = runner.invoke(app, ["envs", "verify", "code", str(traj), "--out", str(res_path), "--workers", "1",
                               "--backend", "rlimit"], catch_exceptions=False)
    assert bare.exit_code == 0 and "NOT a security boundary" in bare.output
    rows = read_jsonl(res_path)
    assert [r["passed"] for r in rows] == [True, False, False, False, True]
    assert rows[0]["details"]["sandbox"]["backend"] == "rlimit" and "POSTTRAIN_SANDBOX" not in os.environ


def test_verify_math_through_the_cli(tmp_path):
    tasks_path = tmp_path / "math.jsonl"
    cli("envs", "generate", "math", "--n", "2", "--seed", "5", "--out", str(tasks_path))
    tasks = read_jsonl(tasks_path)
    traj = tmp_path / "traj.jsonl"
    traj.write_text(json.dumps({"task": tasks[0], "completion": f"So \\boxed{{{tasks[0]['answer']}}}."}) + "\n"
                    + json.dumps({"task": tasks[1], "completion": "\\boxed{not a number}"}) + "\n")
    cli("envs", "verify", "math", str(traj), "--out", str(tmp_path / "r.jsonl"), "--workers", "1")
    assert [r["passed"] for r in read_jsonl(tmp_path / "r.jsonl")] == [True, False]


def test_usage_errors_exit_2_with_a_clear_message(tmp_path):
    missing = cli_main("envs", "verify", "code", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r.jsonl"))
    assert missing.returncode == 2 and "nope.jsonl: file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    not_jsonl = cli_main("envs", "verify", "code", str(csv), "--out", str(tmp_path / "r.jsonl"))
    assert not_jsonl.returncode == 2 and "not JSONL" in not_jsonl.stderr
    bad_backend = cli_main("envs", "verify", "code", str(csv), "--out", str(tmp_path / "r.jsonl"), "--backend", "vm")
    assert bad_backend.returncode == 2
    bad_set = cli_main("envs", "generate", "code", "--set", "mbpp", "--out", str(tmp_path / "t.jsonl"))
    assert bad_set.returncode == 2 and "unknown task set 'mbpp'" in bad_set.stderr


def _math_rows(tmp_path: Path) -> tuple[list[dict], Path]:
    tasks_path = tmp_path / "math.jsonl"
    cli("envs", "generate", "math", "--n", "2", "--seed", "5", "--out", str(tasks_path))
    return read_jsonl(tasks_path), tasks_path


def test_verify_never_writes_over_its_own_input(tmp_path):
    tasks, _ = _math_rows(tmp_path)
    traj = tmp_path / "traj.jsonl"
    traj.write_text(json.dumps({"task": tasks[0], "completion": f"\\boxed{{{tasks[0]['answer']}}}"}) + "\n")
    before = traj.read_bytes()
    (tmp_path / "alias.jsonl").symlink_to(traj)
    for out in (traj, tmp_path / "alias.jsonl", tmp_path / "." / "traj.jsonl"):
        done = cli_main("envs", "verify", "math", str(traj), "--out", str(out), "--workers", "1")
        assert done.returncode == 2 and "is also an input of this command" in done.stderr, done.stderr
    assert traj.read_bytes() == before  # it was emptied, with exit code 0
    partial = tmp_path / "traj.jsonl.partial"
    traj.rename(partial)
    done = cli_main("envs", "verify", "math", str(partial), "--out", str(traj), "--workers", "1")
    assert done.returncode == 2 and "its .partial file" in done.stderr and partial.read_bytes() == before


def test_out_that_is_a_folder_or_empty_is_exit_2(tmp_path):
    tasks, tasks_path = _math_rows(tmp_path)
    (tmp_path / "dir").mkdir()
    for args in (["envs", "generate", "math", "--n", "2", "--out", str(tmp_path / "dir")],
                 ["envs", "verify", "math", str(tasks_path), "--out", str(tmp_path / "dir")]):
        done = cli_main(*args)
        assert done.returncode == 2 and "is a folder; expected the path of a file" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    for args in (["envs", "generate", "math", "--out", ""], ["envs", "verify", "math", str(tasks_path), "--out", " "]):
        done = cli_main(*args)
        assert done.returncode == 2 and "an empty path would mean the" in done.stderr, done.stderr


def test_bad_rows_are_malformed_rows_not_crashes_or_verifier_errors(tmp_path):
    tasks, _ = _math_rows(tmp_path)
    task = tasks[0]
    good = json.dumps({"task": task, "completion": f"\\boxed{{{task['answer']}}}"})
    rows = [good,
            '{"task": ' + "[" * 5000 + "]" * 5000 + "}",  # RecursionError in json
            json.dumps({"task": {**task, "meta": "X"}, "completion": "1"}).replace('"X"', "[" * 900 + "]" * 900),
            json.dumps({"task": task, "completion": "\ud800"}),  # a lone surrogate escape
            json.dumps({"task": task, "messages": [*task["messages"], {"role": "assistant", "content": {"a": 1}}]}),
            json.dumps({"task": task, "messages": [*task["messages"], {"role": "assistant", "content": None}]}),
            good]
    traj = tmp_path / "traj.jsonl"
    traj.write_bytes(("\n".join(rows) + "\n").encode() + json.dumps({"task": task, "completion": "caf"}).encode()
                     .replace(b"caf", b"caf\xe9") + b"\n")
    res = tmp_path / "r.jsonl"
    cli("envs", "verify", "math", str(traj), "--out", str(res), "--workers", "1")
    by_line = {r["line"]: r for r in read_jsonl(res)}
    assert sorted(by_line) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [n for n, r in by_line.items() if r["reasons"] == ["malformed_row"]] == [2, 3, 4, 5, 8]
    assert "nested too deeply" in by_line[2]["error"] and "lone surrogate" in by_line[4]["error"]
    assert "nested more than 100 levels deep" in by_line[3]["error"]  # pickling it to a worker crashed the run
    assert "messages.1.content must be a string, got dict" in by_line[5]["error"]
    assert "not valid UTF-8 (byte 0xe9" in by_line[8]["error"]
    assert by_line[1]["passed"] and by_line[7]["passed"] and by_line[6]["reasons"] == ["no_answer"]


SLOW_ENV = '''
import pathlib, time
from posttrain.environment import Environment, StepResult, VerifyResult


class SlowEnv(Environment):
    name = "slow"

    def reset(self, task):
        return [], []

    def step(self, assistant_message):
        return StepResult(done=True)

    def generate_tasks(self, n, seed):
        return iter([])

    def verify(self, trajectory):
        if trajectory.task.get("slow"):
            pathlib.Path(trajectory.task["started"]).write_text("started")
            time.sleep(120)
        return VerifyResult(passed=True, score=1.0)
'''


def test_ctrl_c_says_interrupted_and_keeps_the_finished_rows_as_partial(tmp_path):
    import signal
    import time

    (tmp_path / "slow_env.py").write_text(SLOW_ENV)
    started = tmp_path / "started"
    traj = tmp_path / "traj.jsonl"
    traj.write_text("".join(json.dumps({"task": {"id": f"t{i}", "slow": i == 2, "started": str(started)},
                                        "completion": "x"}) + "\n" for i in range(4)))
    res = tmp_path / "r.jsonl"
    res.write_text("results of an earlier run\n")
    proc = subprocess.Popen([sys.executable, "-c", "from posttrain.cli import main; main()", "envs", "verify",
                             str(tmp_path / "slow_env.py"), str(traj), "--out", str(res), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), proc.stderr.read() if proc.poll() is not None else "row 3 never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = " ".join(err.split())
    assert proc.returncode == 130 and "interrupted" in err, err
    assert "r.jsonl.partial (marked partial)" in err and "Traceback" not in err
    assert res.read_text() == "results of an earlier run\n"  # not replaced by half a run
    assert [r["line"] for r in read_jsonl(tmp_path / "r.jsonl.partial")] == [1, 2]
    traj.write_text("".join(json.dumps({"task": {"id": f"t{i}"}, "completion": "x"}) + "\n" for i in range(4)))
    cli("envs", "verify", str(tmp_path / "slow_env.py"), str(traj), "--out", str(res), "--workers", "1")
    assert len(read_jsonl(res)) == 4 and not (tmp_path / "r.jsonl.partial").exists()  # superseded by the whole run
