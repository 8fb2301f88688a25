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
    """Console-script entry point: user errors become one clear message and exit code 2, never a traceback; Ctrl-C
    says so and exits 130."""
    try:
        app()
    except UserError as e:
        console_err.print(f"[bold red]error:[/] {e.message}", highlight=False, markup=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as e:  # typer turns Ctrl-C into a silent exit 130 itself
        if e.code == 130 and _caused_by_ctrl_c(e):
            _interrupted()
        raise


def _caused_by_ctrl_c(exc: BaseException) -> bool:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        if isinstance(node, KeyboardInterrupt):
            return True
        seen.add(id(node))
        node = node.__cause__ or node.__context__
    return False


def _interrupted() -> None:
    console_err.print("[yellow]interrupted[/] (Ctrl-C): stopped before the end; outputs written all at once were left "
                      "as they were", highlight=False)
    sys.exit(130)


__all__ = ["app", "main"]
