"""Recipe formats of kind ``task`` for data in well-known shapes: each turns one row into one environment task.

| format | rows like | environment |
|---|---|---|
| ``gsm8k`` | GSM8K: ``question``, ``answer`` ending ``#### 42`` | math |
| ``math_boxed`` | MATH: ``problem``, ``solution`` with ``\\boxed{}`` (optional ``answer``) | math |
| ``humaneval`` | HumanEval: ``prompt`` (stub), ``test`` (``check(candidate)``), ``entry_point`` | code |
| ``mbpp`` | MBPP: ``text``/``prompt``, ``test_list`` (asserts), ``code`` | code |
| ``stdio`` | APPS / CodeContests: ``question``/``description``, stdin/stdout tests | code |
| ``xlam``, ``openai_tool_calls``, ``bfcl`` | static tool calls | tool_call_match |
| ``ifeval`` | IFEval: ``prompt``, ``instruction_id_list``, ``kwargs`` | instruction_following |

The converters of an environment's shapes live with it (``envs/<env>/formats.py``); the code shapes are here, since
they only need the code environment's task schema. The result is checked like a ``task`` row; a row that does not fit
raises :class:`MalformedRow` and is counted by the build.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
from collections.abc import Callable
from typing import Any

from posttrain.data.formats import json_value
from posttrain.data.sources import MalformedRow
from posttrain.errors import UserError

TASK_FORMATS: dict[str, str] = {
    "gsm8k": "envs.math.formats:from_gsm8k",
    "math_boxed": "envs.math.formats:from_math",
    "humaneval": "posttrain.data.task_formats:from_humaneval",
    "mbpp": "posttrain.data.task_formats:from_mbpp",
    "stdio": "posttrain.data.task_formats:from_stdio",
    "xlam": "envs.tool_call_match.formats:from_xlam",
    "openai_tool_calls": "envs.tool_call_match.formats:from_openai_tool_calls",
    "bfcl": "envs.tool_call_match.formats:from_bfcl",
    "ifeval": "envs.instruction_following.formats:from_ifeval",
}
_converters: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def converter(fmt: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    if fmt not in _converters:
        from posttrain.plugins import load_object

        _converters[fmt] = load_object(TASK_FORMATS[fmt], f"task format {fmt}")
    return _converters[fmt]


def adapt_shape(fmt: str, record: dict[str, Any]) -> dict[str, Any]:
    """One row of a well-known shape -> a ``task`` row (env, messages, tools, task JSON)."""
    from posttrain.data.formats import adapt_task

    return adapt_task(converter(fmt)(record))


# ---- code ------------------------------------------------------------------------------------------------------------

def _text(record: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    raise MalformedRow(f"missing key {' or '.join(repr(k) for k in keys)} (a non-empty string)")


def _ident(source: str, record: dict[str, Any], *content: Any) -> str:
    given = next((record[k] for k in ("task_id", "problem_id", "id", "name") if record.get(k) not in (None, "")), None)
    if isinstance(given, str | int):
        return f"{source}-{str(given).replace('/', '-')}"
    return f"{source}-{hashlib.sha1(json.dumps(content, default=str).encode()).hexdigest()[:12]}"


def _checked(task: dict[str, Any]) -> dict[str, Any]:
    from envs.code.harness import check_task

    try:
        check_task(task)
    except UserError as e:
        raise MalformedRow(e.message.split(": ", 1)[-1]) from None
    return task


def from_humaneval(record: dict[str, Any]) -> dict[str, Any]:
    """HumanEval-style: the stub is shown, ``check(candidate)`` is split into hidden test blocks."""
    from envs.code.humaneval import function_message, split_check

    prompt, test, entry = _text(record, "prompt"), _text(record, "test"), _text(record, "entry_point").strip()
    try:
        setup, blocks = split_check(test)
    except SyntaxError as e:
        raise MalformedRow(f"test: not valid Python ({e.msg}, line {e.lineno})") from None
    if not blocks:
        raise MalformedRow("test: no check(candidate) function with asserts")
    ident = _ident("humaneval", record, prompt)
    task = {"id": ident, "env": "code", "source": "humaneval", "kind": "function",
            "messages": [{"role": "user", "content": function_message(prompt)}], "tools": [], "prompt": prompt,
            "entry_point": entry, "test_setup": setup,
            "tests": [{"name": f"{ident}#{i}", "code": code} for i, code in enumerate(blocks)]}
    if isinstance(record.get("canonical_solution"), str):
        task["reference_solution"] = record["canonical_solution"]
    return _checked(task)


def _called_name(test: str) -> str | None:
    """The function an assert calls: ``assert add(1, 2) == 3`` -> ``add``."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
            return node.func.id
    return None


MBPP_INSTRUCTIONS = ("Write a Python function for the task below. Answer with the complete function (imports "
                     "included) in one ```python code block.")


