"""`posttrain rl`: the Chat and Logic tracks together (at once on Ray) or one of them (`--track`)."""

from __future__ import annotations

from pathlib import Path

import typer

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, console_err


@app.command("rl")
def rl_command(
    config: Path = CONFIG_OPTION,
    overrides: list[str] = OVERRIDES_ARG,
    track: str = typer.Option("both", "--track", help="chat, logic, or both (at once, as separate Ray tasks)."),
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Train the RL tracks from one SFT model: Chat (DPO) and Logic (GRPO/RLOO), at once with their own resources."""
    from posttrain.cli.common import run_stage
    from posttrain.errors import UserError
    from posttrain.stages.rl import RLConfig, TrackFailed, run

    if track not in ("chat", "logic", "both"):
        raise UserError(f"--track {track!r}: expected chat, logic or both")
    extra = [] if track == "both" else [f"tracks=[{track}]"]

    def go(cfg: RLConfig) -> None:
        try:
            run(cfg, source=str(config))
        except TrackFailed as e:
            console_err.print(f"[red]{e}[/]")
            raise typer.Exit(1) from None

    run_stage(RLConfig, config, [*(overrides or []), *extra], dry_run, go)
