"""`posttrain merge` end to end on the tiny model: "fine-tuned" variants are copies of the base with known tensors
perturbed, so every expected weight is computed by hand. Also the helpers the other merge tests import."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from posttrain.config import validate
from posttrain.errors import UserError
from posttrain.manifest import model_sha256
from posttrain.stages.merge import MergeConfig, run_merge

UP = "model.layers.0.mlp.up_proj.weight"  # (256, 64)
Q1 = "model.layers.1.self_attn.q_proj.weight"  # (64, 64)
NORM = "model.norm.weight"  # (64,)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def variant(base: Path, out: Path, deltas: dict[str, Any] | None = None,
            edit: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """A copy of ``base`` with ``deltas`` added to the named tensors (and ``edit`` applied to the state dict)."""
    shutil.copytree(base, out)
    state = weights(out)
    for name, delta in (deltas or {}).items():
        state[name] = state[name] + delta
    if edit is not None:
        edit(state)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def make_lora(base: Path, out: Path, seed: int = 0, r: int = 2, alpha: int = 4) -> dict[str, torch.Tensor]:
    """A real peft LoRA adapter on ``base`` (q_proj and v_proj) with known random A and B; returns the expected
    delta ``alpha / r * B @ A`` per base weight name."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    gen = torch.Generator().manual_seed(seed)
    expected = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=gen) * 0.1)
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
                expected[name.removeprefix("base_model.model.") + ".weight"] = (alpha / r) * (b @ a)
    model.save_pretrained(out)
    return expected


def merge(out: Path, base: Path, models: list[tuple[Path, float]], **settings: Any) -> Path:
    data = {"base": str(base), "models": [{"path": str(p), "weight": w} for p, w in models],
            "output_dir": str(out), **settings}
    return run_merge(validate(MergeConfig, data, "test config")).output_dir


