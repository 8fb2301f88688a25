"""Write the shipped rows in well-known task shapes under data_recipes/samples/shapes/ (docs/environments.md, "Your
task files"): GSM8K, MATH, HumanEval, MBPP, APPS and CodeContests stdin/stdout, xLAM, OpenAI tool_calls, BFCL and
IFEval rows, each as the public data sets lay them out, so that the recipe formats can be tried on files you have.

    .venv/bin/python scripts/make_task_shapes.py [OUT_DIR] [--rows N]

We write every row ourselves from the environments' own seeded generators (the answers are computed, the code
solutions pass their tests, the tool calls fit their schemas, the responses the IFEval instructions need exist), then
lay it out in the public shape. Deterministic: re-running changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from envs.code.generator import generate_tasks as code_tasks
from envs.instruction_following.generator import generate_tasks as if_tasks
from envs.math.tasks import INSTRUCTION
from envs.math.tasks import generate_tasks as math_tasks
from envs.tool_call_match.samples import generate_tasks as tool_tasks

SEED = 2024
XLAM_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list",
              "object": "dict"}
BFCL_TYPES = {"object": "dict", "number": "float"}


def _question(task: dict[str, Any]) -> str:
    return task["messages"][-1]["content"].removesuffix(f"\n\n{INSTRUCTION}")


def gsm8k(n: int) -> list[dict[str, Any]]:
    rows = []
    for task in list(math_tasks(21 * n, SEED))[n:]:  # the first n are the MATH-shaped rows
        if len(rows) == n:
            break
        if not re.fullmatch(r"-?\d+", task["answer"]):  # GSM8K's answers are whole numbers
            continue
        steps = task["solution"].rsplit("\n\nThe answer is", 1)[0]
        rows.append({"question": _question(task), "answer": f"{steps}\n#### {int(task['answer']):,}"})
    return rows


def math_boxed(n: int) -> list[dict[str, Any]]:
    return [{"problem": _question(t), "solution": t["solution"], "level": f"Level {1 + i % 5}", "type": t["family"]}
            for i, t in enumerate(math_tasks(n, SEED))]


def _code(kind: str, n: int, seed: int) -> list[dict[str, Any]]:
    found = []
    for task in code_tasks(30 * n, seed):
        if task["kind"] == kind:
            found.append(task)
        if len(found) == n:
            break
    return found


def humaneval(n: int) -> list[dict[str, Any]]:
    rows = []
    for i, task in enumerate(_code("function", n, SEED)):
        body = "".join(f"    {t['code']}\n" for t in task["tests"])
        rows.append({"task_id": f"Shapes/{i}", "prompt": task["prompt"], "entry_point": task["entry_point"],
                     "canonical_solution": task["reference_solution"],
                     "test": f"METADATA = {{}}\n\n\ndef check(candidate):\n{body}"})
    return rows


def mbpp(n: int) -> list[dict[str, Any]]:
    rows = []
    for i, task in enumerate(_code("function", n, SEED + 1)):
        doc = re.search(r'"""(.*?)"""', task["prompt"], re.S).group(1).strip()
        name = task["entry_point"]
        tests = [t["code"].replace("candidate(", f"{name}(") for t in task["tests"]]
        rows.append({"task_id": 9000 + i, "text": f"Write a function {name}: {doc}", "code": task["reference_solution"],
                     "test_list": tests[:3], "challenge_test_list": tests[3:], "test_setup_code": ""})
    return rows


def stdio(n: int) -> list[dict[str, Any]]:
    rows = []
    for i, task in enumerate(_code("stdio", n, SEED + 2)):
        statement = task["messages"][0]["content"].split("\n\n", 1)[1]
        inputs, outputs = [t["input"] for t in task["tests"]], [t["output"] for t in task["tests"]]
        if i % 2 == 0:  # APPS: input_output and solutions as JSON strings
            rows.append({"problem_id": 5000 + i, "question": statement, "difficulty": "introductory",
                         "input_output": json.dumps({"inputs": inputs, "outputs": outputs}),
                         "solutions": json.dumps([task["reference_solution"]])})
        else:  # CodeContests: public/private tests, solutions by language (3 = Python 3)
            rows.append({"name": f"shapes_{i}", "description": statement,
                         "public_tests": {"input": inputs[:2], "output": outputs[:2]},
                         "private_tests": {"input": inputs[2:], "output": outputs[2:]},
                         "solutions": {"language": [3], "solution": [task["reference_solution"]]}})
    return rows


def _first(truth: dict[str, Any]) -> dict[str, Any]:
    return {k: v[0] for k, v in truth["arguments"].items() if v[0] != ""}


def _tool_tasks(n: int, part: int) -> list[dict[str, Any]]:
    """The ``part``-th group of ``n`` tool tasks, all requests distinct across the three tool shapes (the generator
    may offer one request with other tools; the build's dedupe would drop such a repeat)."""
    found: dict[str, dict[str, Any]] = {}
    for task in tool_tasks(60 * n, SEED):
        found.setdefault(task["messages"][-1]["content"], task)
        if len(found) == 3 * n:
            break
    return list(found.values())[part * n:(part + 1) * n]


def _xlam_tool(schema: dict[str, Any]) -> dict[str, Any]:
    fn = schema["function"]
    required = fn["parameters"].get("required", [])
    params = {}
    for name, spec in fn["parameters"]["properties"].items():
        entry = {"type": XLAM_TYPES[spec["type"]], "description": spec.get("description", name)}
        if name not in required:  # xLAM marks an optional parameter by giving it a default
            entry["default"] = spec.get("default", "")
        params[name] = entry
    return {"name": fn["name"], "description": fn["description"], "parameters": params}


def xlam(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "query": t["messages"][-1]["content"],
             "tools": json.dumps([_xlam_tool(s) for s in t["tools"]]),
             "answers": json.dumps([{"name": c["name"], "arguments": _first(c)} for c in t["ground_truth"]])}
            for i, t in enumerate(_tool_tasks(n, 0))]


