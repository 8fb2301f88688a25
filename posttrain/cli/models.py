"""`posttrain models ...`: fetch the real small model, build tiny test models."""

from __future__ import annotations

import typer

from posttrain.cli.common import app

models_app = typer.Typer(help="Get models: fetch SmolLM2-135M-Instruct, build tiny random models for tests.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
