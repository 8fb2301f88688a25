"""Calibration metrics against torchmetrics and hand-computed cases; reliability and risk-coverage plots as PNGs."""

from __future__ import annotations

import itertools
import json
import math
import struct

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torchmetrics.classification import BinaryAUROC, BinaryCalibrationError
from torchmetrics.regression import MeanSquaredError

from posttrain.calibration import (
    accuracy_at_coverage,
    auroc,
    brier_score,
    calibration_report,
    check_inputs,
    comparison_table,
    expected_calibration_error,
    maximum_calibration_error,
    nll,
    plot_reliability_diagram,
    plot_risk_coverage,
    reliability_bins,
    risk_coverage_curve,
    selective_accuracy,
)
from posttrain.errors import UserError

EDGES = [k / 15 for k in range(16)]  # 0, 1/15, ..., 11/15 (where torch's linspace is one ulp above), ..., 1.0


def torchmetrics_values(conf, correct) -> dict:
    c = torch.tensor(np.asarray(conf, dtype=np.float64))
    y = torch.tensor(np.asarray(correct, dtype=np.int64))
    return {
        "ece": float(BinaryCalibrationError(n_bins=15, norm="l1")(c, y)),
        "mce": float(BinaryCalibrationError(n_bins=15, norm="max")(c, y)),
        "brier": float(MeanSquaredError().set_dtype(torch.float64)(c, y.double())),
        "auroc": float(BinaryAUROC()(c, y)),
    }


def random_cases():
    rng = np.random.default_rng(1234)
    for n in (1, 2, 7, 100, 2000):
        c = rng.random(n)
        yield pytest.param(c, (rng.random(n) < c).astype(int), id=f"uniform-{n}")
    c = rng.beta(5, 1, 500)  # overconfident: most mass near 1, accuracy 0.6
    yield pytest.param(c, (rng.random(500) < 0.6).astype(int), id="overconfident")
    c = np.round(rng.random(300), 1)  # verbalised confidences: heavy ties on 0.0, 0.1, ..., 1.0
    yield pytest.param(c, (rng.random(300) < c).astype(int), id="ties")
    c = rng.choice(EDGES, 400)  # every value sits exactly on a bin edge, including 0 and 1.0
    yield pytest.param(c, rng.integers(0, 2, 400), id="edges")
    yield pytest.param(rng.random(50), np.ones(50, dtype=int), id="all-correct")
    yield pytest.param(rng.random(50), np.zeros(50, dtype=int), id="all-wrong")
    yield pytest.param(np.ones(20), rng.integers(0, 2, 20), id="all-one")
    yield pytest.param(np.zeros(20), rng.integers(0, 2, 20), id="all-zero")
    yield pytest.param(np.full(30, 0.5), rng.integers(0, 2, 30), id="one-tie")


@pytest.mark.filterwarnings("ignore:No (positive|negative) samples in targets")  # torchmetrics on one class
@pytest.mark.parametrize(("conf", "correct"), list(random_cases()))
def test_metrics_agree_with_torchmetrics(conf, correct):
    ref = torchmetrics_values(conf, correct)
    assert expected_calibration_error(conf, correct) == pytest.approx(ref["ece"], abs=1e-12)
    assert maximum_calibration_error(conf, correct) == pytest.approx(ref["mce"], abs=1e-12)
    assert brier_score(conf, correct) == pytest.approx(ref["brier"], abs=1e-12)
    value, note = auroc(conf, correct)
    if len(set(correct)) == 2:
        assert value == pytest.approx(ref["auroc"], abs=1e-6) and note == ""  # torchmetrics' AUROC is float32
    else:
        assert value is None and "undefined" in note  # torchmetrics warns and returns 0 here


def test_each_bin_edge_goes_where_torchmetrics_puts_it():
    # One item per edge value, its own correctness chosen so a wrong bin assignment changes ECE and MCE.
    for flip in range(16):
        correct = [(k + flip) % 2 for k in range(16)]
        ref = torchmetrics_values(EDGES, correct)
        assert expected_calibration_error(EDGES, correct) == pytest.approx(ref["ece"], abs=1e-12)
        assert maximum_calibration_error(EDGES, correct) == pytest.approx(ref["mce"], abs=1e-12)
    bins = reliability_bins(EDGES, [1] * 16)
    # 0 in bin 0, k/15 in bin k, and 1.0 in a bin of its own; except 11/15, which torch's edge (one ulp above the
    # double nearest 11/15) leaves in bin 10, in torchmetrics and here alike
    assert bins.count.tolist() == [1] * 10 + [2, 0] + [1] * 4
    assert bins.count[15] == 1 and bins.lower[15] == bins.upper[15] == 1.0


