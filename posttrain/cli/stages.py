"""Every registered stage as a command: ``posttrain <stage> --config FILE.yaml [KEY=VALUE ...] [--dry-run]``, plus
the stage's own flags (``rl --track``). What each command does is its stage's: see ``posttrain.stages``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, run_stage
from posttrain.stages import Stage, stages


def stage_command(stage: Stage) -> Any:
    """A typer command for ``stage``; its flags become options that turn into overrides."""
    def command(config: Path | None = None, overrides: list[str] | None = None, dry_run: bool = False,
                **flags: str) -> None:
        extra = [o for flag in stage.flags for o in flag.overrides(flags[_param(flag.name)])]
        done = run_stage(stage, config, [*(overrides or []), *extra], dry_run)
        if done is not None and not done.ok:
            raise typer.Exit(1)

    params = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=CONFIG_OPTION, annotation=Path),
              inspect.Parameter("overrides", inspect.Parameter.KEYWORD_ONLY, default=OVERRIDES_ARG,
                                annotation=list[str]),
              inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, default=DRY_RUN_OPTION, annotation=bool)]
    params += [inspect.Parameter(_param(f.name), inspect.Parameter.KEYWORD_ONLY, annotation=str,
                                 default=typer.Option(f.default, f.name, help=f.help)) for f in stage.flags]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = stage.help
    return command


def _param(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


for _stage in stages():
    if _stage.command:
        app.command(_stage.name)(stage_command(_stage))
