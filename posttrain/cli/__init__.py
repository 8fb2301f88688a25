"""The ``posttrain`` command line: one typer app; each subcommand is a thin call into a stage or a component.

The stage commands are made from the stage registry (``stages``); the other groups (``data``, ``models``, ``envs``,
``pipeline``) live in sibling modules. Each module registers its commands on ``app`` when imported.
"""

from __future__ import annotations

import sys

from posttrain.cli.common import app, console_err
from posttrain.errors import UserError

# Importing the modules registers their commands on `app`.
from posttrain.cli import data as _data  # noqa: E402,F401  isort: skip
from posttrain.cli import envs as _envs  # noqa: E402,F401  isort: skip
from posttrain.cli import models as _models  # noqa: E402,F401  isort: skip
from posttrain.cli import stages as _stages  # noqa: E402,F401  isort: skip
from posttrain.cli import pipeline as _pipeline  # noqa: E402,F401  isort: skip


def main() -> None:
    """Console-script entry point: user errors become one clear message and exit code 2, never a traceback."""
    try:
        app()
    except UserError as e:
        console_err.print(f"[bold red]error:[/] {e.message}", highlight=False, markup=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console_err.print("[yellow]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "main"]
