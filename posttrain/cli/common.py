"""Shared pieces of the CLI: the app, consoles, and how a stage command loads its config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from posttrain.config import dump_config, load_config

app = typer.Typer(
    name="posttrain",
    help="Post-training for LLMs: bucketed data, mid-training, SFT, verified rejection sampling, RL tracks, merging, "
    "calibration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
console_err = Console(stderr=True)

T = TypeVar("T", bound=BaseModel)

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="Stage config YAML file.", exists=False, dir_okay=False)
OVERRIDES_ARG = typer.Argument(None, help="Dotted KEY=VALUE overrides, e.g. train.learning_rate=1e-5",
                               show_default=False)
DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Print the resolved config and exit.")


def run_stage(
    schema: type[T],
    config: Path | None,
    overrides: list[str] | None,
    dry_run: bool,
    run: Callable[[T], object],
) -> None:
    """Resolve the config (file + overrides), print it on --dry-run, else run the stage."""
    cfg = load_config(schema, config, overrides or [])
    if dry_run:
        console.print(Syntax(dump_config(cfg), "yaml", background_color="default"))
        return
    run(cfg)


def say(message: str) -> None:
    console.print(escape(message))
