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


def load_model(model_dir: Path, lora: LoraSettings | None = None, auto_class: str = "AutoModelForCausalLM") -> tuple[
        Any, Any]:
    """The model with fp32 master weights (mixed precision autocasts from them) and the dtype it was stored in; with
    QLoRA the frozen base in 4-bit NF4 instead (bitsandbytes), prepared for k-bit training."""
    import torch
    import transformers

    cls = getattr(transformers, auto_class)
    if lora is None or lora.quantize is None:
        return cls.from_pretrained(model_dir, dtype=torch.float32), stored_dtype(model_dir)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantized = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
    model = cls.from_pretrained(model_dir, quantization_config=quantized, dtype=torch.bfloat16)
    return prepare_model_for_kbit_training(model), stored_dtype(model_dir)


def peft_config(lora: LoraSettings | None, task_type: str = "CAUSAL_LM") -> Any:
    """peft's ``LoraConfig`` (``SEQ_CLS`` for a reward model: its score head is then trained and saved too)."""
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type=task_type)


def check_lora(lora: LoraSettings | None, model_dir: Path, key: str) -> None:
    """Before any weights load: QLoRA needs a CUDA GPU with bitsandbytes, and every target module must exist in the
    model (checked on an empty-weights copy of its architecture, which costs no memory)."""
    if lora is None:
        return
    if lora.quantize is not None:
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            raise UserError(f"{key}.quantize: {lora.quantize} (QLoRA) loads the base through bitsandbytes, which "
                            "needs a CUDA GPU; this machine has none (remove quantize to train a LoRA on the full "
                            "base)")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError(f"{key}.quantize: {lora.quantize} needs bitsandbytes (pip install bitsandbytes)")
    if lora.target_modules == "all-linear":
        return
    names = module_names(model_dir)
    missing = [t for t in lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        present = sorted({n.rsplit(".", 1)[-1] for n in names if "." in n and not n.rsplit(".", 1)[-1].isdigit()})
        raise UserError(f"{key}.target_modules: {', '.join(missing)} match no module of {model_dir}; its modules "
                        f"are named {', '.join(present[:40])}")


def module_names(model_dir: Path) -> list[str]:
    """The module names of a model folder's architecture, without loading its weights."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return [name for name, _ in model.named_modules() if name]


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
