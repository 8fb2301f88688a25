"""`posttrain pipeline`: the whole recipe (data -> midtrain -> sft -> rs -> rm + rl -> merge -> calibrate -> eval) as
one resumable run; also what a Ray cluster job runs (`ray job submit -- posttrain pipeline --config ...`)."""

from __future__ import annotations

from pathlib import Path

import typer

from posttrain.cli.common import DRY_RUN_OPTION, OVERRIDES_ARG, app, console_err


@app.command("pipeline")
def pipeline(
    config: Path = typer.Option(..., "--config", "-c", help="Pipeline config YAML (e.g. configs/kanana2.yaml).",
                                dir_okay=False),
    overrides: list[str] = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
    start: str = typer.Option(None, "--from", help="Start at this stage (data, midtrain, sft, rs, rm, rl, merge, "
                              "calibrate, eval, and any registered by plugins); the stages before it must have "
                              "finished in the run folder, and their outputs are used as they are."),
    stop: str = typer.Option(None, "--until", help="Stop after this stage."),
) -> None:
    """Run every stage of the recipe; unchanged stages are skipped, a killed run resumes where it stopped."""
    from posttrain.pipeline import StageFailed, load_pipeline_config, run_pipeline
    from posttrain.pipeline import dry_run as resolve
    from posttrain.pipeline.runner import check_range

    cfg, source = load_pipeline_config(config, overrides or [])
    check_range(start, stop)
    if dry_run:
        typer.echo(resolve(cfg, source))  # plain text: long YAML lines must not be wrapped
        return
    try:
        run_pipeline(cfg, source, start=start, stop=stop)
    except StageFailed as e:
        console_err.print(f"[red]{e}[/]", highlight=False)
        raise typer.Exit(1) from None
