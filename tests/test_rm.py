"""`posttrain rm`: a reward model trained with TRL's RewardTrainer on a tiny model learns an easy preference set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.errors import UserError
from posttrain.stages.rm import RMStageConfig, run_rm

ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = ROOT / "data_recipes/preference_tiny.yaml"


def rm_config(model: Path, out: Path, *extra: str) -> RMStageConfig:
    return load_config(RMStageConfig, None, [
        f"model={model}", f"data={TINY_RECIPE}", f"output_dir={out}", "train.max_steps=10", "train.learning_rate=1e-3",
        "train.batch_size=8", "train.max_length=140", "train.eval_fraction=0.15", "train.report_to=[]", *extra])


@pytest.fixture(scope="module")
def trained_rm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_rm(rm_config(tiny_model_dir, tmp_path_factory.mktemp("rm") / "rm")).output_dir


def test_reward_model_learns_easy_preferences(trained_rm: Path) -> None:
    manifest = json.loads((trained_rm / "manifest.json").read_text())
    assert manifest["stage"] == "rm"
    m = manifest["metrics"]
    # 48 pairs; 4 are longer than max_length=140 tokens: counted, left out, never silently lost.
    assert (m["pairs_read"], m["pairs_too_long"]) == (48, 4)
    assert m["pairs_train"] + m["pairs_eval"] == 44 and m["pairs_eval"] >= 3
    assert m["steps"] == 10
    # Starts near chance (random head), ends well above it on the pairs it trained on.
    assert m["train_accuracy_before"] < 0.7
    assert m["train_accuracy_after"] >= 0.8 and m["train_accuracy_after"] > m["train_accuracy_before"] + 0.2
    assert m["train_loss_last"] < m["train_loss_first"]
    assert set(m["pairwise_accuracy"]["after"]["train"]["buckets"]) == {"helpfulness", "safety"}
    logs = [json.loads(line) for line in (trained_rm / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logs if "loss" in row] == list(range(1, 11))
    assert not (trained_rm / "checkpoints").exists()


def test_saved_reward_model_scores_like_training_measured(trained_rm: Path) -> None:
    from transformers import AutoConfig

    from posttrain.data import load_built
    from posttrain.preference.scorers import RewardModelScorer

    config = AutoConfig.from_pretrained(trained_rm)
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1
    m = json.loads((trained_rm / "manifest.json").read_text())["metrics"]
    scorer = RewardModelScorer(trained_rm, batch_size=8)
    rows = [r for r in load_built(trained_rm / "data").to_list()]
    lengths = [max(len(scorer.tokenizer.apply_chat_template(r["prompt"] + r[s], tokenize=True, return_dict=True)
                       ["input_ids"]) for s in ("chosen", "rejected")) for r in rows]
    kept = [r for r, n in zip(rows, lengths, strict=True) if n <= 140]
    chosen = scorer.score([r["prompt"] for r in kept], [r["chosen"][0]["content"] for r in kept])
    rejected = scorer.score([r["prompt"] for r in kept], [r["rejected"][0]["content"] for r in kept])
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(kept)
    expected = (m["train_accuracy_after"] * m["pairs_train"] + m["eval_accuracy_after"] * m["pairs_eval"]) / 44
    assert accuracy == pytest.approx(expected, abs=1.5 / 44)


def test_rerunning_the_same_config_is_a_no_op(trained_rm: Path, tiny_model_dir: Path) -> None:
    before = (trained_rm / "manifest.json").stat().st_mtime_ns
    assert run_rm(rm_config(tiny_model_dir, trained_rm)).output_dir == trained_rm
    assert (trained_rm / "manifest.json").stat().st_mtime_ns == before


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rm.yaml"
    path.write_text(text)
    return path


def test_bad_configs_name_the_file_and_key(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = _write(tmp_path, f"model: {tiny_model_dir}\ndata: d\noutput_dir: o\ntrain: {{lr: 0.1}}\n")
    with pytest.raises(UserError, match=rf"{path}: train\.lr: unknown key"):
        load_config(RMStageConfig, path)
    path = _write(tmp_path, f"model: {tiny_model_dir}\ndata: d\noutput_dir: o\ntrain: {{packing: true}}\n")
    with pytest.raises(UserError, match=rf"{path}: train: .*cannot be packed"):
        load_config(RMStageConfig, path)
    path = _write(tmp_path, "data: d\noutput_dir: o\n")
    with pytest.raises(UserError, match=rf"{path}: model: required key is missing"):
        load_config(RMStageConfig, path)

    # A dataset of the wrong kind, a missing folder, a missing recipe: named by the config key.
    chat = tmp_path / "chat"
    from posttrain.data import build_dataset

    build_dataset(ROOT / "data_recipes/sft_tiny.yaml", chat)
    cfg = rm_config(tiny_model_dir, tmp_path / "out", f"data={chat}")
    with pytest.raises(UserError, match=r"cfg.yaml: data: .* holds 'chat' rows; this stage needs a 'preference'"):
        run_rm(cfg, source="cfg.yaml")
    with pytest.raises(UserError, match=r"cfg.yaml: data: folder .*nowhere.* not found"):
        run_rm(rm_config(tiny_model_dir, tmp_path / "out", f"data={tmp_path / 'nowhere'}"), source="cfg.yaml")
    with pytest.raises(UserError, match=r"cfg.yaml: data: recipe file not found"):
        run_rm(rm_config(tiny_model_dir, tmp_path / "out", f"data={tmp_path / 'no.yaml'}"), source="cfg.yaml")
    with pytest.raises(UserError, match=r"cfg.yaml: model: model folder 'missing-model' not found"):
        run_rm(rm_config(Path("missing-model"), tmp_path / "out"), source="cfg.yaml")


def test_cli_dry_run_and_errors(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import posttrain.cli  # noqa: F401  registers the commands
    from posttrain.cli import main

    path = _write(tmp_path, f"model: {tiny_model_dir}\ndata: {TINY_RECIPE}\noutput_dir: {tmp_path / 'o'}\n")
    monkeypatch.setattr(sys, "argv", ["posttrain", "rm", "--config", str(path), "train.max_steps=3", "--dry-run"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "max_steps: 3" in shown and "center_rewards_coefficient" in shown
    assert not (tmp_path / "o").exists()

    monkeypatch.setattr(sys, "argv", ["posttrain", "rm", "--config", str(path), "train.batch_size=0"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "train.batch_size" in capsys.readouterr().err
