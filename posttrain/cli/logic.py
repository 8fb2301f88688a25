"""`posttrain rl-logic`: the Logic RL track on its own (GRPO/RLOO with environment rewards; see docs/logic_track.md)."""

from __future__ import annotations

from pathlib import Path

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, run_stage


@app.command("rl-logic")
def rl_logic(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Verifiable-reward RL on math, code and tool-calling tasks: GRPO or RLOO through the rollout workers."""
    # Imported here so that other commands do not pay for torch, TRL and Ray at start-up.
    from posttrain.rl.config import LogicTrackConfig
    from posttrain.stages.rl_logic import run_logic_track

    source = str(config) if config is not None else "config"
    run_stage(LogicTrackConfig, config, overrides, dry_run, lambda cfg: run_logic_track(cfg, source=source))
