"""Distributed training: every shipped accelerate config parses with accelerate's own loader, and `python -m
posttrain.cli sft` runs data-parallel (DDP over gloo) on two CPU processes launched by torchrun: the code path of a
multi-GPU run (every process runs the stage, the main one writes), without GPUs.

(`accelerate launch` itself starts a single process for a CPU-only config unless MPI is set up, hence torchrun.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_built_dataset
from transformers import AutoModelForCausalLM

ACCELERATE = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


@pytest.mark.parametrize("name", ["multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_accelerate_configs_load(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE / f"{name}.yaml"))
    expected = {"multi_gpu": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED",
                "fsdp": "FSDP"}[name]
    assert str(config.distributed_type).endswith(expected)
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "fsdp":
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_ddp_on_two_cpu_processes(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"{i} + {i}?"}, {"role": "assistant", "content": f"{2 * i}"}],
             "tools": ""} for i in range(16)]
    data = write_built_dataset(tmp_path / "data", "chat", rows)
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\ndata: {data}\noutput_dir: {tmp_path / 'out'}\n"
                   "train: {max_steps: 2, batch_size: 2, report_to: [], learning_rate: 1.0e-3}\n")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "posttrain.cli", "sft", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 2
    # Two processes of batch 2 for 2 steps see 8 of the 16 rows: half an epoch (one process alone would see a quarter).
    assert manifest["metrics"]["epochs"] == pytest.approx(0.5)
    assert proc.stderr.count("sft finished") == 1  # only the main process reports
    AutoModelForCausalLM.from_pretrained(out)