def from_mbpp(record: dict[str, Any]) -> dict[str, Any]:
    """MBPP-style: a description and assert lines; the first assert is shown (it fixes the name and signature), every
    assert is a hidden test."""
    text = _text(record, "text", "prompt", "description").strip()
    tests = json_value(record.get("test_list"), "test_list")
    if isinstance(tests, str):
        tests = [line for line in tests.splitlines() if line.strip()]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise MalformedRow("test_list: expected a non-empty list of assert statements")
    extra = json_value(record.get("challenge_test_list"), "challenge_test_list") or []
    tests = [*tests, *[t for t in extra if isinstance(t, str) and t.strip()]]
    entry = record.get("entry_point") or _called_name(tests[0])
    if not isinstance(entry, str) or not entry.isidentifier():
        raise MalformedRow("entry_point: not given, and the first test calls no function by name")
    ident = _ident("mbpp", record, text, tests)
    setup = record.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise MalformedRow("test_setup_code: expected a string")
    message = f"{MBPP_INSTRUCTIONS}\n\n{text}\n\nThe function is called `{entry}`. For example:\n{tests[0]}"
    task = {"id": ident, "env": "code", "source": "mbpp", "kind": "function",
            "messages": [{"role": "user", "content": message}], "tools": [], "prompt": "", "entry_point": entry,
            "test_setup": setup,
            "tests": [{"name": f"{ident}#{i}", "code": t} for i, t in enumerate(tests)]}
    if isinstance(record.get("code"), str):
        task["reference_solution"] = record["code"]
    return _checked(task)


def _io_pairs(record: dict[str, Any]) -> list[tuple[str, str]]:
    """stdin/stdout pairs from APPS' ``input_output``, CodeContests' public/private/generated tests, or ``tests``."""
    pairs: list[tuple[Any, Any]] = []
    io = json_value(record.get("input_output"), "input_output")
    if isinstance(io, dict):
        if io.get("fn_name"):
            raise MalformedRow("input_output: a call-based problem (fn_name); only stdin/stdout problems are stdio "
                               "tasks")
        pairs += list(zip(io.get("inputs") or [], io.get("outputs") or [], strict=False))
        if len(io.get("inputs") or []) != len(io.get("outputs") or []):
            raise MalformedRow("input_output: inputs and outputs differ in number")
    for key in ("public_tests", "private_tests", "generated_tests"):
        group = json_value(record.get(key), key)
        if isinstance(group, dict):
            if len(group.get("input") or []) != len(group.get("output") or []):
                raise MalformedRow(f"{key}: input and output differ in number")
            pairs += list(zip(group.get("input") or [], group.get("output") or [], strict=True))
    tests = json_value(record.get("tests"), "tests")
    if isinstance(tests, list):
        for i, t in enumerate(tests):
            if not isinstance(t, dict) or "input" not in t or "output" not in t:
                raise MalformedRow(f"tests[{i}]: expected {{input, output}}")
            pairs.append((t["input"], t["output"]))
    if not pairs:
        raise MalformedRow("no stdin/stdout tests (input_output, public_tests/private_tests/generated_tests, or "
                           "tests: [{input, output}])")
    out = []
    for i, (stdin, stdout) in enumerate(pairs):
        stdin = "\n".join(stdin) if isinstance(stdin, list) else stdin
        stdout = "\n".join(stdout) if isinstance(stdout, list) else stdout
        if not isinstance(stdin, str) or not isinstance(stdout, str):
            raise MalformedRow(f"test {i}: input and output must be text")
        out.append((stdin, stdout))
    return out


def _python_solution(record: dict[str, Any]) -> str | None:
    solutions = json_value(record.get("solutions"), "solutions")
    if isinstance(solutions, dict):  # CodeContests: {"language": [...], "solution": [...]}; 3 is Python 3
        for lang, code in zip(solutions.get("language") or [], solutions.get("solution") or [], strict=False):
            if lang in (3, "PYTHON3", "python3", "python") and isinstance(code, str):
                return code
        return None
    if isinstance(solutions, list):
        return next((s for s in solutions if isinstance(s, str) and s.strip()), None)
    return record.get("solution") if isinstance(record.get("solution"), str) else None


def from_stdio(record: dict[str, Any]) -> dict[str, Any]:
    """APPS / CodeContests style: a problem statement and stdin/stdout tests, all hidden."""
    from envs.code.generator import STDIO_INSTRUCTIONS

    statement = _text(record, "question", "description", "prompt").strip()
    pairs = _io_pairs(record)
    ident = _ident("stdio", record, statement)
    task = {"id": ident, "env": "code", "source": "stdio", "kind": "stdio",
            "messages": [{"role": "user", "content": f"{STDIO_INSTRUCTIONS}\n\n{statement}"}], "tools": [],
            "tests": [{"name": f"{ident}#{i}", "input": stdin, "output": stdout}
                      for i, (stdin, stdout) in enumerate(pairs)]}
    solution = _python_solution(record)
    if solution is not None:
        task["reference_solution"] = solution
    return _checked(task)
