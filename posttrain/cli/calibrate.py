"""`posttrain calibrate`: tune or rescale the model's confidence so that it matches its accuracy (see
docs/calibration.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, run_stage, say


@app.command("calibrate")
def calibrate(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Calibrate the model's confidence (method: tuning | rlcr | temperature) and report ECE before/after on held-out
    tasks. Exits 1 when the accuracy guard fails (the output folder then holds the input model)."""
    # Imported here so that other commands do not pay for torch and transformers at start-up.
    from posttrain.stages.calibrate import CalibrateConfig, run_calibrate

    source = str(config) if config is not None else "config"
    result: dict = {}

    def run(cfg: CalibrateConfig) -> None:
        result.update(run_calibrate(cfg, log=say, source=source))

    run_stage(CalibrateConfig, config, overrides, dry_run, run)
    if result.get("status") == "guard_failed":
        raise typer.Exit(1)
