"""Temperature scaling of a confidence: fit one T > 0 on a held-out split so that sigmoid(z / T) minimises NLL.

``z`` is the logit of "this answer is correct": a model's own logit when there is one, or logit(confidence) when only
probabilities are available (clipped to [PROB_CLIP, 1 - PROB_CLIP] first, so 0 and 1 map to +-13.8). T > 1 softens an
overconfident score, T < 1 sharpens an underconfident one, and the ranking of items never changes, so AUROC and AURC
stay the same while ECE, Brier and NLL move.

The fit is exact and deterministic: with beta = 1 / T the NLL is convex in beta, so its derivative
mean((sigmoid(beta * z) - y) * z) rises monotonically, and bisection on log(beta) finds its zero to machine precision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from posttrain.calibration.metrics import N_BINS, PROB_CLIP, as_vector, check_inputs, is_number
from posttrain.calibration.report import CalibrationReport, calibration_report
from posttrain.errors import UserError

T_BOUNDS = (0.01, 100.0)


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float  # on the fit split at T = 1
    nll_after: float  # on the fit split at the fitted T
    n: int
    from_logits: bool
    at_bound: bool  # the optimum lies outside T_BOUNDS and T was clamped to a bound

    def apply(self, scores) -> np.ndarray:
        """Calibrated confidences for new scores of the same kind (logits or probabilities) as the fit."""
        return apply_temperature(scores, self.temperature, from_logits=self.from_logits)

    def to_dict(self) -> dict:
        return asdict(self)


def to_logits(scores, *, from_logits: bool, where: str = "scores") -> np.ndarray:
    """Logits of "correct": the scores themselves (validated finite) or logit(clipped probability)."""
    if from_logits:
        z = as_vector(scores, f"{where}: logits")
        bad = np.flatnonzero(~np.isfinite(z))
        if bad.size:
            raise UserError(f"{where}: logit at row {int(bad[0])} is {float(z[bad[0]])!r}; expected a finite number")
        return z
    p = as_vector(scores, f"{where}: confidences")
    check_inputs(p, np.ones_like(p), where)  # reuse the range/NaN checks; the labels here are dummies
    p = np.clip(p, PROB_CLIP, 1 - PROB_CLIP)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|, unlike 1 / (1 + exp(-z))


def binary_nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(y) for p = sigmoid(z), computed as softplus to stay finite for large |z|."""
    return float(np.mean(np.logaddexp(0.0, np.where(y == 1, -z, z))))


def apply_temperature(scores, temperature: float, *, from_logits: bool = False) -> np.ndarray:
    """sigmoid(z / T) for each score."""
    if not is_number(temperature) or not temperature > 0 or math.isinf(temperature):
        raise UserError(f"temperature is {temperature!r}; expected a finite number > 0")
    return sigmoid(to_logits(scores, from_logits=from_logits) / temperature)


def fit_temperature(scores, correct, *, from_logits: bool = False, bounds: tuple[float, float] = T_BOUNDS,
                    where: str = "fit split") -> TemperatureFit:
    """Fit T in ``bounds`` that minimises the NLL of sigmoid(z / T) against the correctness labels."""
    z = to_logits(scores, from_logits=from_logits, where=where)
    _, y = check_inputs(np.full(len(z), 0.5), correct, where)  # checks the labels and the lengths
    n_correct = int(y.sum())
    if n_correct in (0, len(y)):
        raise UserError(
            f"{where}: all {len(y)} items are {'correct' if n_correct else 'wrong'}; fitting a temperature needs both "
            "correct and wrong items in the held-out split"
        )
    t_low, t_high = bounds
    if not (is_number(t_low) and is_number(t_high) and 0 < t_low < t_high < math.inf):
        raise UserError(f"temperature bounds {bounds!r}; expected 0 < low < high")

    def slope(log_beta: float) -> float:  # d NLL / d beta, whose sign is that of d NLL / d log(beta)
        return float(np.mean((sigmoid(math.exp(log_beta) * z) - y) * z))

    lo, hi = math.log(1 / t_high), math.log(1 / t_low)
    at_bound = False
    if not np.any(z):
        log_beta = 0.0  # every logit is 0: the NLL is log 2 whatever T is, so keep T = 1
    elif slope(lo) >= 0:
        log_beta, at_bound = lo, True
    elif slope(hi) <= 0:
        log_beta, at_bound = hi, True
    else:
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):  # the interval cannot shrink any more in float64
                break
            if slope(mid) < 0:
                lo = mid
            else:
                hi = mid
        log_beta = 0.5 * (lo + hi)
    temperature = math.exp(-log_beta)
    return TemperatureFit(
        temperature=temperature,
        nll_before=binary_nll(z, y),
        nll_after=binary_nll(z / temperature, y),
        n=len(y),
        from_logits=from_logits,
        at_bound=at_bound,
    )


@dataclass(frozen=True)
class TemperatureScaling:
    fit: TemperatureFit
    evaluated_on: str  # "eval split" or "fit split" (when no separate evaluation split was given)
    before: CalibrationReport
    after: CalibrationReport

    def to_dict(self) -> dict:
        return {"fit": self.fit.to_dict(), "evaluated_on": self.evaluated_on,
                "before": self.before.to_dict(), "after": self.after.to_dict()}


def temperature_scaling(fit_scores, fit_correct, eval_scores=None, eval_correct=None, *, from_logits: bool = False,
                        n_bins: int = N_BINS) -> TemperatureScaling:
    """Fit T on the held-out fit split and report the metrics before and after on the eval split (or the fit split)."""
    fit = fit_temperature(fit_scores, fit_correct, from_logits=from_logits)
    if (eval_scores is None) != (eval_correct is None):
        raise UserError("eval split: give both scores and correctness labels, or neither")
    where = "eval split" if eval_scores is not None else "fit split"
    scores, correct = (eval_scores, eval_correct) if eval_scores is not None else (fit_scores, fit_correct)
    # "before" is the score read as a probability as it is: sigmoid of the raw logit, or the raw confidence
    raw = sigmoid(to_logits(scores, from_logits=True, where=where)) if from_logits else scores
    before = calibration_report(raw, correct, n_bins=n_bins, where=where)
    after = calibration_report(fit.apply(scores), correct, n_bins=n_bins, where=where)
    return TemperatureScaling(fit=fit, evaluated_on=where, before=before, after=after)

