"""Training stages as subcommands: each takes --config FILE.yaml, KEY=VALUE overrides and --dry-run."""

from __future__ import annotations

from pathlib import Path

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, run_stage


def _source(config: Path | None) -> str:
    return str(config) if config is not None else "config"


@app.command("midtrain")
def midtrain(
    config: Path = CONFIG_OPTION, overrides: list[str] = OVERRIDES_ARG, dry_run: bool = DRY_RUN_OPTION
) -> None:
    """Mid-training (continued pre-training) on a built `text` dataset, packed, next-token loss on every token."""
    from posttrain.stages.midtrain import MidtrainStageConfig, run_midtrain

    run_stage(MidtrainStageConfig, config, overrides, dry_run, lambda cfg: run_midtrain(cfg, _source(config)))


@app.command("sft")
def sft(config: Path = CONFIG_OPTION, overrides: list[str] = OVERRIDES_ARG, dry_run: bool = DRY_RUN_OPTION) -> None:
    """Supervised fine-tuning on a built `chat` dataset (assistant-only loss, tools, packing, LoRA)."""
    from posttrain.stages.sft import SFTStageConfig, run_sft

    run_stage(SFTStageConfig, config, overrides, dry_run, lambda cfg: run_sft(cfg, _source(config)))
