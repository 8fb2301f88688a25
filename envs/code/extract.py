"""Getting the program out of a model's answer, and joining it with a task's function stub."""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)```", re.S)
_OPEN_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*)\Z", re.S | re.I)
PYTHON_TAGS = {"python", "python3", "py"}


def extract_code(text: str) -> str:
    """The last ```python block; else the last fenced block; else an unclosed fence's rest; else the raw text.

    Leading indentation is kept: a function *body* (HumanEval's completion style) is valid code here.
    """
    blocks = _FENCE.findall(text or "")
    python = [body for tag, body in blocks if tag.lower() in PYTHON_TAGS]
    if python:
        code = python[-1]
    elif blocks:
        code = blocks[-1][1]
    else:
        m = _OPEN_FENCE.search(text or "")
        code = m.group(1) if m else (text or "")
    lines = code.rstrip().split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def defines_function(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def function_program(prompt: str, code: str, entry_point: str) -> str:
    """The program the worker runs: the task's stub (its imports and helpers) with the candidate's code.

    A complete function replaces the stub (it is defined after it); anything else is taken as the stub's body.
    """
    if defines_function(code, entry_point):
        return f"{prompt.rstrip()}\n\n\n{code}\n"
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    return head + code + "\n"
