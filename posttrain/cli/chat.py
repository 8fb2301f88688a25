"""The Chat track's commands: `posttrain rm` (reward model) and `posttrain rl-chat` (offline + on-policy DPO rounds).

Each takes --config FILE.yaml, KEY=VALUE overrides and --dry-run.
"""

from __future__ import annotations

from pathlib import Path

from posttrain.cli.common import CONFIG_OPTION, DRY_RUN_OPTION, OVERRIDES_ARG, app, run_stage, say


def _source(config: Path | None) -> str:
    return str(config) if config is not None else "config"


@app.command("rm")
def rm(config: Path = CONFIG_OPTION, overrides: list[str] = OVERRIDES_ARG, dry_run: bool = DRY_RUN_OPTION) -> None:
    """Train a reward model (TRL RewardTrainer) on a preference dataset; reports pairwise accuracy before/after."""
    from posttrain.stages.rm import RMStageConfig, run_rm

    run_stage(RMStageConfig, config, overrides, dry_run, lambda cfg: run_rm(cfg, _source(config)))


@app.command("rl-chat")
def rl_chat(config: Path = CONFIG_OPTION, overrides: list[str] = OVERRIDES_ARG,
            dry_run: bool = DRY_RUN_OPTION) -> None:
    """The Chat RL track: DPO on offline pairs, then on-policy rounds (sample K, score, best vs worst, DPO), with the
    reward-model win rate against the SFT model after each round. Resumes a killed run."""
    from posttrain.stages.rl_chat import ChatTrackConfig, run_chat_track

    def run(cfg: ChatTrackConfig) -> None:
        result = run_chat_track(cfg, source=_source(config))
        say(f"rl-chat: final model {result.model_dir} (win rate vs SFT: {result.win_rate})")

    run_stage(ChatTrackConfig, config, overrides, dry_run, run)
