"""Plots of a pipeline run, drawn from what the stages wrote (no stage needs to be loaded):

- ``loss_curves.png``: the training loss (and eval loss) of every trained stage, from ``metrics.jsonl``;
- ``rs_pass_rates.png``: held-out pass@1 per rejection-sampling round, in total and per bucket;
- ``rl_tracks.png``: the Logic track's reward per step and on held-out tasks; the Chat track's DPO margin per step and
  its win rate per round;
- ``reliability.png``: the calibration stage's reliability diagram, before and after (held-out answers);
- ``eval.png``: the evaluation table as grouped bars, one group per model.

Figures use matplotlib's object API with the Agg canvas: no display and no pyplot global state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from posttrain.manifest import METRICS_FILE, read_jsonl


def plot_run(out_dir: Path, folders: Mapping[str, Path]) -> dict[str, Path]:
    """Every plot the stage folders have data for (``folders``: stage name -> its output folder); -> name -> file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, Path] = {}
    for name, draw in (("loss_curves", plot_losses), ("rs_pass_rates", plot_rs_rounds), ("rl_tracks", plot_tracks),
                       ("reliability", plot_reliability), ("eval", plot_eval)):
        path = draw(out_dir / f"{name}.png", folders)
        if path is not None:
            drawn[name] = path
    return drawn


# ------------------------------------------------------------------------------------------------------------ data
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def series(rows: list[dict[str, Any]], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    pairs = [(r[x], r[key]) for r in rows if isinstance(r.get(key), int | float) and isinstance(r.get(x), int | float)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def loss_logs(folders: Mapping[str, Path]) -> dict[str, list[tuple[str, list[dict[str, Any]]]]]:
    """Panel title -> [(label, log rows)] for every trained stage found."""
    panels: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for stage in ("midtrain", "sft", "rm"):
        if stage in folders and (rows := read_jsonl(folders[stage] / METRICS_FILE, tolerant=True)):
            panels[stage] = [(stage, rows)]
    if "rs" in folders:
        rounds = sorted(folders["rs"].glob("round_*/model/metrics.jsonl"), key=lambda p: int(p.parts[-3][6:]))
        found = [(p.parts[-3].replace("_", " "), read_jsonl(p, tolerant=True)) for p in rounds]
        if found:
            panels["rejection-sampling SFT"] = found
    if "rl" in folders:
        chat = read_jsonl(folders["rl"] / "chat" / METRICS_FILE, tolerant=True)
        by_round: dict[int, list[dict[str, Any]]] = {}
        for row in chat:
            if row.get("kind") == "train":
                by_round.setdefault(row.get("round", 0), []).append(row)
        if by_round:
            panels["chat track (DPO)"] = [(f"round {r}", rows) for r, rows in sorted(by_round.items())]
        logic = read_jsonl(folders["rl"] / "logic" / METRICS_FILE, tolerant=True)
        if any("loss" in r for r in logic):
            panels["logic track (GRPO)"] = [("logic", logic)]
    return panels


# ----------------------------------------------------------------------------------------------------------- plots
def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path)
    return path


def plot_losses(path: Path, folders: Mapping[str, Path]) -> Path | None:
    panels = loss_logs(folders)
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(5 * cols, 3.8 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, runs) in zip(axes, panels.items(), strict=False):
        for label, logged in runs:
            x, y = series(logged, "loss")
            line = ax.plot(x, y, marker=".", label=f"{label} train")[0]
            ex, ey = series(logged, "eval_loss")
            if ex:
                ax.plot(ex, ey, marker="o", linestyle="--", color=line.get_color(), label=f"{label} eval")
        ax.set(title=title, xlabel="step", ylabel="loss")
        ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_rs_rounds(path: Path, folders: Mapping[str, Path]) -> Path | None:
    manifest = _read_json(folders["rs"] / "manifest.json") if "rs" in folders else None
    if not manifest:
        return None
    rounds = [r for r in manifest.get("metrics", {}).get("rounds", []) if r.get("heldout")]
    if not rounds:
        return None
    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [r["heldout"]["pass@1"] for r in rounds], marker="o", linewidth=2, label="held-out (all)")
    for bucket in sorted({b for r in rounds for b in r["heldout"].get("buckets", {})}):
        ax.plot(xs, [r["heldout"].get("buckets", {}).get(bucket, {}).get("pass@1") for r in rounds], marker=".",
                linestyle="--", label=f"held-out {bucket}")
    sampled = [(r["round"], r["sample"]["pass@1"]) for r in rounds if r.get("sample")]
    if sampled:
        ax.bar([s[0] for s in sampled], [s[1] for s in sampled], width=0.3, alpha=0.3, color="gray",
               label="train tasks (sampled)")
    ax.set(title="rejection sampling: pass@1 per round", xlabel="round", ylabel="pass@1", xticks=xs, ylim=(0, 1))
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_tracks(path: Path, folders: Mapping[str, Path]) -> Path | None:
    if "rl" not in folders:
        return None
    logic = read_jsonl(folders["rl"] / "logic" / METRICS_FILE, tolerant=True)
    chat = read_jsonl(folders["rl"] / "chat" / METRICS_FILE, tolerant=True)
    if not logic and not chat:
        return None
    fig = Figure(figsize=(15, 4), dpi=100, layout="constrained")
    rewards, margins, rates = fig.subplots(1, 3)
    x, y = series(logic, "reward")
    rewards.plot(x, y, marker=".", label="train reward")
    hx, hy = series(logic, "heldout/reward")
    rewards.plot(hx, hy, marker="o", linewidth=2, label="held-out reward")
    rewards.set(title="logic track (GRPO): reward", xlabel="step", ylabel="mean reward")
    rewards.legend(fontsize="small")
    train = [r for r in chat if r.get("kind") == "train" and isinstance(r.get("rewards/margins"), int | float)]
    margins.plot(range(1, len(train) + 1), [r["rewards/margins"] for r in train], marker=".")
    margins.set(title="chat track (DPO): chosen - rejected reward", xlabel="logged step (all rounds)",
                ylabel="reward margin")
    won = [(r["round"], r["rate"]) for r in chat if r.get("kind") == "win_rate" and r.get("rate") is not None]
    rates.plot([r for r, _ in won], [v for _, v in won], marker="s", color="tab:red", label="win rate vs SFT")
    rates.axhline(0.5, color="gray", linestyle=":", linewidth=1, label="tie with SFT")
    rates.set(title="chat track: win rate per round (held-out prompts)", xlabel="round", ylabel="win rate",
              ylim=(0, 1), xticks=sorted({r for r, _ in won}))
    rates.legend(fontsize="small")
    return _save(fig, path)


