"""Tables a stage prints when it finishes: a key/value summary, and one row per round or item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from posttrain.report.console import console, results


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def print_finished(stage: str, output: Path | str, metrics: dict[str, Any]) -> None:
    """``<stage> finished``: the output folder and every scalar metric (nested ones live in the manifest)."""
    table = Table(title=f"{stage} finished", show_header=False, title_justify="left")
    table.add_row("output", str(output))
    for key, value in metrics.items():
        if not isinstance(value, dict | list):
            table.add_row(key, fmt(value))
    console.print(table)


def print_rows(title: str, rows: list[dict[str, Any]], left: tuple[str, ...] = ("note",)) -> None:
    """One table row per dict (columns in order of first appearance), to stdout: it is the command's result."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in (row.get(c, "") for c in columns)))
    results.print(table)

