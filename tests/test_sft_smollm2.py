"""SFT of the real SmolLM2-135M-Instruct for a few steps: the loss falls and the saved folder reloads and answers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import write_built_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.stages.sft import SFTStageConfig, run_sft

FACTS = [("the capital of Zorbia", "Quellport"), ("the colour of a glimmerfruit", "teal"),
         ("the tallest tower in Quellport", "the Ashspire"), ("Zorbia's national animal", "the striped otter")]


def test_sft_smollm2_lowers_the_loss_and_saves_a_working_bf16_model(smollm2_dir: Path, tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"What is {q}?"},
                          {"role": "assistant", "content": f"It is {a}."}], "tools": ""} for q, a in FACTS] * 2
    data = write_built_dataset(tmp_path / "data", "chat", rows)
    cfg = SFTStageConfig(model="smollm2-135m-instruct", data=data, output_dir=tmp_path / "out",
                         train={"max_steps": 6, "batch_size": 4, "learning_rate": 1e-4, "max_length": 128,
                                "lr_scheduler": "constant", "report_to": [], "save_steps": 100})
    out = run_sft(cfg).output_dir

    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["steps"] == 6
    assert metrics["train_loss_last"] < 0.7 * metrics["train_loss_first"]

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16  # stored like the input model
    tok = AutoTokenizer.from_pretrained(out)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of Zorbia?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = tok.decode(model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:])
    assert answer.strip() and "<|im_start|>" not in answer
