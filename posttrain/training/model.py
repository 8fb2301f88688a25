"""The model a trainer trains and what it saves: fp32 master weights in, the stored dtype out (a bf16 model stays
bf16), LoRA through peft."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.manifest import file_sha256
from posttrain.training.settings import LoraSettings


def stored_dtype(model_dir: Path) -> Any:
    """The dtype a model folder stores its weights in (what the trained model is saved in)."""
    import torch
    from transformers import AutoConfig

    stored = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None) or torch.float32
    return getattr(torch, stored) if isinstance(stored, str) else stored


def load_model(model_dir: Path) -> tuple[Any, Any]:
    """The model with fp32 master weights (mixed precision autocasts from them) and the dtype it was stored in."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), stored_dtype(model_dir)


def peft_config(lora: LoraSettings | None) -> Any:
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type="CAUSAL_LM")


def save_model(trainer: Any, out: Path, tokenizer: Any, lora: LoraSettings | None, dtype: Any) -> dict[str, str]:
    """Write the trained model into ``out`` (merged weights or a LoRA adapter) with the tokenizer; -> file hashes.

    Full and merged models are saved in ``dtype`` (the input model's stored dtype). Sharded training (DeepSpeed
    ZeRO-3, FSDP) gathers the weights through ``trainer.save_model`` on every process.
    """
    sharded = trainer.is_fsdp_enabled or (
        trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3)
    if sharded:
        if lora is not None and lora.merge:
            raise UserError("lora.merge: merging needs the full weights on one process, which ZeRO-3/FSDP shard; "
                            "set lora.merge=false and merge the saved adapter afterwards")
        trainer.save_model(str(out))
    elif trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        if lora is not None and lora.merge:
            model = model.merge_and_unload()
        if lora is None or lora.merge:
            model = model.to(dtype)
        model.save_pretrained(out)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out)
        return {p.name: file_sha256(p) for p in sorted(out.glob("*.safetensors"))}
    return {}
