"""`posttrain sft` on the tiny model: full fine-tuning, resume, LoRA (merged and adapter), packing, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_built_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.errors import UserError
from posttrain.stages.sft import SFTStageConfig, run_sft

TOOLS = json.dumps([{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}])


def chat_rows(n: int = 24) -> list[dict]:
    """Arithmetic chats; every fourth one calls a tool and reads its result (multi-turn, with a tools block)."""
    rows = []
    for i in range(n):
        a, b = (i * 7) % 50, (i * 3) % 40
        if i % 4 == 0:
            call = json.dumps({"name": "add", "arguments": {"a": a, "b": b}})
            messages = [{"role": "user", "content": f"Add {a} and {b}."},
                        {"role": "assistant", "content": f"<tool_call>{call}</tool_call>"},
                        {"role": "tool", "content": str(a + b)},
                        {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]
            rows.append({"messages": messages, "tools": TOOLS})
        else:
            rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                      {"role": "assistant", "content": f"{a} + {b} = {a + b}."}], "tools": ""})
    return rows


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = chat_rows()
    rows.append({"messages": [{"role": "user", "content": "Tell me a long story. " * 60},
                              {"role": "assistant", "content": "Once upon a time."}], "tools": ""})
    return write_built_dataset(tmp_path_factory.mktemp("sft") / "data", "chat", rows)


def config(model: Path, data: Path, out: Path, lora: dict | None = None, **train) -> SFTStageConfig:
    settings = {"max_steps": 4, "batch_size": 4, "learning_rate": 3e-3, "max_length": 512, "save_steps": 2,
                "report_to": [], **train}
    return SFTStageConfig(model=str(model), data=data, output_dir=out, lora=lora, train=settings)


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_full_finetune_writes_a_model_that_reloads_and_reruns_as_a_no_op(tiny_model_dir, chat_data, tmp_path):
    out = run_sft(config(tiny_model_dir, chat_data, tmp_path / "out", eval_fraction=0.2,
                         report_to=["tensorboard"])).output_dir
    manifest = json.loads((out / "manifest.json").read_text())
    m = manifest["metrics"]
    assert manifest["stage"] == "sft" and m["steps"] == 4
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["rows_train"] + m["rows_eval"] == 25 and m["rows_eval"] == 5
    assert m["rows_truncated"] == 1  # the long story is reported, not silently cut
    assert m["eval_loss"] > 0 and m["tokens"] > 0 and m["tokens_per_second"] > 0 and m["tokens_per_cpu_second"] > 0
    assert str(chat_data / "manifest.json") in manifest["inputs"] and "model.safetensors" in manifest["outputs"]
    assert len(losses(out)) == 4
    assert list((out / "logs").glob("events.out.tfevents.*"))  # TensorBoard, outside the cleaned-up checkpoints/
    assert not (out / "checkpoints").exists()

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32  # saved in the dtype the input model was stored in
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is 1 + 2?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    assert model.generate(**inputs, max_new_tokens=4, min_new_tokens=4).shape[1] == inputs["input_ids"].shape[1] + 4

    before = (out / "manifest.json").stat().st_mtime_ns
    run_sft(config(tiny_model_dir, chat_data, tmp_path / "out", eval_fraction=0.2, report_to=["tensorboard"]))
    assert (out / "manifest.json").stat().st_mtime_ns == before  # same config and inputs: nothing retrained


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(tiny_model_dir, chat_data, tmp_path):
    common = {"lr_scheduler": "constant"}  # the schedule must not depend on max_steps for the runs to be comparable
    straight = run_sft(config(tiny_model_dir, chat_data, tmp_path / "straight", max_steps=4, **common)).output_dir
    resumed = tmp_path / "resumed"
    run_sft(config(tiny_model_dir, chat_data, resumed, max_steps=2, keep_checkpoints=True, **common))
    assert (resumed / "checkpoints" / "checkpoint-2").is_dir()
    run_sft(config(tiny_model_dir, chat_data, resumed, max_steps=4, **common))
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)
    a = AutoModelForCausalLM.from_pretrained(straight).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_lora_with_packing_merges_into_full_weights(tiny_model_dir, chat_data, tmp_path):
    out = run_sft(config(tiny_model_dir, chat_data, tmp_path / "lora", lora={"r": 8, "alpha": 16},
                         packing=True, max_steps=6, batch_size=1, max_length=384)).output_dir
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert merged.keys() == base.keys()
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all("proj" in k for k in changed)  # only the LoRA-targeted linear layers moved
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["train_loss_last"] < m["train_loss_first"]
    # Packed rows hold several conversations: far more tokens per step than one conversation (~120 on average).
    assert m["tokens"] / m["steps"] > 250


def test_lora_adapter_only_is_saved_when_merge_is_off_with_bf16_on_cpu(tiny_model_dir, chat_data, tmp_path):
    from peft import AutoPeftModelForCausalLM

    out = run_sft(config(tiny_model_dir, chat_data, tmp_path / "adapter", lora={"r": 4, "merge": False},
                         max_steps=2, precision="bf16")).output_dir
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_bad_rows_are_errors_naming_the_rows(tiny_model_dir, tmp_path):
    rows = chat_rows(4)
    rows[1]["tools"] = "{not json"
    rows[2]["messages"] = [{"role": "user", "content": "nobody answers"}]
    data = write_built_dataset(tmp_path / "bad", "chat", rows)
    with pytest.raises(UserError) as e:
        run_sft(config(tiny_model_dir, data, tmp_path / "out"))
    msg = e.value.message
    assert "2 of 4 rows" in msg and "row 1 (id row1): tools: not valid JSON" in msg
    assert "row 2 (id row2): no assistant message" in msg


def test_wrong_dataset_kind_and_missing_folder(tiny_model_dir, tmp_path):
    text = write_built_dataset(tmp_path / "text", "text", [{"text": "hello"}])
    with pytest.raises(UserError, match="holds 'text' rows; this stage needs a 'chat' dataset"):
        run_sft(config(tiny_model_dir, text, tmp_path / "out"), source="sft.yaml")
    with pytest.raises(UserError, match=r"sft.yaml: data: folder '.*nowhere' not found"):
        run_sft(config(tiny_model_dir, tmp_path / "nowhere", tmp_path / "out"), source="sft.yaml")
