"""Inputs that do not fit the base are UserErrors naming the config key, the folder and the tensor (or token)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_merge import NORM, UP, edit_json, make_lora, merge, variant

from posttrain.errors import UserError
from posttrain.manifest import STAGE_MARK


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("lora") / "adapter"
    make_lora(tiny_model_dir, out)
    return out


def expect_error(tmp_path: Path, base: Path, model: Path, *fragments: str) -> None:
    ok = tmp_path / "ok"
    if not ok.exists():
        variant(base, ok, {UP: 1.0})
    with pytest.raises(UserError) as info:
        merge(tmp_path / "out", base, [(ok, 1.0), (model, 1.0)], method="task_arithmetic")
    for fragment in ("models.1.path", str(model), *fragments):
        assert fragment in info.value.message, info.value.message
    assert not written(tmp_path / "out")


def written(folder: Path) -> bool:
    """Whether a merge wrote anything there (a stage that stops on bad input leaves at most its marked, empty
    folder: the pre-flight marks it as the stage's before the inputs are read)."""
    return folder.exists() and any(p.name != STAGE_MARK for p in folder.iterdir())


def _shrink(state: dict[str, torch.Tensor]) -> None:
    state[UP] = state[UP][:128]


def _drop(state: dict[str, torch.Tensor]) -> None:
    del state[NORM]


def _extra(state: dict[str, torch.Tensor]) -> None:
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()


@pytest.mark.parametrize(("edit", "fragments"), [
    (_shrink, (f"tensor {UP} has shape [128, 64]", "[256, 64]")),
    (_drop, (f"tensor {NORM} of the base", "is missing")),
    (_extra, ("tensor lm_head.weight is not in the base",)),
], ids=["shape", "missing", "extra"])
def test_tensor_mismatches_name_the_folder_and_tensor(tmp_path: Path, tiny_model_dir: Path,
                                                      edit: Callable[[dict[str, torch.Tensor]], None],
                                                      fragments: tuple[str, ...]) -> None:
    bad = variant(tiny_model_dir, tmp_path / "bad", edit=edit)
    expect_error(tmp_path, tiny_model_dir, bad, *fragments)


def test_architecture_mismatch(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = variant(tiny_model_dir, tmp_path / "bad")
    edit_json(bad / "config.json", lambda c: c.update(model_type="mistral", architectures=["MistralForCausalLM"]))
    expect_error(tmp_path, tiny_model_dir, bad, "model_type is 'mistral'", "'llama'")


def test_tokenizer_mismatch_names_the_token(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = variant(tiny_model_dir, tmp_path / "bad")

    def swap(tok: dict) -> None:  # two ordinary tokens trade ids: same size, different vocabulary
        vocab = tok["model"]["vocab"]
        first, second = (t for t, i in vocab.items() if i in (300, 301))
        vocab[first], vocab[second] = vocab[second], vocab[first]

    edit_json(bad / "tokenizer.json", swap)
    vocab = json.loads((tiny_model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    token = next(t for t, i in vocab.items() if i == 301)
    expect_error(tmp_path, tiny_model_dir, bad, "tokenizer differs from the base", f"token {token!r} has id 300 here")


def test_a_model_without_a_tokenizer_is_fine_and_gets_the_base_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    bare = variant(tiny_model_dir, tmp_path / "bare", {UP: 2.0})
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (bare / name).unlink()
    out = merge(tmp_path / "out", tiny_model_dir, [(bare, 1.0)], method="task_arithmetic")
    assert (out / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()


def _rewrite_adapter(src: Path, dst: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    shutil.copytree(src, dst)
    state = load_file(dst / "adapter_model.safetensors")
    change(state)
    save_file(state, dst / "adapter_model.safetensors", metadata={"format": "pt"})
    return dst


A0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def test_lora_adapter_with_wrong_shape(tmp_path: Path, tiny_model_dir: Path, adapter: Path) -> None:
    bad = _rewrite_adapter(adapter, tmp_path / "bad", lambda s: s.update({A0: s[A0][:, :32].contiguous()}))
    expect_error(tmp_path, tiny_model_dir, bad, f"adapter tensor {A0} has shape [2, 32]",
                 "model.layers.0.self_attn.q_proj.weight of shape [64, 64]")


def test_lora_adapter_for_a_module_the_base_lacks(tmp_path: Path, tiny_model_dir: Path, adapter: Path) -> None:
    moved = A0.replace("layers.0", "layers.7")
    bad = _rewrite_adapter(adapter, tmp_path / "bad", lambda s: s.update({moved: s.pop(A0)}))
    expect_error(tmp_path, tiny_model_dir, bad, f"adapter tensor {moved}",
                 "model.layers.7.self_attn.q_proj.weight, which the base")


def test_other_peft_adapters_are_refused(tmp_path: Path, tiny_model_dir: Path, adapter: Path) -> None:
    bad = tmp_path / "ia3"
    shutil.copytree(adapter, bad)
    edit_json(bad / "adapter_config.json", lambda c: c.update(peft_type="IA3"))
    expect_error(tmp_path, tiny_model_dir, bad, "peft IA3 adapter; only LoRA adapters")


def test_missing_and_non_model_folders(tmp_path: Path, tiny_model_dir: Path) -> None:
    expect_error(tmp_path, tiny_model_dir, tmp_path / "nowhere", "not found")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path, tiny_model_dir, tmp_path / "empty", "neither config.json")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_model_dir / "config.json", no_weights / "config.json")
    expect_error(tmp_path, tiny_model_dir, no_weights, "no model.safetensors")


def test_duplicate_inputs_and_overlapping_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    a = variant(tiny_model_dir, tmp_path / "a", {UP: 1.0})
    with pytest.raises(UserError, match=re.escape(f"models.1.path: {a} is the same folder as models.0.path")):
        merge(tmp_path / "out", tiny_model_dir, [(a, 1.0), (a, 1.0)], method="linear")
    # The shared output-folder check (every stage's) refuses an output that is, or lies inside, an input.
    with pytest.raises(UserError, match=f"output_dir {re.escape(str(a))}: is also an input of this command"):
        merge(a, tiny_model_dir, [(a, 1.0)], method="linear")
    with pytest.raises(UserError, match="output_dir .*inside: lies inside an input folder"):
        merge(tiny_model_dir / "inside", tiny_model_dir, [(a, 1.0)], method="linear")
    with pytest.raises(UserError, match="base: model folder .* not found"):
        merge(tmp_path / "out", tmp_path / "no_base", [(a, 1.0)], method="linear")
