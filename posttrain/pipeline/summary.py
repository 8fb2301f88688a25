"""The end of a run: one table of every stage's key numbers (printed, ``summary.json``, ``summary.md``), and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.manifest import write_json
from posttrain.pipeline.graph import Plan
from posttrain.report import results, say

STATUS_STYLE = {"ran": "green", "skipped": "cyan", "failed": "bold red", "disabled": "dim"}


def write_summary(p: Plan, rows: list[dict[str, Any]], seconds: float, source: str) -> dict[str, Any]:
    """``RUN/summary.json`` and ``RUN/summary.md`` (+ ``RUN/plots/*.png``); returns the summary."""
    from posttrain.plots import plot_run

    folders = {s.name: _folder(s) for s in p.stages if s.enabled}
    try:
        plots = plot_run(p.run_dir / "plots", {k: v for k, v in folders.items() if v is not None})
    except Exception as e:  # noqa: BLE001 - a plot must never lose a finished run's summary
        say(f"warning: plots could not be drawn: {type(e).__name__}: {e}")
        plots = {}
    summary = {
        "config": source, "run_dir": str(p.run_dir), "seconds": round(seconds, 1),
        # the recipe's compute time so far: every finished stage's own run time, whenever it ran
        "stage_seconds": round(sum(r.get("duration_s") or 0 for r in rows if r["status"] in ("ran", "skipped")), 1),
        "stages": [{**row, "folder": str(folders[row["stage"]]) if folders.get(row["stage"]) else None}
                   for row in rows],
        "eval": next((r["metrics"].get("table") for r in rows if r["stage"] == "eval" and r.get("metrics")), None),
        "plots": {name: str(path.relative_to(p.run_dir)) for name, path in plots.items()},
    }
    write_json(p.run_dir / "summary.json", summary)
    (p.run_dir / "summary.md").write_text(markdown(summary), encoding="utf-8")
    return summary


def _folder(stage: Any) -> Path | None:
    return Path(stage.config.output_dir) if stage.config is not None else None


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def gain_lines(metrics: dict[str, Any]) -> list[str]:
    return [f"{g['metric']}: {fmt(g['before'])} -> {fmt(g['after'])}" for g in metrics.get("gains", [])]


def detail_text(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in (metrics.get("details") or {}).items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {fmt(v)}" for k, v in value.items() if not isinstance(v, dict | list))
            parts.append(f"{key} ({inner})")
        elif isinstance(value, list):
            if value:
                parts.append(f"{key} {', '.join(fmt(v) for v in value)}")
        else:
            parts.append(f"{key} {fmt(value)}")
    return "; ".join(parts)


def _time(row: dict[str, Any]) -> str:
    seconds = row.get("duration_s")
    if seconds is None:
        return ""
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# posttrain pipeline: {summary['run_dir']}", "", f"Config: `{summary['config']}`; "
             f"{summary['seconds']:.0f} s in this invocation; {summary['stage_seconds']:.0f} s of stage time in total.",
             "",
             "| stage | status | time | before -> after | details |", "|:---|:---|---:|:---|:---|"]
    for row in summary["stages"]:
        metrics = row.get("metrics") or {}
        gains = "<br>".join(gain_lines(metrics)) or ""
        details = detail_text(metrics) or row.get("error", "")
        lines.append(f"| {row['stage']} | {row['status']} | {_time(row)} | {gains} | {details.replace('|', '/')} |")
    table = summary.get("eval")
    if table:
        from posttrain.evaluation.table import markdown as eval_markdown

        lines += ["", "## Evaluation", "", eval_markdown(table["columns"], table["rows"])]
    if summary["plots"]:
        lines += ["", "## Plots", ""] + [f"![{name}]({path})" for name, path in summary["plots"].items()]
    return "\n".join(lines) + "\n"


def print_summary(summary: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"pipeline: {summary['run_dir']}", title_justify="left", show_lines=True)
    for column, justify in (("stage", "left"), ("status", "left"), ("time", "right"), ("before -> after", "left"),
                            ("details", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in summary["stages"]:
        metrics = row.get("metrics") or {}
        style = STATUS_STYLE.get(row["status"], "yellow")
        table.add_row(row["stage"], f"[{style}]{escape(row['status'])}[/]", _time(row),
                      escape("\n".join(gain_lines(metrics))), escape(detail_text(metrics) or row.get("error", "")))
    results.print(table)
    if summary.get("eval"):
        from posttrain.evaluation.table import rich_table

        results.print(rich_table(summary["eval"]["columns"], summary["eval"]["rows"], "evaluation"))
    if summary["plots"]:
        results.print(f"plots: {', '.join(str(Path(summary['run_dir']) / p) for p in summary['plots'].values())}")
    results.print(f"summary: {Path(summary['run_dir']) / 'summary.md'} ({summary['stage_seconds']:.0f} s of stage "
                  "time)", highlight=False)
