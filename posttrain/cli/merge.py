"""`posttrain merge`: combine the RL-track models (full folders or LoRA adapters on one base) into one model."""

from __future__ import annotations

from pathlib import Path

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, run_stage, say


@app.command("merge")
def merge(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Merge models fine-tuned from one base with linear, task_arithmetic or ties (see docs/merge.md)."""
    # Imported here so that other commands do not pay for torch, safetensors and mergekit at start-up.
    from posttrain.stages.merge import MergeConfig, run

    run_stage(MergeConfig, config, overrides, dry_run, lambda cfg: run(cfg, log=say))
