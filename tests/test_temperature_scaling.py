"""Temperature scaling: recovers a known temperature, lowers ECE/NLL on held-out data, matches torch LBFGS, is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posttrain.calibration import (
    apply_temperature,
    auroc,
    expected_calibration_error,
    fit_temperature,
    nll,
    temperature_scaling,
)
from posttrain.calibration.temperature import binary_nll, to_logits
from posttrain.errors import UserError


def synthetic(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose calibrated version is z / temperature: labels are drawn from sigmoid(z / temperature)."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.5, 2.0, n)
    correct = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    return true_logit * temperature, correct


def lbfgs_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """An independent fit with torch LBFGS on log T, to cross-check the bisection."""
    z_t, y_t = torch.tensor(z, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z_t / log_t.exp(), y_t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


@pytest.mark.parametrize("true_t", [2.5, 0.5])
def test_recovers_a_known_temperature_from_logits(true_t):
    z, y = synthetic(20_000, true_t, seed=1)
    fit = fit_temperature(z, y, from_logits=True)
    assert fit.temperature == pytest.approx(true_t, rel=0.05)
    assert not fit.at_bound and fit.n == 20_000 and fit.from_logits
    assert fit.nll_after < fit.nll_before
    assert fit.temperature == pytest.approx(lbfgs_temperature(z, y), rel=1e-6)


def test_fitted_temperature_is_the_nll_minimum():
    z, y = synthetic(3_000, 1.7, seed=2)
    t = fit_temperature(z, y, from_logits=True).temperature
    best = binary_nll(z / t, y)
    for factor in (0.999, 1.001, 0.9, 1.1):
        assert binary_nll(z / (t * factor), y) > best


def test_overconfident_probabilities_get_better_on_a_held_out_split():
    z, y = synthetic(8_000, 3.0, seed=3)
    conf = 1 / (1 + np.exp(-z))  # only probabilities are available: the fit works on logit(confidence)
    result = temperature_scaling(conf[:4000], y[:4000], conf[4000:], y[4000:])
    assert result.evaluated_on == "eval split"
    assert result.fit.temperature == pytest.approx(3.0, rel=0.1) and not result.fit.from_logits
    before, after = result.before, result.after
    assert after.ece < before.ece / 2 and after.nll < before.nll and after.brier < before.brier
    assert after.auroc == pytest.approx(before.auroc) and after.aurc == pytest.approx(before.aurc)  # ranking kept
    assert after.accuracy == before.accuracy and after.n == 4000
    # "before" on the eval split is the raw confidences themselves
    assert before.ece == pytest.approx(expected_calibration_error(conf[4000:], y[4000:]))
    assert after.nll == pytest.approx(nll(result.fit.apply(conf[4000:]), y[4000:]))
    d = result.to_dict()
    assert json.loads(json.dumps(d)) == d and d["fit"]["temperature"] == result.fit.temperature


def test_underconfident_scores_are_sharpened_and_fit_split_is_used_without_eval():
    z, y = synthetic(4_000, 0.4, seed=4)
    result = temperature_scaling(z, y, from_logits=True)
    assert result.evaluated_on == "fit split"
    assert result.fit.temperature < 1 and result.after.ece < result.before.ece


def test_fit_is_deterministic_and_ignores_order():
    z, y = synthetic(2_000, 2.0, seed=5)
    a = fit_temperature(z, y, from_logits=True)
    assert fit_temperature(z, y, from_logits=True) == a
    perm = np.random.default_rng(0).permutation(2_000)
    assert fit_temperature(z[perm], y[perm], from_logits=True).temperature == pytest.approx(a.temperature, rel=1e-9)


def test_apply_temperature():
    z = np.array([-2.0, 0.0, 3.0])
    assert apply_temperature(z, 2.0, from_logits=True) == pytest.approx(1 / (1 + np.exp(-z / 2)))
    p = np.array([0.1, 0.5, 0.99])
    assert apply_temperature(p, 1.0) == pytest.approx(p)  # T = 1 changes nothing
    assert apply_temperature([0.0, 1.0], 1.0) == pytest.approx([1e-6, 1 - 1e-6])  # but 0 and 1 are clipped
    assert to_logits([1.0], from_logits=False)[0] == pytest.approx(np.log((1 - 1e-6) / 1e-6))
    assert apply_temperature([1e6, -1e6], 0.5, from_logits=True) == pytest.approx([1.0, 0.0])  # no overflow
    for bad in (0, -1.0, float("nan"), float("inf"), "2"):
        with pytest.raises(UserError, match="temperature"):
            apply_temperature(p, bad)


def test_temperature_is_clamped_to_its_bounds():
    rng = np.random.default_rng(6)
    z = rng.normal(0, 2, 500)
    y = (z < 0).astype(int)  # confidence points the wrong way: the best T would be negative
    fit = fit_temperature(z, y, from_logits=True)
    assert fit.at_bound and fit.temperature == pytest.approx(100.0)
    y = (z > 0).astype(int)  # perfectly separable: the best T tends to 0
    fit = fit_temperature(z, y, from_logits=True, bounds=(0.05, 20))
    assert fit.at_bound and fit.temperature == pytest.approx(0.05)
    fit = fit_temperature(np.zeros(10), [0, 1] * 5, from_logits=True)
    assert fit.temperature == 1.0 and not fit.at_bound  # T does not matter when every logit is 0


def test_auroc_of_scaled_confidences_is_unchanged():
    z, y = synthetic(1_000, 2.0, seed=7)
    fit = fit_temperature(z, y, from_logits=True)
    assert auroc(fit.apply(z), y)[0] == pytest.approx(auroc(1 / (1 + np.exp(-z)), y)[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fit_temperature([0.9, 0.8], [1, 1]), "fit split: all 2 items are correct"),
        (lambda: fit_temperature([0.9, 0.8], [0, 0]), "all 2 items are wrong"),
        (lambda: fit_temperature([0.9, 1.3], [1, 0]), "fit split: confidence at row 1 is 1.3"),
        (lambda: fit_temperature([0.5, float("nan")], [1, 0], from_logits=True), "logit at row 1 is nan"),
        (lambda: fit_temperature([0.9, 0.2], [1, 0, 1]), "got 2 confidences but 3 correctness labels"),
        (lambda: fit_temperature([0.9, 0.2], [1, 0], bounds=(2, 1)), "temperature bounds"),
        (lambda: temperature_scaling([0.9, 0.2], [1, 0], [0.5], None), "give both scores and correctness labels"),
        (lambda: temperature_scaling([0.9, 0.2], [1, 0], [0.5, 0.7], [1, 3]), "eval split: correctness label at row 1"),
    ],
)
def test_bad_inputs_raise_user_error(call, message):
    with pytest.raises(UserError, match=message):
        call()