def openai_tool_calls(n: int) -> list[dict[str, Any]]:
    rows = []
    for t in _tool_tasks(n, 1):
        calls = [{"id": f"call_{j}", "type": "function",
                  "function": {"name": c["name"], "arguments": json.dumps(_first(c))}}
                 for j, c in enumerate(t["ground_truth"])]
        last = {"role": "assistant", "content": None, "tool_calls": calls} if calls else \
            {"role": "assistant", "content": "I can answer that without a tool."}
        rows.append({"tools": t["tools"], "messages": [*t["messages"], last]})
    return rows


def _bfcl_params(schema: dict[str, Any]) -> dict[str, Any]:
    params = json.loads(json.dumps(schema["function"]["parameters"]))
    params["type"] = "dict"
    for spec in params["properties"].values():
        spec["type"] = BFCL_TYPES.get(spec["type"], spec["type"])
    return params


def bfcl(n: int) -> list[dict[str, Any]]:
    return [{"id": f"simple_{i}", "question": [[{"role": "user", "content": t["messages"][-1]["content"]}]],
             "function": [{"name": s["function"]["name"], "description": s["function"]["description"],
                           "parameters": _bfcl_params(s)} for s in t["tools"]],
             "ground_truth": [{c["name"]: c["arguments"]} for c in t["ground_truth"]]}
            for i, t in enumerate(_tool_tasks(n, 2))]


def ifeval(n: int) -> list[dict[str, Any]]:
    return [{"key": 7000 + i, "prompt": t["prompt"], "instruction_id_list": t["instruction_id_list"],
             "kwargs": t["kwargs"]} for i, t in enumerate(if_tasks(n, SEED))]


SHAPES = {"gsm8k": gsm8k, "math_boxed": math_boxed, "humaneval": humaneval, "mbpp": mbpp, "stdio": stdio,
          "xlam": xlam, "openai_tool_calls": openai_tool_calls, "bfcl": bfcl, "ifeval": ifeval}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path,
                        default=Path(__file__).resolve().parent.parent / "data_recipes" / "samples" / "shapes")
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in SHAPES.items():
        rows = make(args.rows)
        path = args.out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    main()
