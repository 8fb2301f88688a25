"""Calibration of a model's confidence: metrics, reliability and risk-coverage plots, temperature scaling,
calibration tuning, RLCR, and the report.

The names below are exported lazily: importing a config schema from here (``calibration.elicit``,
``calibration.tuning``) must not import torch or matplotlib."""

from typing import Any

_EXPORTS = {
    "CalibrationReport": "report", "N_BINS": "metrics", "PROB_CLIP": "metrics", "ReliabilityBins": "metrics",
    "RiskCoverageCurve": "metrics", "SelectivePoint": "metrics", "TemperatureFit": "temperature",
    "TemperatureScaling": "temperature", "accuracy": "metrics", "accuracy_at_coverage": "metrics",
    "apply_temperature": "temperature", "auroc": "metrics", "brier_score": "metrics", "calibration_report": "report",
    "check_inputs": "metrics", "comparison_table": "report", "expected_calibration_error": "metrics",
    "fit_temperature": "temperature", "maximum_calibration_error": "metrics", "nll": "metrics",
    "plot_reliability_diagram": "plots", "plot_risk_coverage": "plots", "reliability_bins": "metrics",
    "risk_coverage_curve": "metrics", "selective_accuracy": "metrics", "temperature_scaling": "temperature",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'posttrain.calibration' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"posttrain.calibration.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
