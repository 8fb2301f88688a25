"""The two streams: messages and live progress on stderr, a command's results (tables, resolved configs) on stdout,
so that ``posttrain eval ... > table.txt`` keeps only the table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
results = Console()


def say(message: str) -> None:
    """One line for a person (never parsed as rich markup: paths and model output may contain brackets)."""
    console.print(escape(message), highlight=False)
