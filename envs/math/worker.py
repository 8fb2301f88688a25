"""The math-verify worker: a long-lived child process that answers one JSON request per line on stdin.

Run as a script by :mod:`envs.math.checker`, never imported. math-verify's own timeouts (``signal.alarm``) are off;
the parent kills this process when a request takes too long, which works from any thread of the parent.

Request:  {"id": int, "gold": str, "answer": str}
Response: {"id": int, "status": "ok"|"gold_unparseable"|"no_answer"|"crash", "passed": bool,
           "gold_parsed": str, "answer_parsed": str, "error": str|null}
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import resource
import signal
import sys


def _gold_text(gold: str) -> str:
    # Gold answers are bare LaTeX ("\frac{3}{4}", "x + 14"); math-verify extracts math from delimited text.
    return gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"


def _check(parse, verify, gold: str, answer: str) -> dict:
    gold_parsed = parse(_gold_text(gold), fallback_mode="no_fallback", parsing_timeout=None)
    if not gold_parsed:
        return {"status": "gold_unparseable", "passed": False, "error": f"math-verify cannot parse gold {gold!r}"}
    answer_parsed = parse(answer, parsing_timeout=None)
    if not answer_parsed:
        return {"status": "no_answer", "passed": False, "gold_parsed": str(gold_parsed[0])}
    passed = verify(gold_parsed, answer_parsed, timeout_seconds=None)
    return {"status": "ok", "passed": bool(passed), "gold_parsed": str(gold_parsed[0]),
            "answer_parsed": str(answer_parsed[0])}


def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGKILL when the parent dies, so a worker stuck in sympy never outlives a killed trainer."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the worker still exits at end of input once it is idle
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 2:
        _die_with_parent(int(sys.argv[2]))
    if memory_mb > 0:  # a runaway sympy computation hits MemoryError here instead of the machine's RAM
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything the libraries print must not corrupt the protocol stream
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" is expected here
    from math_verify import parse, verify

    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            response = _check(parse, verify, request["gold"], request["answer"])
        except BaseException as e:  # MemoryError, RecursionError, sympy internals: report, keep serving
            response = {"status": "crash", "passed": False, "error": f"{type(e).__name__}: {e}"[:500]}
        response["id"] = request["id"]
        protocol.write(json.dumps(response) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
