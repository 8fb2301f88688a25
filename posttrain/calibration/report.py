"""One record of every calibration metric for a set of answers, and a markdown table comparing two of them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from posttrain.calibration.metrics import (
    N_BINS,
    auroc,
    brier_score,
    check_inputs,
    expected_calibration_error,
    maximum_calibration_error,
    nll,
    risk_coverage_curve,
)


@dataclass(frozen=True)
class CalibrationReport:
    n: int
    n_correct: int
    accuracy: float
    ece: float
    mce: float
    brier: float
    nll: float
    auroc: float | None  # None when only one class is present; auroc_note says why
    auroc_note: str
    aurc: float
    n_bins: int

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self, label: str = "value") -> str:
        return _table({label: self})


def calibration_report(confidences, correct, *, n_bins: int = N_BINS, where: str = "input") -> CalibrationReport:
    """Compute every metric of ``metrics`` for one set of (confidence, correct) pairs."""
    c, y = check_inputs(confidences, correct, where)
    auc, note = auroc(c, y)
    return CalibrationReport(
        n=len(y),
        n_correct=int(y.sum()),
        accuracy=float(y.mean()),
        ece=expected_calibration_error(c, y, n_bins),
        mce=maximum_calibration_error(c, y, n_bins),
        brier=brier_score(c, y),
        nll=nll(c, y),
        auroc=auc,
        auroc_note=note,
        aurc=risk_coverage_curve(c, y).aurc,
        n_bins=n_bins,
    )


def comparison_table(before: CalibrationReport, after: CalibrationReport,
                     labels: tuple[str, str] = ("before", "after")) -> str:
    """Markdown table with one column per report and a delta column (after - before)."""
    return _table({labels[0]: before, labels[1]: after}, with_delta=True)


# (field, row label, which direction is better) -- the arrow tells a reader how to read a delta
_ROWS = (
    ("accuracy", "accuracy", "↑"),
    ("ece", "ECE", "↓"),
    ("mce", "MCE", "↓"),
    ("brier", "Brier", "↓"),
    ("nll", "NLL", "↓"),
    ("auroc", "AUROC", "↑"),
    ("aurc", "AURC", "↓"),
)


def _table(reports: dict[str, CalibrationReport], with_delta: bool = False) -> str:
    names = list(reports)
    first, last = reports[names[0]], reports[names[-1]]
    header = ["metric", *names] + (["delta"] if with_delta else [])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for field, label, better in _ROWS:
        if field in ("ece", "mce"):
            label = f"{label} ({first.n_bins} bins)"
        values = [getattr(r, field) for r in reports.values()]
        cells = [f"{label} {better}", *(_fmt(v) for v in values)]
        if with_delta:
            a, b = getattr(first, field), getattr(last, field)
            cells.append("n/a" if a is None or b is None else f"{b - a:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    counts = [f"{r.n_correct}/{r.n}" for r in reports.values()]
    lines.append("| correct/items | " + " | ".join(counts) + (" | |" if with_delta else " |"))
    notes = [f"- {name}: AUROC {r.auroc_note}" for name, r in reports.items() if r.auroc is None]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"