def assert_only_changed(merged: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                        expected: dict[str, torch.Tensor]) -> None:
    assert merged.keys() == base.keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, expected.get(name, base[name]), rtol=1e-6, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def linear_merge(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("linear")
    a = variant(tiny_model_dir, root / "chat", {UP: 1.0, NORM: 0.5})
    # an input written by a posttrain stage: its manifest's stage and metrics are carried into the merge's manifest
    (a / "manifest.json").write_text(json.dumps({"stage": "rl_chat", "metrics": {"win_rate": 0.61}, "config": {}}))
    b = variant(tiny_model_dir, root / "logic", {UP: 3.0, Q1: -2.0})
    out = merge(root / "merged", tiny_model_dir, [(a, 1.0), (b, 3.0)], method="linear")
    return {"base": tiny_model_dir, "a": a, "b": b, "out": out}


def test_linear_equals_the_hand_computed_weighted_average(linear_merge: dict[str, Path]) -> None:
    base = weights(linear_merge["base"])
    expected = {UP: base[UP] + (1 * 1.0 + 3 * 3.0) / 4, NORM: base[NORM] + 0.5 / 4, Q1: base[Q1] + 3 * -2.0 / 4}
    assert_only_changed(weights(linear_merge["out"]), base, expected)


def test_output_is_a_model_folder_with_the_base_tokenizer_and_template(linear_merge: dict[str, Path]) -> None:
    base, out = linear_merge["base"], linear_merge["out"]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "manifest.json", "generation_config.json"} <= names
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "float32" and config["architectures"] == ["LlamaForCausalLM"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # staging and scratch folders are gone


def test_merged_model_reloads_in_transformers_and_generates(linear_merge: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = linear_merge["out"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(linear_merge["base"]).chat_template
    torch.testing.assert_close(model.state_dict()[UP], weights(out)[UP])  # the file, not a fresh init
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    new = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert new.shape[1] == inputs["input_ids"].shape[1] + 5


def test_manifest_lists_inputs_parameters_and_distances(linear_merge: dict[str, Path]) -> None:
    base, a, b, out = (linear_merge[k] for k in ("base", "a", "b", "out"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "merge" and manifest["method"] == "linear"
    assert manifest["parameters"] == {"normalize": True}
    assert manifest["inputs"] == {str(p.resolve()): model_sha256(p) for p in (base, a, b)}
    first, second = manifest["models"]
    assert (first["path"], first["weight"], first["kind"], second["weight"]) == (str(a), 1.0, "full", 3.0)
    assert first["manifest"] == {"stage": "rl_chat", "metrics": {"win_rate": 0.61}}
    assert second["manifest"] is None and first["merged_via"] == "mergekit"
    assert manifest["versions"]["mergekit"] and manifest["engine"]["name"] == "mergekit"
    # merged - a: UP differs by 1.5 (256*64 elements), NORM by 0.375 (64), Q1 by 1.5 (64*64)
    to_a = math.sqrt(1.5**2 * 256 * 64 + 0.375**2 * 64 + 1.5**2 * 64 * 64)
    to_b = math.sqrt(0.5**2 * 256 * 64 + 0.125**2 * 64 + 0.5**2 * 64 * 64)
    assert first["l2_merged_to_input"] == pytest.approx(to_a, rel=1e-5)
    assert second["l2_merged_to_input"] == pytest.approx(to_b, rel=1e-5)
    assert first["l2_input_to_base"] == pytest.approx(math.sqrt(256 * 64 + 0.25 * 64), rel=1e-5)
    metrics = manifest["metrics"]
    assert metrics["l2_merged_to_input"] == {str(a): first["l2_merged_to_input"], str(b): second["l2_merged_to_input"]}
    assert metrics["tensors"] == len(weights(base)) and metrics["parameters"] == sum(
        t.numel() for t in weights(base).values())


def test_rerun_is_a_noop_and_a_different_merge_needs_overwrite(tmp_path: Path, linear_merge: dict[str, Path]) -> None:
    base, a, b = (linear_merge[k] for k in ("base", "a", "b"))
    out = merge(tmp_path / "m", base, [(a, 1.0), (b, 3.0)], method="linear")
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    merge(tmp_path / "m", base, [(a, 1.0), (b, 3.0)], method="linear")
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="output_dir: .* exists and holds something else"):
        merge(tmp_path / "m", base, [(a, 1.0), (b, 1.0)], method="linear")
    merge(tmp_path / "m", base, [(a, 1.0), (b, 1.0)], method="linear", overwrite=True)
    torch.testing.assert_close(weights(out)[UP], weights(base)[UP] + 2.0)
    assert json.loads((out / "manifest.json").read_text())["models"][1]["weight"] == 1.0


def test_task_arithmetic_with_one_model_and_lambda_one_reproduces_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    base = weights(tiny_model_dir)
    noise = {name: torch.randn(t.shape, generator=gen) * 0.01 for name, t in base.items()}
    tuned = variant(tiny_model_dir, tmp_path / "tuned", noise)
    out = merge(tmp_path / "ta", tiny_model_dir, [(tuned, 1.0)], method="task_arithmetic", **{"lambda": 1.0})
    merged, expected = weights(out), weights(tuned)
    assert merged.keys() == expected.keys()
    for name in merged:
        torch.testing.assert_close(merged[name], expected[name], rtol=0, atol=1e-6)
    # half the task vector, stored in bfloat16 as asked
    out = merge(tmp_path / "half", tiny_model_dir, [(tuned, 1.0)], method="task_arithmetic", scale=0.5,
                dtype="bfloat16")
    half = weights(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    for name in half:
        assert half[name].dtype == torch.bfloat16
        torch.testing.assert_close(half[name], (base[name] + 0.5 * noise[name]).to(torch.bfloat16))


def ties_reference(base: torch.Tensor, deltas: list[torch.Tensor], weights_: list[float], density: float,
                   scale: float) -> torch.Tensor:
    """TIES written out plainly: top-k by magnitude per tensor, sign of the weighted sum, weighted disjoint mean."""
    trimmed = []
    for d in deltas:
        keep = torch.zeros(d.numel(), dtype=torch.bool)
        keep[d.abs().flatten().topk(max(1, int(density * d.numel()))).indices] = True
        trimmed.append(d * keep.view_as(d))
    w = torch.tensor(weights_).view(-1, *([1] * base.dim()))
    stacked = torch.stack(trimmed) * w
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = stacked.sign() == elected
    divisor = (w * agree).sum(0)
    return base + scale * (stacked * agree).sum(0) / torch.where(divisor == 0, 1.0, divisor)


def test_ties_end_to_end_matches_the_written_out_formula(tmp_path: Path, tiny_model_dir: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    base = weights(tiny_model_dir)
    da, db = torch.randn(base[UP].shape, generator=gen), torch.randn(base[UP].shape, generator=gen)
    dn = torch.randn(base[NORM].shape, generator=gen)
    a = variant(tiny_model_dir, tmp_path / "a", {UP: da, NORM: dn})
    b = variant(tiny_model_dir, tmp_path / "b", {UP: db})
    out = merge(tmp_path / "ties", tiny_model_dir, [(a, 1.0), (b, 2.0)], method="ties", density=0.3, scale=0.8)
    merged = weights(out)
    expected = {UP: ties_reference(base[UP], [da, db], [1.0, 2.0], 0.3, 0.8),
                NORM: ties_reference(base[NORM], [dn, torch.zeros_like(dn)], [1.0, 2.0], 0.3, 0.8)}
    assert_only_changed(merged, base, expected)
    # trimming really happened: 30% of each of two task vectors survive, so at most 60% of UP moved
    moved = (merged[UP] != base[UP]).float().mean().item()
    assert 0.3 <= moved <= 0.6
    assert (merged[NORM] != base[NORM]).sum().item() == int(0.3 * 64)


def test_lora_adapter_inputs_merge_to_the_expected_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    adapter = tmp_path / "adapter"
    lora_delta = make_lora(tiny_model_dir, adapter)
    assert (adapter / "adapter_config.json").is_file() and len(lora_delta) == 4  # q, v in 2 layers
    full = variant(tiny_model_dir, tmp_path / "full", {UP: 1.0})
    out = merge(tmp_path / "m", tiny_model_dir, [(adapter, 1.0), (full, 0.5)], method="task_arithmetic", scale=2.0)
    base = weights(tiny_model_dir)
    expected = {name: base[name] + 2.0 * delta for name, delta in lora_delta.items()}
    expected[UP] = base[UP] + 2.0 * 0.5
    assert_only_changed(weights(out), base, expected)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["models"][0]
    assert entry["kind"] == "lora" and entry["merged_via"].startswith("peft merge_and_unload")
    assert entry["adapter_base_model_name_or_path"] == str(tiny_model_dir)
    assert manifest["engine"]["config"]["models"][0]["model"] == f"{adapter} (LoRA folded into the base)"
    assert entry["l2_input_to_base"] == pytest.approx(
        math.sqrt(sum(float(d.pow(2).sum()) for d in lora_delta.values())), rel=1e-4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the folded copy was removed
