"""LoRA adapter inputs: check an adapter fits the base, then fold it into a full float32 copy of the base with peft.

Why peft's ``merge_and_unload`` rather than computing ``B @ A * alpha / r`` ourselves: peft already knows every
variant (rsLoRA scaling, DoRA magnitudes, per-module rank/alpha patterns, fan-in-fan-out layers, embedding LoRA,
``modules_to_save``), so the merged weights are exactly what the adapter computes at inference. The copy is kept in
float32 so that the task vector (merged - base) that the merge methods take is not lost to bf16 rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from posttrain.errors import UserError
from posttrain.merging.inputs import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MergeInput

PREFIX = "base_model.model."
# Adapter tensor suffix -> how its shape relates to the base weight it adapts.
LORA_SUFFIXES = {
    ".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_embedding_A": "embA", ".lora_embedding_B": "embB",
}


def _base_name(adapter_tensor: str) -> tuple[str, str | None]:
    """``base_model.model.x.q_proj.lora_A.weight`` -> (``x.q_proj.weight``, "A"); other tensors keep their name."""
    name = adapter_tensor.removeprefix(PREFIX)
    for suffix, role in LORA_SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".weight", role
    return name.replace(".base_layer.", "."), None


def check_adapter(item: MergeInput, base: Path, base_shapes: dict[str, tuple[int, ...]]) -> None:
    """Every LoRA pair must target a base weight with matching shape (B @ A has the weight's shape)."""
    fan_in_fan_out = bool(json.loads((item.path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("fan_in_fan_out"))
    with safe_open(item.path / ADAPTER_WEIGHTS, framework="pt") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    if not shapes:
        raise UserError(f"{item.key}: {item.path / ADAPTER_WEIGHTS} holds no tensors")
    for name, shape in shapes.items():
        target, role = _base_name(name)
        if target not in base_shapes:
            if role is None:
                continue  # e.g. a tied lm_head in modules_to_save: peft resolves it against the loaded model
            raise UserError(f"{item.key}: {item.path}: adapter tensor {name} adapts {target}, which the base "
                            f"{base} does not have; was this adapter trained on another model?")
        want = base_shapes[target]
        if role is None:
            expected = want
        elif len(shape) != 2 or len(want) != 2:
            continue  # convolution LoRA: peft checks it when loading
        elif role == "A":  # (r, in)
            expected = (shape[0], want[0] if fan_in_fan_out else want[1])
        elif role == "B":  # (out, r)
            expected = (want[1] if fan_in_fan_out else want[0], shape[1])
        elif role == "embA":  # (r, num_embeddings)
            expected = (shape[0], want[0])
        else:  # embB: (embedding_dim, r)
            expected = (want[1], shape[1])
        if shape != expected:
            raise UserError(f"{item.key}: {item.path}: adapter tensor {name} has shape {list(shape)}, which does not "
                            f"fit the base {base} tensor {target} of shape {list(want)}")


def merge_adapter(item: MergeInput, base: Path, out_dir: Path) -> Path:
    """Load the base in float32, apply the adapter, fold it in and save a full model folder (weights + config)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(model, item.path, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:  # size mismatches, missing target modules
        raise UserError(f"{item.key}: {item.path}: peft cannot apply this adapter to the base {base}: {e}") from None
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir)
    return out_dir
