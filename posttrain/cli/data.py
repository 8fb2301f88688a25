"""`posttrain data ...`: build mixed datasets from bucket recipes and inspect their manifests."""

from __future__ import annotations

import typer

from posttrain.cli.common import app

data_app = typer.Typer(help="Build and inspect bucket-recipe datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