def plot_reliability(path: Path, folders: Mapping[str, Path]) -> Path | None:
    import numpy as np

    from posttrain.calibration import plot_reliability_diagram

    if "calibrate" not in folders:
        return None
    report = folders["calibrate"] / "report"
    same = read_jsonl(report / "answers_eval.jsonl", tolerant=True)  # temperature scaling: the same answers, rescaled
    if same:
        pairs = {"before": [(r["confidence_before"], r["passed"]) for r in same],
                 "after": [(r["confidence_after"], r["passed"]) for r in same]}
    else:
        pairs = {label: [(r["confidence"], r["passed"])
                         for r in read_jsonl(report / f"answers_eval_{label}.jsonl", tolerant=True)]
                 for label in ("before", "after")}
    if not all(pairs.values()):
        return None
    answers = {label: (np.array([c for c, _ in rows], dtype=float), np.array([p for _, p in rows], dtype=float))
               for label, rows in pairs.items()}
    return plot_reliability_diagram(path, answers, title="calibration (held-out answers)")


def plot_eval(path: Path, folders: Mapping[str, Path]) -> Path | None:
    results = _read_json(folders["eval"] / "results.json") if "eval" in folders else None
    if not results or not results.get("rows"):
        return None
    columns = [c for c in results["columns"] if c != "model" and (c.endswith(" acc") or c == "win rate")]
    if not columns:
        return None
    rows = results["rows"]
    fig = Figure(figsize=(max(6, 1.2 * len(rows) * max(1, len(columns)) / 2), 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(columns)
    for j, column in enumerate(columns):
        values = [row.get(column) if isinstance(row.get(column), int | float) else 0.0 for row in rows]
        ax.bar([i + j * width for i in range(len(rows))], values, width=width, label=column)
    ax.set_xticks([i + width * (len(columns) - 1) / 2 for i in range(len(rows))], [row["model"] for row in rows])
    ax.set(title="evaluation", ylabel="accuracy / win rate", ylim=(0, 1))
    ax.legend(fontsize="small")
    return _save(fig, path)
