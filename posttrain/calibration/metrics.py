"""Calibration metrics of a confidence against correctness labels: ECE, MCE, Brier, NLL, AUROC and risk-coverage.

Inputs are one confidence in [0, 1] and one correctness label (0 or 1) per answered item. Everything is computed with
numpy in float64. The binning follows torchmetrics' ``BinaryCalibrationError`` exactly (see ``reliability_bins``), so
ECE/MCE numbers are comparable with anything reported through torchmetrics.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from posttrain.errors import UserError

N_BINS = 15
# Probabilities are clipped to [PROB_CLIP, 1 - PROB_CLIP] before a log or a logit, so a confidence of exactly 0 or 1
# costs a large but finite NLL (13.8 nats) and has a finite logit (+-13.8). temperature.py uses the same constant.
PROB_CLIP = 1e-6


def check_inputs(confidences, correct, where: str = "input") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to float64 arrays; raise ``UserError`` naming ``where`` and the first bad row."""
    conf = as_vector(confidences, f"{where}: confidences")
    labels = as_vector(correct, f"{where}: correctness labels")
    if len(conf) != len(labels):
        raise UserError(f"{where}: got {len(conf)} confidences but {len(labels)} correctness labels; expected one each")
    if len(conf) == 0:
        raise UserError(f"{where}: no items; expected at least one confidence with its correctness label")
    bad = np.flatnonzero(~np.isfinite(conf) | (conf < 0) | (conf > 1))
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{where}: confidence at row {i} is {float(conf[i])!r}; expected a number in [0, 1] ({bad.size} bad rows)"
        )
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{where}: correctness label at row {i} is {float(labels[i])!r}; expected 0 or 1 ({bad.size} bad rows)"
        )
    return conf, labels


