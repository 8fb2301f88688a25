"""`posttrain eval`: several models on verifiable task sets (accuracy, pass@k) and by reward-model win rate."""

from __future__ import annotations

from pathlib import Path

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, console, run_stage, say


@app.command("eval")
def evaluate(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Compare models on verifiable sets (accuracy, pass@k per bucket) and by win rate against the SFT model."""
    # Imported here so that other commands do not pay for torch, Ray and the environments at start-up.
    from posttrain.evaluation.table import rich_table
    from posttrain.stages.evaluate import EvalConfig, run_eval

    def run(cfg: EvalConfig) -> None:
        manifest = run_eval(cfg, source=str(config) if config else "config", log=say)
        metrics = manifest["metrics"]
        console.print(rich_table(metrics["columns"], metrics["rows"], f"eval: {cfg.output_dir}"))

    run_stage(EvalConfig, config, overrides, dry_run, run)
