"""`posttrain envs ...`: list environments, generate task sets, verify trajectories."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from posttrain.atomic import output_lock, partial_path, staged_file
from posttrain.cli.common import app, console, console_err
from posttrain.errors import UserError
from posttrain.jsonrows import ENCODING_ERRORS, BadRow, parse_row
from posttrain.paths import check_file_output, check_not_an_input, cli_path

envs_app = typer.Typer(help="Sandboxed environments: list, generate tasks, verify trajectories.", no_args_is_help=True)
app.add_typer(envs_app, name="envs")

MAX_LISTED_MALFORMED = 10
MAX_DEPTH = 100  # a trajectory goes to a worker process by pickle, which fails on deep nesting (no task needs it)


@envs_app.command("list")
def list_envs() -> None:
    """The built-in environments and what they do."""
    from posttrain.environment import BUILTIN_ENVS, load_env_class

    table = Table(title="environments")
    for col in ("name", "description", "tasks"):
        table.add_column(col)
    for name in BUILTIN_ENVS:
        try:
            cls = load_env_class(name)
        except UserError as e:
            table.add_row(name, f"[red]unavailable:[/] {escape(e.message)}", "")
            continue
        made = "generated (--n/--seed)" if getattr(cls, "has_generator", True) else "your task files only"
        sets = [made, *getattr(cls, "TASK_SETS", ())]
        table.add_row(name, escape(cls.description or "-"), escape(", ".join(sets)))
    console.print(table)


@envs_app.command("generate")
def generate(
    name: str = typer.Argument(..., help="Environment: code, math, tool_calling, a module name or a .py path."),
    out: Path = typer.Option(..., "--out", "-o", parser=cli_path, help="Output JSONL file, one task per line."),
    n: int | None = typer.Option(None, "--n", help="How many tasks (default 100; with --set: the whole set)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the task generator (same n and seed: same tasks)."),
    task_set: str | None = typer.Option(None, "--set", help="A fixed task set instead, e.g. `humaneval` (code)."),
) -> None:
    """Write NAME's tasks to OUT as JSONL (seeded generation, or a named task set)."""
    from posttrain.environment import make_env

    if n is not None and n < 0:
        raise UserError(f"--n must be >= 0, got {n}")
    check_file_output(out)
    env = make_env(name)
    if task_set is not None:
        sets = getattr(env, "TASK_SETS", {})
        if not sets:
            raise UserError(f"environment {name!r} has no fixed task sets; drop --set to generate tasks")
        tasks: Any = env.task_set(task_set)
        tasks = tasks[:n] if n is not None else tasks
    else:
        tasks = env.generate_tasks(100 if n is None else n, seed)
    kinds: Counter[str] = Counter()
    with staged_file(out) as f:  # a half-generated task file never replaces a whole one
        for task in tasks:
            f.write(json.dumps(task, ensure_ascii=False) + "\n")
            kinds[str(task.get("kind") or task.get("source") or task.get("env") or name)] += 1
    total = sum(kinds.values())
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
    console.print(f"wrote {total} {escape(name)} tasks to {escape(str(out))} ({escape(parts)})", highlight=False)


def _scan_jsonl(path: Path) -> tuple[int, int]:
    """(rows, rows that are JSON). A file with rows but no JSON at all is not JSONL: that is a usage error."""
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected a JSONL file of trajectories, one JSON object per line)")
    rows = parsed = 0
    first_error = ""
    with path.open(encoding="utf-8", errors=ENCODING_ERRORS) as f:  # a bad byte makes one row malformed, not all
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows += 1
            try:
                parse_row(line)
                parsed += 1
            except BadRow as e:
                first_error = first_error or f"line {line_no}: {e}"
    if rows == 0:
        raise UserError(f"{path}: no rows (expected JSONL: one {{'task': ..., 'messages'|'completion': ...}} per line)")
    if parsed == 0:
        raise UserError(f"{path}: not JSONL, no line is JSON ({first_error})")
    return rows, parsed


