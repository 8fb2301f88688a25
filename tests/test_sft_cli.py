"""The `posttrain sft` / `posttrain midtrain` commands: configs, overrides, --dry-run, and exit code 2 on bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_built_dataset

from posttrain.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["posttrain", *argv])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def chat_data(tmp_path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"{i} + 1?"}, {"role": "assistant", "content": f"{i + 1}"}],
             "tools": ""} for i in range(12)]
    return write_built_dataset(tmp_path / "data", "chat", rows)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sft.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["sft_quickstart.yaml", "sft_lora.yaml", "midtrain.yaml"])
def test_shipped_configs_resolve_with_overrides(monkeypatch, capsys, name) -> None:
    command = "midtrain" if name.startswith("midtrain") else "sft"
    code, out, err = run_cli(monkeypatch, capsys, command, "--config", str(CONFIGS / name), "--dry-run",
                             "train.learning_rate=3e-4", "train.max_steps=7", "output_dir=/tmp/elsewhere")
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["train"]["learning_rate"] == pytest.approx(3e-4) and resolved["train"]["max_steps"] == 7
    assert resolved["output_dir"] == "/tmp/elsewhere"
    assert resolved["model"] == "smollm2-135m-instruct"


@pytest.mark.parametrize(("body", "expected"), [
    ("model: m\ndata: d\noutput_dir: o\ntrain:\n  learning_rat: 0.1\n", "train.learning_rat: unknown key"),
    ("model: m\ndata: d\noutput_dir: o\ntrain:\n  batch_size: many\n", "train.batch_size: input should be a valid"),
    ("model: m\ndata: d\noutput_dir: o\ntrain:\n  learning_rate: 0\n", "train.learning_rate: input should be greater"),
    ("model: m\ndata: d\noutput_dir: o\ntrain:\n  learning_rate: -1e-5\n", "train.learning_rate"),
    ("model: m\ndata: d\noutput_dir: o\nlora:\n  r: 0\n", "lora.r: input should be greater than 0"),
    ("model: m\noutput_dir: o\n", "data: required key is missing"),
])
def test_bad_configs_exit_2_naming_file_and_key(monkeypatch, capsys, tmp_path, body, expected) -> None:
    path = write_config(tmp_path, body)
    code, _, err = run_cli(monkeypatch, capsys, "sft", "--config", str(path))
    assert code == 2
    assert str(path) in err and expected in " ".join(err.split())
    assert "Traceback" not in err


def test_missing_data_folder_and_model_exit_2(monkeypatch, capsys, tmp_path, tiny_model_dir, chat_data) -> None:
    path = write_config(tmp_path, f"model: {tiny_model_dir}\ndata: {tmp_path / 'nope'}\noutput_dir: {tmp_path / 'o'}\n")
    code, _, err = run_cli(monkeypatch, capsys, "sft", "--config", str(path))
    assert code == 2 and f"{path}: data: folder" in " ".join(err.split()) and "not found" in err
    path = write_config(tmp_path, f"model: {tmp_path / 'no_model'}\ndata: {chat_data}\noutput_dir: {tmp_path / 'o'}\n")
    code, _, err = run_cli(monkeypatch, capsys, "midtrain", "--config", str(path))
    assert code == 2 and f"{path}: model: model folder" in " ".join(err.split())


def test_sft_command_trains_the_tiny_model(monkeypatch, capsys, tmp_path, tiny_model_dir, chat_data) -> None:
    path = write_config(tmp_path, f"model: {tiny_model_dir}\ndata: {chat_data}\noutput_dir: {tmp_path / 'o'}\n"
                                  "train:\n  max_steps: 2\n  batch_size: 4\n  report_to: []\n")
    code, _, err = run_cli(monkeypatch, capsys, "sft", "--config", str(path), "train.learning_rate=1e-3")
    assert code == 0, err
    assert (tmp_path / "o" / "manifest.json").is_file() and "sft finished" in err