def as_vector(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise UserError(f"{what}: expected a list of numbers ({e})") from None
    if arr.ndim != 1:
        raise UserError(f"{what}: expected a flat list of numbers, got an array of shape {arr.shape}")
    return arr


def accuracy(confidences, correct) -> float:
    """Fraction of items that are correct (the confidences are only validated)."""
    _, y = check_inputs(confidences, correct)
    return float(y.mean())


def brier_score(confidences, correct) -> float:
    """Mean squared difference between confidence and correctness: mean((c - y)^2)."""
    c, y = check_inputs(confidences, correct)
    return float(np.mean((c - y) ** 2))


def nll(confidences, correct, clip: float = PROB_CLIP) -> float:
    """Binary log loss of the confidence as a probability of being correct (natural log, probabilities clipped)."""
    c, y = check_inputs(confidences, correct)
    c = np.clip(c, clip, 1 - clip)
    return float(-np.mean(y * np.log(c) + (1 - y) * np.log1p(-c)))


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics. Arrays have ``n_bins + 1`` entries: the last bin holds confidences of exactly 1.0."""

    lower: np.ndarray  # inclusive lower edge
    upper: np.ndarray  # exclusive upper edge (the last bin is the single point 1.0)
    count: np.ndarray
    mean_confidence: np.ndarray  # NaN for an empty bin
    accuracy: np.ndarray  # NaN for an empty bin

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @property
    def gap(self) -> np.ndarray:
        """|accuracy - mean confidence| per bin (NaN for an empty bin)."""
        return np.abs(self.accuracy - self.mean_confidence)


def bin_edges(n_bins: int = N_BINS) -> np.ndarray:
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise UserError(f"n_bins is {n_bins!r}; expected a whole number >= 1")
    # torch.linspace and numpy differ in the last bit for some edges (11/15 in float64); taking torch's numbers keeps
    # a confidence that sits exactly on an edge in the same bin as torchmetrics puts it.
    return torch.linspace(0, 1, n_bins + 1, dtype=torch.float64).numpy()


def reliability_bins(confidences, correct, n_bins: int = N_BINS) -> ReliabilityBins:
    """Equal-width bins [k/n, (k+1)/n), closed on the left, as torchmetrics bins them.

    torchmetrics finds the bin with ``torch.bucketize(c, edges, right=True) - 1``; a confidence of exactly 1.0 then
    falls past the last edge into a bin of its own. We keep that bin (the last entry) so ECE and MCE agree.
    """
    c, y = check_inputs(confidences, correct)
    edges = bin_edges(n_bins)
    index = np.searchsorted(edges, c, side="right") - 1
    count = np.bincount(index, minlength=n_bins + 1).astype(np.float64)
    conf_sum = np.bincount(index, weights=c, minlength=n_bins + 1)
    acc_sum = np.bincount(index, weights=y, minlength=n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        acc = np.where(count > 0, acc_sum / count, np.nan)
    return ReliabilityBins(
        lower=edges.copy(),
        upper=np.append(edges[1:], 1.0),
        count=count.astype(np.int64),
        mean_confidence=mean_conf,
        accuracy=acc,
    )


def expected_calibration_error(confidences, correct, n_bins: int = N_BINS) -> float:
    """ECE = sum over bins of (bin size / n) * |accuracy(bin) - mean confidence(bin)|."""
    bins = reliability_bins(confidences, correct, n_bins)
    filled = bins.count > 0
    return float(np.sum(bins.count[filled] / bins.n * bins.gap[filled]))


def maximum_calibration_error(confidences, correct, n_bins: int = N_BINS) -> float:
    """MCE = the largest |accuracy(bin) - mean confidence(bin)| over non-empty bins."""
    bins = reliability_bins(confidences, correct, n_bins)
    return float(np.max(bins.gap[bins.count > 0]))


def auroc(confidences, correct) -> tuple[float | None, str]:
    """Area under the ROC curve of confidence as a score for "is correct", from average ranks (Mann-Whitney U).

    Ties count one half, as the trapezoid ROC does. Returns ``(None, reason)`` when only one class is present, since
    the AUROC is then undefined; otherwise ``(value, "")``.
    """
    c, y = check_inputs(confidences, correct)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        which = "correct" if n_neg == 0 else "wrong"
        return None, f"undefined: all {len(y)} items are {which}, AUROC needs both correct and wrong items"
    ranks = average_ranks(c)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg)), ""


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each group of equal values
    return (last - (counts - 1) / 2)[inverse]


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Selective risk when answering the k most confident items, for k = 1..n (ties split evenly, see ``aurc``)."""

    coverage: np.ndarray  # k / n
    risk: np.ndarray  # expected error rate among the k answered items
    optimal_risk: np.ndarray  # the same for a confidence that ranks every correct item above every wrong one

    @property
    def aurc(self) -> float:
        """Area under the risk-coverage curve: the mean of ``risk`` over k = 1..n."""
        return float(self.risk.mean())

    @property
    def optimal_aurc(self) -> float:
        return float(self.optimal_risk.mean())

    @property
    def excess_aurc(self) -> float:
        return self.aurc - self.optimal_aurc


def risk_coverage_curve(confidences, correct) -> RiskCoverageCurve:
    """Risk-coverage curve and its area, AURC = (1/n) * sum_k errors(top k) / k.

    Items with equal confidence cannot be separated by any threshold, so within a group of ties each item carries the
    group's mean error: the curve is the expectation over every order of the ties and does not depend on input order.
    """
    c, y = check_inputs(confidences, correct)
    order = np.argsort(-c, kind="stable")
    c, err = c[order], 1.0 - y[order]
    _, start, counts = np.unique(-c, return_index=True, return_counts=True)
    group_err = np.add.reduceat(err, start) / counts
    spread_err = np.repeat(group_err, counts)
    k = np.arange(1, len(c) + 1)
    risk = np.cumsum(spread_err) / k
    n_wrong = int(err.sum())
    optimal = np.maximum(k - (len(c) - n_wrong), 0) / k  # all correct items answered first
    return RiskCoverageCurve(coverage=k / len(c), risk=risk, optimal_risk=optimal)


@dataclass(frozen=True)
class SelectivePoint:
    """Answering only the items whose confidence is >= threshold."""

    threshold: float
    coverage: float  # fraction answered
    n_answered: int
    accuracy: float | None  # None when nothing is answered

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "coverage": self.coverage, "n_answered": self.n_answered,
                "accuracy": self.accuracy}


def selective_accuracy(confidences, correct, thresholds: Sequence[float]) -> list[SelectivePoint]:
    """Coverage and accuracy when answering only items with confidence >= each threshold."""
    c, y = check_inputs(confidences, correct)
    points = []
    for t in thresholds:
        if not is_number(t) or not 0 <= t <= 1:
            raise UserError(f"confidence threshold {t!r} is not a number in [0, 1]")
        answered = c >= t
        n = int(answered.sum())
        points.append(SelectivePoint(float(t), n / len(c), n, float(y[answered].mean()) if n else None))
    return points


def accuracy_at_coverage(confidences, correct, coverages: Sequence[float]) -> list[SelectivePoint]:
    """For each target coverage q, the threshold that answers the ceil(q * n) most confident items, and its accuracy.

    With ties at the threshold the real coverage can exceed q (every tied item is answered); it is reported as is.
    """
    c, y = check_inputs(confidences, correct)
    ranked = np.sort(c)[::-1]
    thresholds = []
    for q in coverages:
        if not is_number(q) or not 0 < q <= 1:
            raise UserError(f"coverage level {q!r} is not a number in (0, 1]")
        # the small slack stops float noise (0.3 * 10 = 3.0000000000000004) from answering one item too many
        k = max(math.ceil(q * len(c) - 1e-9), 1)
        thresholds.append(float(ranked[k - 1]))
    return selective_accuracy(c, y, thresholds)


def is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and not math.isnan(x)
