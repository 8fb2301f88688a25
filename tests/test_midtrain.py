"""`posttrain midtrain` on the tiny model: packed continued pre-training on a text dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_built_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.errors import UserError
from posttrain.stages.midtrain import MidtrainStageConfig, document_separator, run_midtrain, tokenized_documents

SENTENCES = [
    "The river runs past the old mill and under the stone bridge.",
    "def add(a, b):\n    return a + b\n",
    "Seven times six is forty-two, and forty-two minus two is forty.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
]


@pytest.fixture(scope="module")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [{"text": " ".join(SENTENCES[(i + j) % 4] for j in range(1 + i % 3))} for i in range(30)]
    rows.append({"text": " ".join(SENTENCES) * 8})  # one document longer than max_length
    return write_built_dataset(tmp_path_factory.mktemp("midtrain") / "data", "text", rows)


def config(model: Path, data: Path, out: Path, **train) -> MidtrainStageConfig:
    settings = {"max_steps": 5, "batch_size": 2, "learning_rate": 3e-3, "max_length": 128, "report_to": [], **train}
    return MidtrainStageConfig(model=str(model), data=data, output_dir=out, train=settings)


def test_midtrain_packs_documents_and_the_loss_falls(tiny_model_dir, text_data, tmp_path):
    out = run_midtrain(config(tiny_model_dir, text_data, tmp_path / "out", eval_fraction=0.1)).output_dir
    manifest = json.loads((out / "manifest.json").read_text())
    m = manifest["metrics"]
    assert manifest["stage"] == "midtrain" and m["steps"] == 5
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["documents_truncated"] == 0  # bfd_split moves overflow into other rows instead of cutting it
    assert m["documents_train"] + m["documents_eval"] == 31 and m["eval_perplexity"] > 1
    assert m["tokens"] / m["steps"] > 128  # 2 packed rows of up to 128 tokens per step, filled from many documents
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(out).chat_template is not None


def test_documents_end_with_the_pretraining_separator(tiny_model_dir, text_data):
    from posttrain.data import load_built

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sep = document_separator(tok)
    assert tok.convert_ids_to_tokens(sep) == "<|endoftext|>"
    docs = tokenized_documents(load_built(text_data), text_data / "data.parquet", tok)
    assert all(ids[-1] == sep and sep not in ids[:-1] for ids in docs["input_ids"])
    assert tok.decode(docs["input_ids"][0][:-1]) == load_built(text_data)["text"][0]


def test_without_split_packing_long_documents_are_reported(tiny_model_dir, text_data, tmp_path):
    out = run_midtrain(config(tiny_model_dir, text_data, tmp_path / "plain", packing=False, max_steps=1)).output_dir
    assert json.loads((out / "manifest.json").read_text())["metrics"]["documents_truncated"] == 1


def test_empty_documents_and_chat_data_are_rejected(tiny_model_dir, tmp_path):
    data = write_built_dataset(tmp_path / "empty", "text", [{"text": "fine"}, {"text": "  "}])
    with pytest.raises(UserError, match=r"1 of 2 rows have no text \(first: row 1\)"):
        run_midtrain(config(tiny_model_dir, data, tmp_path / "out"))
    chat = write_built_dataset(tmp_path / "chat", "chat", [{"messages": [{"role": "user", "content": "hi"}],
                                                            "tools": ""}])
    with pytest.raises(UserError, match="this stage needs a 'text' dataset"):
        run_midtrain(config(tiny_model_dir, chat, tmp_path / "out"))
