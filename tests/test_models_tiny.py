"""The tiny test model: transformers and the CLI load it and generate (vLLM CPU: tests/test_rollout_engines.py
matches its greedy tokens and logprobs against transformers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.errors import UserError
from posttrain.models.chat_template import CHAT_TEMPLATE
from posttrain.models.tiny import make_tiny_model

PROMPT = [{"role": "user", "content": "What is 2 + 2?"}]


def greedy_ids(model_dir: Path, n: int) -> list[int]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def test_tiny_model_loads_in_transformers_and_generates(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.head_dim == 32 and model.config.max_position_embeddings >= 2048
    assert 1000 <= len(tok) <= model.config.vocab_size
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"
    for special in ("<|im_start|>", "<|im_end|>", "<|pad|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    text = "Déjà vu: 3 * 7 = 21 ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: any UTF-8 round-trips
    ids = greedy_ids(tiny_model_dir, 6)
    assert len(ids) == 6 and all(0 <= i < model.config.vocab_size for i in ids)


def test_tiny_model_is_deterministic_per_seed(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = make_tiny_model(tmp_path / "again", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    a, b, c = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (tiny_model_dir, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert (again / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()


def test_cli_models_tiny_writes_a_model(tmp_path: Path) -> None:
    out = tmp_path / "cli_tiny"
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "models", "tiny", str(out), "--seed", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2


def test_tiny_replaces_only_an_earlier_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a week of work")
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "models", "tiny", str(mine)], capture_output=True,
                          text=True, timeout=300)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "holds files that are not a tiny model (notes.txt)" in err, proc.stderr
    assert (mine / "notes.txt").read_text() == "a week of work"  # it was deleted with the rest of the folder
    empty = subprocess.run([sys.executable, "-m", "posttrain.cli", "models", "tiny", ""], capture_output=True,
                           text=True, timeout=300)
    assert empty.returncode == 2 and "an empty path would mean the" in empty.stderr
    trained = tmp_path / "trained"
    shutil.copytree(tiny_model_dir, trained)
    (trained / "manifest.json").write_text('{"stage": "sft"}')  # a model some stage trained from the tiny one
    with pytest.raises(UserError, match=r"a tiny model plus other files \(manifest.json\)"):
        make_tiny_model(trained)
    earlier = tmp_path / "earlier"
    shutil.copytree(tiny_model_dir, earlier)
    make_tiny_model(earlier, seed=1)
    assert sorted(p.name for p in earlier.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())
    assert (earlier / "model.safetensors").read_bytes() != (tiny_model_dir / "model.safetensors").read_bytes()


def test_tiny_families_carry_their_familys_tokens_and_template(tiny_family, tmp_path: Path) -> None:
    """qwen3: Qwen3 weights, ChatML tokens plus <think>/<tool_call> and Qwen3's own template; llama3: Llama 3 header
    tokens and Llama 3.2's own template; plain: a base model without a template."""
    from trl.chat_template_utils import llama3_2_chat_template, qwen3_chat_template

    expected = {"qwen3": ("Qwen3ForCausalLM", qwen3_chat_template, "<|im_end|>",
                          ["<think>", "</think>", "<tool_call>"]),
                "llama3": ("LlamaForCausalLM", llama3_2_chat_template, "<|eot_id|>",
                           ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|python_tag|>"]),
                "plain": ("LlamaForCausalLM", None, "<|endoftext|>", ["<|endoftext|>"])}
    for family, (arch, template, eos, tokens) in expected.items():
        folder = tiny_family(family)
        tok = AutoTokenizer.from_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == [arch] and config["head_dim"] == 32
        assert tok.chat_template == template and tok.eos_token == eos
        assert all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in tokens)
        generation = json.loads((folder / "generation_config.json").read_text())
        assert tok.convert_tokens_to_ids(eos) in generation["eos_token_id"]
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "models", "tiny", str(tmp_path / "l"), "--family",
                           "llama3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert AutoTokenizer.from_pretrained(tmp_path / "l").chat_template == llama3_2_chat_template
    bad = subprocess.run([sys.executable, "-m", "posttrain.cli", "models", "tiny", str(tmp_path / "x"), "--family",
                          "gpt"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "expected one of chatml, qwen3, llama3, plain" in " ".join(bad.stderr.split())