def test_hand_computed_small_case():
    conf, correct = [0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1]
    # bin [1/15, 2/15): accuracy 0.5 at confidence 0.1; bin [13/15, 14/15): accuracy 1 at 0.9
    assert expected_calibration_error(conf, correct) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert maximum_calibration_error(conf, correct) == pytest.approx(0.4)
    assert brier_score(conf, correct) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert nll(conf, correct) == pytest.approx(-(3 * math.log(0.9) + math.log(0.1)) / 4)
    assert auroc(conf, correct) == (pytest.approx(2.5 / 3), "")  # the 0.1-vs-0.1 tie counts one half
    curve = risk_coverage_curve(conf, correct)
    # the two 0.1 items are tied, so each carries half an error: risks 0, 0, 0.5/3, 1/4
    assert curve.risk == pytest.approx([0, 0, 0.5 / 3, 0.25])
    assert curve.aurc == pytest.approx(5 / 48)
    assert curve.optimal_aurc == pytest.approx(1 / 16)
    assert curve.coverage == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_confidence_one_has_its_own_bin_as_in_torchmetrics():
    # 0.95 right and 1.0 wrong: in one shared bin the gaps would partly cancel (ECE 0.475); apart they do not.
    assert expected_calibration_error([0.95, 1.0], [1, 0]) == pytest.approx(0.5 * 0.05 + 0.5 * 1.0)
    assert torchmetrics_values([0.95, 1.0], [1, 0])["ece"] == pytest.approx(0.525)


def test_perfect_calibration_gives_zero_ece():
    conf, correct = [], []
    for v in (0.1, 0.3, 0.5, 0.7, 0.9):  # in each bin exactly v of the items are right
        conf += [v] * 10
        correct += [1] * round(10 * v) + [0] * round(10 * (1 - v))
    assert expected_calibration_error(conf, correct) == pytest.approx(0, abs=1e-12)
    assert maximum_calibration_error(conf, correct) == pytest.approx(0, abs=1e-12)
    rng = np.random.default_rng(0)
    c = rng.random(200_000)
    assert expected_calibration_error(c, rng.random(200_000) < c) < 0.01
    assert expected_calibration_error(c, rng.random(200_000) < c**3) > 0.15  # and a miscalibrated one is not ~0


def test_aurc_ties_average_over_every_order_of_the_ties():
    conf = [0.9, 0.9, 0.9, 0.5, 0.5, 0.2]
    correct = [1, 0, 0, 1, 0, 1]

    def naive_aurc(order):
        errs = np.cumsum([1 - correct[i] for i in order])
        return float(np.mean(errs / np.arange(1, len(order) + 1)))

    groups = [[0, 1, 2], [3, 4], [5]]
    orders = [sum(p, []) for p in itertools.product(*(list(map(list, itertools.permutations(g))) for g in groups))]
    expected = np.mean([naive_aurc(o) for o in orders])
    assert risk_coverage_curve(conf, correct).aurc == pytest.approx(expected)
    perm = [5, 3, 0, 4, 2, 1]  # input order does not matter
    assert risk_coverage_curve([conf[i] for i in perm], [correct[i] for i in perm]).aurc == pytest.approx(expected)


def test_aurc_without_ties_is_the_plain_definition():
    rng = np.random.default_rng(3)
    c, y = rng.random(200), rng.integers(0, 2, 200)
    order = np.argsort(-c)
    plain = np.mean(np.cumsum(1 - y[order]) / np.arange(1, 201))
    assert risk_coverage_curve(c, y).aurc == pytest.approx(plain)
    assert risk_coverage_curve(c, y).excess_aurc > 0
    assert risk_coverage_curve(y * 0.5 + 0.25, y).excess_aurc == pytest.approx(0)  # a perfect ranking is optimal


def test_selective_accuracy_and_coverage_levels():
    conf = [0.95, 0.9, 0.8, 0.8, 0.6, 0.3, 0.2, 0.1, 0.05, 0.0]
    correct = [1, 1, 0, 1, 1, 0, 1, 0, 0, 0]
    points = selective_accuracy(conf, correct, [0.0, 0.8, 0.85, 0.99])
    assert [(p.coverage, p.n_answered, p.accuracy) for p in points] == [
        (1.0, 10, 0.5), (0.4, 4, 0.75), (0.2, 2, 1.0), (0.0, 0, None)]
    levels = accuracy_at_coverage(conf, correct, [0.2, 0.3, 1.0])
    assert [p.threshold for p in levels] == [0.9, 0.8, 0.0]
    assert [p.coverage for p in levels] == [0.2, 0.4, 1.0]  # 30% would split the 0.8 tie: both are answered
    assert json.dumps([p.to_dict() for p in points])
    with pytest.raises(UserError, match="threshold 1.5"):
        selective_accuracy(conf, correct, [1.5])
    with pytest.raises(UserError, match="coverage level 0"):
        accuracy_at_coverage(conf, correct, [0])


