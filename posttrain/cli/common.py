"""Shared pieces of the CLI: the app, and how a stage command loads its config and runs its stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.syntax import Syntax

from posttrain.config import dump_config, load_config
from posttrain.errors import StageFailed
from posttrain.report import console, results

app = typer.Typer(
    name="posttrain",
    help="Post-training for LLMs: bucketed data, mid-training, SFT, verified rejection sampling, RL tracks, merging, "
    "calibration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# The commands' names for the two streams of posttrain.report: results on stdout, messages on stderr.
console, console_err = results, console

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="Stage config YAML file.", exists=False, dir_okay=False)
OVERRIDES_ARG = typer.Argument(None, help="Dotted KEY=VALUE overrides, e.g. train.learning_rate=1e-5",
                               show_default=False)
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Print the resolved config and exit.")


def run_stage(stage: Any, config: Path | None, overrides: list[str] | None, dry_run: bool) -> Any:
    """Resolve the config (file + overrides) and check it (``Stage.check``: output folder, trackers, engines), print
    it on --dry-run, else run the stage and show its result. A stage that failed (not the user's input) exits 1
    after saying why."""
    cfg = load_config(stage.schema, config, overrides or [])
    source = str(config) if config is not None else "config"
    if dry_run:
        stage.check(cfg, source)  # what validation cannot see: the output folder, trackers, rollout engines
        results.print(Syntax(dump_config(cfg), "yaml", background_color="default"))
        return None
    stage.open(cfg, source)  # the same checks, before anything is written (built-in stages repeat them; harmless)
    try:
        done = stage.run(cfg, source)
    except StageFailed as e:
        console_err.print(f"[red]{escape(str(e))}[/]")
        raise typer.Exit(1) from None
    if stage.show is not None:
        stage.show(done)
    if not done.ok:
        console_err.print(f"[red]{escape(done.message)}[/]")
    return done


def say(message: str) -> None:
    console_err.print(escape(message), highlight=False)
