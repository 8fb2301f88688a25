"""Calibration of a model's confidence: metrics, reliability and risk-coverage plots, temperature scaling."""

from posttrain.calibration.metrics import (
    N_BINS,
    PROB_CLIP,
    ReliabilityBins,
    RiskCoverageCurve,
    SelectivePoint,
    accuracy,
    accuracy_at_coverage,
    auroc,
    brier_score,
    check_inputs,
    expected_calibration_error,
    maximum_calibration_error,
    nll,
    reliability_bins,
    risk_coverage_curve,
    selective_accuracy,
)
from posttrain.calibration.plots import plot_reliability_diagram, plot_risk_coverage
from posttrain.calibration.report import CalibrationReport, calibration_report, comparison_table
from posttrain.calibration.temperature import (
    TemperatureFit,
    TemperatureScaling,
    apply_temperature,
    fit_temperature,
    temperature_scaling,
)

__all__ = [
    "N_BINS", "PROB_CLIP", "CalibrationReport", "ReliabilityBins", "RiskCoverageCurve", "SelectivePoint",
    "TemperatureFit", "TemperatureScaling", "accuracy", "accuracy_at_coverage", "apply_temperature", "auroc",
    "brier_score", "calibration_report", "check_inputs", "comparison_table", "expected_calibration_error",
    "fit_temperature", "maximum_calibration_error", "nll", "plot_reliability_diagram", "plot_risk_coverage",
    "reliability_bins", "risk_coverage_curve", "selective_accuracy", "temperature_scaling",
]