def test_report_dict_and_markdown_comparison():
    before = calibration_report([0.9, 0.9, 0.9, 0.9], [1, 0, 1, 0])
    after = calibration_report([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0])
    d = before.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["ece"] == pytest.approx(0.4) and after.ece == pytest.approx(0.0)
    assert d["auroc"] == pytest.approx(0.5) and d["n"] == 4 and d["n_correct"] == 2 and d["n_bins"] == 15
    table = comparison_table(before, after)
    assert table.splitlines()[0] == "| metric | before | after | delta |"
    assert "| ECE (15 bins) ↓ | 0.4000 | 0.0000 | -0.4000 |" in table
    assert "| accuracy ↑ | 0.5000 | 0.5000 | +0.0000 |" in table
    assert "| correct/items | 2/4 | 2/4 | |" in table

    one_class = calibration_report([0.7, 0.8], [1, 1])
    assert one_class.auroc is None and "all 2 items are correct" in one_class.auroc_note
    table = comparison_table(before, one_class, labels=("raw", "tuned"))
    assert "| AUROC ↑ | 0.5000 | n/a | n/a |" in table
    assert "- tuned: AUROC undefined: all 2 items are correct" in table
    assert "| value |" in one_class.to_markdown()


@pytest.mark.parametrize(
    ("conf", "correct", "message"),
    [
        ([0.1, 0.2], [1], "got 2 confidences but 1 correctness labels"),
        ([], [], "no items"),
        ([0.1, 1.2], [1, 0], "confidence at row 1 is 1.2; expected a number in \\[0, 1\\]"),
        ([-0.1, 0.2], [1, 0], "confidence at row 0 is -0.1"),
        ([0.1, float("nan")], [1, 0], "confidence at row 1 is nan"),
        ([0.1, float("inf")], [1, 0], "confidence at row 1 is inf"),
        ([0.1, 0.2], [1, 2], "correctness label at row 1 is 2.0; expected 0 or 1"),
        ([0.1, 0.2], [0.5, 1], "correctness label at row 0 is 0.5"),
        ([0.1, 0.2], [1, float("nan")], "correctness label at row 1 is nan"),
        ([[0.1, 0.2]], [[1, 0]], "expected a flat list of numbers, got an array of shape \\(1, 2\\)"),
        (["high", "low"], [1, 0], "confidences: expected a list of numbers"),
    ],
)
def test_bad_inputs_raise_user_error(conf, correct, message):
    with pytest.raises(UserError, match=message):
        calibration_report(conf, correct, where="eval.jsonl")
    with pytest.raises(UserError, match="eval.jsonl"):
        check_inputs(conf, correct, where="eval.jsonl")


def test_accepts_tensors_and_bools_and_rejects_bad_bin_counts():
    c = torch.tensor([0.2, 0.7, 0.9], dtype=torch.float32)
    assert brier_score(c, torch.tensor([False, True, True])) == pytest.approx(
        brier_score([0.2, 0.7, 0.9], [0, 1, 1]), abs=1e-7)
    for bad in (0, 2.5, True):
        with pytest.raises(UserError, match="n_bins"):
            expected_calibration_error([0.5], [1], n_bins=bad)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_reliability_diagram_is_a_valid_png(tmp_path):
    rng = np.random.default_rng(7)
    c = np.append(rng.random(300), [1.0, 1.0])  # with items in the extra bin of exact 1.0
    y = rng.random(302) < c**2
    out = plot_reliability_diagram(tmp_path / "plots" / "rel.png", {"before": (c, y), "after": (c**2, y)}, dpi=80)
    assert out == tmp_path / "plots" / "rel.png"
    assert png_size(out) == (2 * 5 * 80, 6 * 80)  # two panels of 5 x 6 inches
    assert out.stat().st_size > 10_000
    pixels = imread(out)
    assert pixels.std() > 0.05  # something was drawn, not a blank canvas
    single = plot_reliability_diagram(tmp_path / "one.png", {"model": (c, y)}, n_bins=10, title="t", dpi=50)
    assert png_size(single) == (250, 300)


def test_risk_coverage_plot_is_a_valid_png(tmp_path):
    rng = np.random.default_rng(8)
    c = rng.random(200)
    y = rng.random(200) < c
    out = plot_risk_coverage(tmp_path / "rc.png", {"before": (c, y), "after": (np.sqrt(c), y)}, dpi=80)
    assert png_size(out) == (480, 360) and out.stat().st_size > 10_000
    assert imread(out).std() > 0.05


def test_plot_inputs_are_checked(tmp_path):
    with pytest.raises(UserError, match="ending in .png"):
        plot_risk_coverage(tmp_path / "rc.svg", {"a": ([0.5], [1])})
    with pytest.raises(UserError, match="nothing to plot"):
        plot_reliability_diagram(tmp_path / "r.png", {})
    with pytest.raises(UserError, match="plot entry 'a': expected a pair"):
        plot_reliability_diagram(tmp_path / "r.png", {"a": [0.5]})
    with pytest.raises(UserError, match="plot entry 'a': confidence at row 0 is 2.0"):
        plot_reliability_diagram(tmp_path / "r.png", {"a": ([2.0], [1])})
    assert not (tmp_path / "r.png").exists()
