"""`posttrain envs ...`: list environments, generate task sets, verify trajectories."""

from __future__ import annotations

import typer

from posttrain.cli.common import app

envs_app = typer.Typer(help="Sandboxed environments: list, generate tasks, verify trajectories.", no_args_is_help=True)
app.add_typer(envs_app, name="envs")
