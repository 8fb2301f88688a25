"""The comparison table: one row per model, one column per metric of each set (and bucket), plus the chat win rate.

Columns, in order: for each set ``S``, ``S acc`` (and ``S reward`` with a ``rewards`` section) and ``S pass@k``
over the whole set, then the same per bucket as ``S/bucket ...`` when the set has more than one bucket; then
``win rate`` (against the reference, ties count half), per chat bucket when there are several, and ``reward`` (the
scorer's mean score). Empty cells are metrics a model does not have (e.g. no prompt could be scored).
"""

from __future__ import annotations

from typing import Any

from posttrain.evaluation.metrics import ACCURACY, ALL, PASS_AT_K, REWARD

Cell = float | int | str | None


def _metric_cells(prefix: str, metrics: dict[str, Any], ks: list[int]) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    if ACCURACY in metrics:
        cells[f"{prefix} acc"] = metrics[ACCURACY]
    if REWARD in metrics:
        cells[f"{prefix} reward"] = metrics[REWARD]
    for k in ks:
        if PASS_AT_K in metrics:
            cells[f"{prefix} pass@{k}"] = metrics[PASS_AT_K][f"pass@{k}"]
    return cells


def model_cells(result: dict[str, Any], ks: list[int]) -> dict[str, Cell]:
    """One model's row as column -> value."""
    cells: dict[str, Cell] = {}
    for set_name, metrics in result.get("sets", {}).items():
        cells.update(_metric_cells(set_name, metrics[ALL], ks))
        if len(metrics["buckets"]) > 1:
            for bucket, bucket_metrics in metrics["buckets"].items():
                cells.update(_metric_cells(f"{set_name}/{bucket}", bucket_metrics, ks))
    chat = result.get("chat")
    if chat is not None:
        cells["win rate"] = chat["rate"]
        if len(chat["buckets"]) > 1:
            for bucket, rate in chat["buckets"].items():
                cells[f"win rate/{bucket}"] = rate["rate"]
        cells["reward"] = chat["mean_score"]
    return cells


def comparison(models: dict[str, dict[str, Any]], ks: list[int]) -> tuple[list[str], list[dict[str, Cell]]]:
    """(columns, rows): rows in the models' order, each ``{"model": name, column: value, ...}``."""
    rows = [{"model": name, **model_cells(result, ks)} for name, result in models.items()]
    columns = ["model", *dict.fromkeys(c for row in rows for c in row if c != "model")]
    return columns, rows


def fmt(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown(columns: list[str], rows: list[dict[str, Cell]]) -> str:
    """A GitHub-flavoured markdown table (``|`` in names is escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(columns), "|" + "|".join(":---" if c == "model" else "---:" for c in columns) + "|"]
    out += [line([fmt(row.get(c)) for c in columns]) for row in rows]
    return "\n".join(out) + "\n"


def rich_table(columns: list[str], rows: list[dict[str, Cell]], title: str) -> Any:
    """The table for a terminal, turned on its side (one row per metric, one column per model): a few models fit
    any width, where dozens of metric columns would not. results.md keeps one row per model."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric", justify="left")
    for row in rows:
        table.add_column(str(row["model"]), justify="right")
    for c in columns[1:]:
        table.add_row(c, *(fmt(row.get(c)) for row in rows))
    return table
