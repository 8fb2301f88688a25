"""`posttrain sample` (rejection-sampled SFT data) and `posttrain rs` (iterative rejection sampling + SFT rounds)."""

from __future__ import annotations

from pathlib import Path

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, console, run_stage


def _log(message: str) -> None:
    console.print(message, highlight=False, markup=False)


@app.command("sample")
def sample(
    config: Path = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Sample N episodes per task prompt, verify them in their environments, keep verified successes as SFT data."""
    from posttrain.stages.sample import SampleConfig, run_sample

    run_stage(SampleConfig, config, overrides, dry_run, lambda cfg: run_sample(cfg, log=_log))


@app.command("rs")
def rs(
    config: Path = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARG,
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Iterative rejection-sampling SFT: `rounds` x (sample -> verify -> SFT), held-out pass@1 every round."""
    from posttrain.stages.rs_rounds import RSConfig, run_rs

    def run(cfg: RSConfig) -> None:
        print_rounds(run_rs(cfg, log=_log))

    run_stage(RSConfig, config, overrides, dry_run, run)


def print_rounds(manifest: dict) -> None:
    from rich.table import Table

    from posttrain.stages.rs_rounds import summary_rows

    rows = summary_rows(manifest)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title="rejection-sampling rounds", title_justify="left")
    for col in columns:
        table.add_column(col, justify="left" if col == "note" else "right")
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in (row.get(c, "") for c in columns)))
    console.print(table)