class _Rows:
    """Reads trajectory rows lazily; malformed ones are recorded with their line number, not dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[int] = []  # line number of each trajectory handed to the pool
        self.ids: list[Any] = []
        self.malformed: deque[tuple[int, str]] = deque()

    def __iter__(self) -> Iterator[Any]:
        from posttrain.verify_pool import trajectory_from_row

        with self.path.open(encoding="utf-8", errors=ENCODING_ERRORS) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{self.path}:{line_no}"
                try:
                    trajectory = trajectory_from_row(parse_row(line, MAX_DEPTH), where)
                    _check_contents(trajectory.messages, where)
                except BadRow as e:
                    self.malformed.append((line_no, f"{where}: {e}"))
                    continue
                except UserError as e:
                    self.malformed.append((line_no, e.message))
                    continue
                self.lines.append(line_no)
                self.ids.append(trajectory.task.get("id"))
                yield trajectory


def _check_contents(messages: list[dict[str, Any]], where: str) -> None:
    """Message contents are text (or absent/null, as for an assistant turn that only calls tools); anything else is a
    malformed row, not a verifier crash."""
    for i, m in enumerate(messages):
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise UserError(f"{where}: messages.{i}.content must be a string, got {type(content).__name__}")


@envs_app.command("verify")
def verify(
    name: str = typer.Argument(..., help="Environment: code, math, tool_calling, a module name or a .py path."),
    trajectories: Path = typer.Argument(..., help="JSONL rows {'task': {...}, 'messages': [...]} or "
                                                  "{'task': {...}, 'completion': '...'}."),
    out: Path = typer.Option(..., "--out", "-o", parser=cli_path,
                             help="Per-row results as JSONL (one line per input row); written as OUT.partial if the "
                                  "run stops early."),
    workers: int = typer.Option(2, "--workers", "-w", help="Verification processes."),
    backend: str | None = typer.Option(None, "--backend", help="Sandbox backend: bwrap (default) or rlimit "
                                                               "(NOT a security boundary)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds one verification may take before it is an "
                                                           "error."),
) -> None:
    """Verify every trajectory in TRAJECTORIES with NAME's verifier, in parallel, and summarize."""
    from posttrain.environment import load_env_class
    from posttrain.sandbox import ENV_VAR, backend_name, get_backend
    from posttrain.verify_pool import VerifyPool

    check_file_output(out)
    check_not_an_input(out, [trajectories])
    check_not_an_input(partial_path(out), [trajectories], "--out (its .partial file)")
    total_rows, _ = _scan_jsonl(trajectories)
    env_cls = load_env_class(name)
    chosen = backend_name(backend)
    if chosen == "rlimit":
        console_err.print("[yellow]warning:[/] the rlimit backend is NOT a security boundary: untrusted code "
                          "can read host files and use the network")
    if getattr(env_cls, "uses_sandbox", False):
        get_backend(chosen)  # fail now, once, with the backend's own message, rather than on every row
    rows = _Rows(trajectories)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    score_sum = 0.0
    started = time.monotonic()

    def write_malformed(f: Any, before: int | None) -> None:
        while rows.malformed and (before is None or rows.malformed[0][0] < before):
            line_no, message = rows.malformed.popleft()
            counts["malformed"] += 1
            if counts["malformed"] <= MAX_LISTED_MALFORMED:
                console_err.print(f"[red]malformed row[/] {escape(message)}", highlight=False)
            f.write(json.dumps({"line": line_no, "id": None, "passed": False, "score": 0.0,
                                "reasons": ["malformed_row"], "error": message, "details": {}}) + "\n")

    columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # The results go to a temporary file that becomes OUT only once every row is in: a run that stops early leaves
    # OUT as it was and what it had done in OUT.partial. The lock keeps a second run from writing the same OUT.
    with output_lock(out), _partial_notice(out, counts):
        with staged_file(out, keep_partial=True) as f, Progress(*columns, console=console_err, transient=True) as bar, \
                VerifyPool(name, workers=workers, timeout_s=timeout, worker_env={ENV_VAR: chosen}) as pool:
            task_id = bar.add_task("verify", total=total_rows)
            for index, result in pool.verify_many(rows, ordered=True):
                line_no = rows.lines[index]
                write_malformed(f, before=line_no)
                kind = "errors" if result.error else "passed" if result.passed else "failed"
                counts[kind] += 1
                reasons.update(result.reasons)
                score_sum += result.score
                f.write(json.dumps({"line": line_no, "id": rows.ids[index], **result.to_dict()}, default=str) + "\n")
                f.flush()  # the partial file holds every finished row if the run is stopped
                bar.update(task_id, completed=sum(counts.values()) + len(rows.malformed))
            write_malformed(f, before=None)
    partial_path(out).unlink(missing_ok=True)  # what an earlier, stopped run left: superseded by the whole OUT
    _summary(trajectories, out, counts, reasons, score_sum, time.monotonic() - started)


@contextmanager
def _partial_notice(out: Path, counts: Counter[str]) -> Iterator[None]:
    """Say where the rows of a run that stopped early are (the error or Ctrl-C itself is reported by the CLI)."""
    try:
        yield
    except BaseException:
        if sum(counts.values()) and partial_path(out).is_file():  # rows were written, so this run's partial file
            console_err.print(f"[yellow]stopped early:[/] the results of the {sum(counts.values())} rows done are in "
                              f"{escape(str(partial_path(out)))} (marked partial); {escape(str(out))} was not written",
                              highlight=False)
        raise


def _summary(path: Path, out: Path, counts: Counter[str], reasons: Counter[str], score_sum: float,
             seconds: float) -> None:
    verified = counts["passed"] + counts["failed"] + counts["errors"]
    rows = verified + counts["malformed"]
    table = Table(title=f"verification of {escape(str(path))}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in [
        ("rows", rows), ("passed", counts["passed"]), ("failed", counts["failed"]),
        ("errors (verification failed)", counts["errors"]), ("malformed rows", counts["malformed"]),
        ("pass rate (of verified rows)", f"{counts['passed'] / verified:.1%}" if verified else "-"),
        ("mean score", f"{score_sum / verified:.3f}" if verified else "-"),
        ("time", f"{seconds:.1f}s ({verified / seconds:.1f} rows/s)" if seconds > 0 else "-"),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    hist = Table(title="reasons")
    hist.add_column("reason")
    hist.add_column("rows", justify="right")
    for reason, n in reasons.most_common():
        hist.add_row(escape(reason), str(n))
    if counts["malformed"]:
        hist.add_row("malformed_row", str(counts["malformed"]))
    console.print(hist)
    console.print(f"results: {escape(str(out))}", highlight=False)
