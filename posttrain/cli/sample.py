"""`posttrain sample` (rejection-sampled SFT data) and `posttrain rs` (iterative rejection sampling + SFT rounds)."""

from __future__ import annotations

from pathlib import Path

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, console, run_stage


def _log(message: str) -> None:
    console.print(message, highlight=False, markup=False)


@app.command("sample")
def sample(
    config: Path = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Sample N episodes per task prompt, verify them in their environments, keep verified successes as SFT data."""
    from posttrain.stages.sample import SampleConfig, run_sample

    run_stage(SampleConfig, config, overrides, dry_run, lambda cfg: run_sample(cfg, log=_log))
