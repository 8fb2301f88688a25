"""What the calibrate stage leaves behind: the accuracy guard's verdict, the report (JSON, markdown, plots), the
output model folder (calibrated, or the input kept) and the calibration settings saved with it."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.calibration.elicit import CALIBRATION_FILE, CONFIG_KEY
from posttrain.calibration.plots import plot_reliability_diagram, plot_risk_coverage
from posttrain.calibration.report import CalibrationReport, comparison_table
from posttrain.manifest import file_sha256, write_json
from posttrain.models.folders import NOT_MODEL_FILES

ADAPTER_DIR = "confidence_adapter"  # tuning's LoRA when the answering weights stay the input's (tuning.output: adapter)


@dataclass(frozen=True)
class GuardVerdict:
    """Accuracy must not fall by more than ``max_accuracy_drop`` (a negative value demands a gain)."""

    passed: bool
    accuracy_before: float
    accuracy_after: float
    drop: float
    max_accuracy_drop: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"accuracy guard {verdict}: {self.accuracy_before:.4f} -> {self.accuracy_after:.4f} "
                f"(drop {self.drop:+.4f}, allowed at most {self.max_accuracy_drop:+.4f})")


def accuracy_guard(before: CalibrationReport, after: CalibrationReport, max_accuracy_drop: float) -> GuardVerdict:
    drop = before.accuracy - after.accuracy
    return GuardVerdict(passed=drop <= max_accuracy_drop + 1e-12, accuracy_before=before.accuracy,
                        accuracy_after=after.accuracy, drop=drop, max_accuracy_drop=max_accuracy_drop)


# ----------------------------------------------------------------------------------------------------------- report
def write_report(folder: Path, before: CalibrationReport, after: CalibrationReport,
                 before_pairs: tuple[np.ndarray, np.ndarray], after_pairs: tuple[np.ndarray, np.ndarray],
                 guard: GuardVerdict, details: dict[str, Any], title: str) -> dict[str, str]:
    """``report.json``, ``report.md``, ``reliability.png``, ``risk_coverage.png`` in ``folder`` -> name: sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = {"before": before_pairs, "after": after_pairs}
    plot_reliability_diagram(folder / "reliability.png", pairs, n_bins=before.n_bins, title=title)
    plot_risk_coverage(folder / "risk_coverage.png", pairs, title=f"Risk-coverage: {title}")
    data = {"before": before.to_dict(), "after": after.to_dict(), "guard": guard.to_dict(), **details}
    write_json(folder / "report.json", data)
    lines = [f"# Calibration report: {title}", "",
             "Held-out split (never used for training or fitting), before and after calibration:", "",
             comparison_table(before, after), guard.describe(), ""]
    for key, value in details.items():
        if isinstance(value, dict):
            lines.append(f"- **{key}**: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in value.items()
                                                        if not isinstance(v, dict | list)))
        elif not isinstance(value, list):
            lines.append(f"- **{key}**: {_fmt(value)}")
    lines += ["", "![reliability diagram](reliability.png)", "", "![risk-coverage](risk_coverage.png)", ""]
    (folder / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return {name: file_sha256(folder / name) for name in
            ("report.json", "report.md", "reliability.png", "risk_coverage.png")}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------------------ model
def clear_model_files(out: Path) -> None:
    """Remove the model a previous run left in ``out``: its top-level files and its confidence adapter (folders such
    as ``report/`` are rewritten)."""
    if out.is_dir():
        for p in out.iterdir():
            if p.is_file() or p.is_symlink():
                p.unlink()
        shutil.rmtree(out / ADAPTER_DIR, ignore_errors=True)


def save_calibration_settings(model_dir: Path, settings: dict[str, Any]) -> None:
    """``calibration.json`` next to the model, and the same under ``posttrain_calibration`` in its ``config.json``
    (transformers keeps unknown config keys when it loads and saves a model, so the settings travel with it)."""
    write_json(model_dir / CALIBRATION_FILE, settings)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config[CONFIG_KEY] = settings
    tmp = config_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(config_path)


def model_hashes(model_dir: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(model_dir.iterdir())
            if p.is_file() and p.name not in NOT_MODEL_FILES}
