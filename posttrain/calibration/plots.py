"""PNG plots of calibration: reliability diagrams (one panel per set of answers) and risk-coverage curves.

Figures are built with matplotlib's object API and saved through the Agg canvas, so nothing touches pyplot's global
state or needs a display, and several threads or Ray workers can plot at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from posttrain.calibration.metrics import (
    N_BINS,
    check_inputs,
    expected_calibration_error,
    reliability_bins,
    risk_coverage_curve,
)
from posttrain.errors import UserError

Answers = Mapping[str, tuple]  # label -> (confidences, correct)


def plot_reliability_diagram(path: str | Path, answers: Answers, *, n_bins: int = N_BINS, title: str = "",
                             dpi: int = 100) -> Path:
    """Reliability diagrams side by side, one per entry of ``answers`` (e.g. {"before": ..., "after": ...}).

    Each panel: accuracy per bin as bars, the gap to the bin's mean confidence shaded, the diagonal of perfect
    calibration, ECE in the panel title, and the number of items per bin in a strip below.
    """
    path = _png_path(path)
    checked = _check_answers(answers)
    fig = Figure(figsize=(5 * len(checked), 6), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(2, len(checked), height_ratios=(3, 1))
    width = 1.0 / n_bins
    for col, (label, (c, y)) in enumerate(checked.items()):
        bins = reliability_bins(c, y, n_bins)
        ece = expected_calibration_error(c, y, n_bins)
        top = fig.add_subplot(grid[0, col])
        bottom = fig.add_subplot(grid[1, col], sharex=top)
        filled = bins.count > 0
        # torchmetrics' extra bin of confidences exactly 1.0 is drawn as a narrow bar just right of 1.0
        left = np.where(np.arange(len(bins.count)) < n_bins, bins.lower, 1.0)
        widths = np.where(np.arange(len(bins.count)) < n_bins, width, width / 3)
        acc, conf = bins.accuracy[filled], bins.mean_confidence[filled]
        top.bar(left[filled], acc, width=widths[filled], align="edge", color="#4c72b0", edgecolor="black",
                label="accuracy")
        top.bar(left[filled], conf - acc, bottom=acc, width=widths[filled], align="edge", color="#dd8452",
                alpha=0.45, hatch="//", edgecolor="#c44e52", label="gap to mean confidence")
        top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
        top.set(xlim=(0, 1 + width / 3), ylim=(0, 1), ylabel="accuracy", title=f"{label}: ECE {ece:.4f} (n={len(y)})")
        top.legend(loc="upper left", fontsize="small")
        bottom.bar(left[filled], bins.count[filled], width=widths[filled], align="edge", color="#8c8c8c",
                   edgecolor="black")
        for x, w, count in zip(left[filled], widths[filled], bins.count[filled], strict=True):
            bottom.annotate(str(count), (x + w / 2, count), ha="center", va="bottom", fontsize="x-small")
        bottom.set(xlabel="confidence", ylabel="items")
        bottom.margins(y=0.25)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_risk_coverage(path: str | Path, answers: Answers, *, title: str = "Risk-coverage", dpi: int = 100) -> Path:
    """Risk (error rate among answered items) against coverage, one curve per entry, AURC in the legend."""
    path = _png_path(path)
    checked = _check_answers(answers)
    fig = Figure(figsize=(6, 4.5), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    # dashes differ per curve: temperature scaling keeps the ranking, so before and after lie exactly on each other
    for (label, (c, y)), style in zip(checked.items(), itertools.cycle(("-", "--", "-.")), strict=False):
        curve = risk_coverage_curve(c, y)
        ax.plot(curve.coverage, curve.risk, linestyle=style, label=f"{label} (AURC {curve.aurc:.4f})")
    # the oracle curve depends only on the number of items and of errors: draw it once when every entry shares them
    shapes = {(len(y), int(y.sum())) for _, y in checked.values()}
    if len(shapes) == 1:
        curve = risk_coverage_curve(*next(iter(checked.values())))
        ax.plot(curve.coverage, curve.optimal_risk, linestyle=":", color="gray",
                label=f"oracle (AURC {curve.optimal_aurc:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage (fraction answered)", ylabel="risk (error rate)", title=title)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _png_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"plot path {path}: expected a file name ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _check_answers(answers: Answers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not answers:
        raise UserError("nothing to plot: expected at least one labelled set of (confidences, correct)")
    checked = {}
    for label, pair in answers.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UserError(f"plot entry {label!r}: expected a pair (confidences, correct)")
        checked[str(label)] = check_inputs(pair[0], pair[1], where=f"plot entry {label!r}")
    return checked


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path
