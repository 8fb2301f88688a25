"""Merge inputs: what each folder is (a full HF model or a peft LoRA adapter) and whether it fits the base.

Everything here reads file headers and small JSON files only, never tensor data, so checking two 7B inputs costs
milliseconds. Every mismatch is a UserError naming the config key, the folder and, for weights, the tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safetensors import safe_open

from posttrain.errors import UserError

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Files that make up a tokenizer and its chat template (what the merged model copies from the base).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
)


@dataclass(frozen=True)
class MergeInput:
    """One input folder as found on disk."""

    key: str  # the config key it came from, e.g. "models.1.path", so errors say where to look
    path: Path
    kind: Literal["full", "lora"]


def read_json(path: Path, key: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{key}: {path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{key}: {path}: expected a JSON object, got {type(data).__name__}")
    return data


def inspect_input(path: str | Path, key: str) -> MergeInput:
    """Classify a folder (or a Hub id's snapshot): peft adapter (``adapter_config.json``) or full model
    (``config.json``)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        from posttrain.models.hub import looks_like_hub_id, resolve_hub_model

        if looks_like_hub_id(str(path)):  # a model or adapter on the Hugging Face Hub (through its local cache)
            return inspect_input(resolve_hub_model(str(path), key), key)
        raise UserError(f"{key}: {folder} not found; expected a Hugging Face model folder or a peft LoRA adapter "
                        "folder")
    if (folder / ADAPTER_CONFIG).is_file():
        peft_type = read_json(folder / ADAPTER_CONFIG, key).get("peft_type")
        if peft_type != "LORA":
            raise UserError(f"{key}: {folder} is a peft {peft_type} adapter; only LoRA adapters can be merged")
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise UserError(f"{key}: {folder} has no {ADAPTER_WEIGHTS}; save the adapter with safetensors "
                            "(peft's default)")
        return MergeInput(key, folder, "lora")
    if (folder / "config.json").is_file():
        return MergeInput(key, folder, "full")
    raise UserError(f"{key}: {folder} has neither config.json (a model) nor {ADAPTER_CONFIG} (a peft adapter)")


def weight_files(folder: Path, key: str) -> dict[str, Path]:
    """Tensor name -> safetensors file, for a single-file or sharded checkpoint."""
    if (folder / WEIGHTS_INDEX).is_file():
        weight_map = read_json(folder / WEIGHTS_INDEX, key).get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserError(f"{key}: {folder / WEIGHTS_INDEX}: expected a 'weight_map' object")
        return {name: folder / file for name, file in weight_map.items()}
    if (folder / WEIGHTS).is_file():
        with safe_open(folder / WEIGHTS, framework="pt") as f:
            return dict.fromkeys(f.keys(), folder / WEIGHTS)
    raise UserError(f"{key}: {folder} has no {WEIGHTS} or {WEIGHTS_INDEX}; merging reads safetensors checkpoints "
                    "(re-save the model with save_pretrained)")


def tensor_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Shapes from the safetensors headers (no tensor data is read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    by_file: dict[Path, list[str]] = {}
    for name, file in files.items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        if not file.is_file():
            raise UserError(f"{file}: listed in the checkpoint index but missing")
        with safe_open(file, framework="pt") as f:
            for name in names:
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def model_shapes(folder: Path, key: str) -> dict[str, tuple[int, ...]]:
    return tensor_shapes(weight_files(folder, key))


def check_architecture(base: Path, item: MergeInput) -> None:
    """Same model_type and architectures as the base (tensor shapes are checked separately)."""
    base_cfg = read_json(base / "config.json", "base")
    cfg = read_json(item.path / "config.json", item.key)
    for field in ("model_type", "architectures"):
        if cfg.get(field) != base_cfg.get(field):
            raise UserError(f"{item.key}: {item.path}: config.json {field} is {cfg.get(field)!r} but the base "
                            f"{base} has {base_cfg.get(field)!r}; all inputs must be fine-tuned from the same base")


def check_same_tensors(base: Path, base_shapes: dict[str, tuple[int, ...]], item: MergeInput,
                       shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor of the base is in the input with the same shape, and the input has no others."""
    for name, shape in base_shapes.items():
        if name not in shapes:
            raise UserError(f"{item.key}: {item.path}: tensor {name} of the base {base} is missing")
        if shapes[name] != shape:
            raise UserError(f"{item.key}: {item.path}: tensor {name} has shape {list(shapes[name])} but the base "
                            f"{base} has {list(shape)}")
    extra = sorted(set(shapes) - set(base_shapes))
    if extra:
        raise UserError(f"{item.key}: {item.path}: tensor {extra[0]} is not in the base {base}"
                        + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))


def _vocab(folder: Path) -> dict[str, int]:
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def check_same_tokenizer(base: Path, item: MergeInput) -> None:
    """An input that ships a tokenizer must map every token to the same id as the base's (the merged model uses the
    base's tokenizer, so a different vocabulary would silently scramble that input's embeddings)."""
    if not has_tokenizer(item.path):
        return
    try:
        ours, theirs = _vocab(base), _vocab(item.path)
    except Exception as e:  # a broken tokenizer file is the user's to fix; say which folder
        raise UserError(f"{item.key}: {item.path}: cannot read the tokenizer ({e})") from None
    if ours == theirs:
        return
    for token, i in sorted(theirs.items(), key=lambda kv: kv[1]):
        if ours.get(token) != i:
            where = f"id {ours[token]}" if token in ours else "no id"
            raise UserError(f"{item.key}: {item.path}: tokenizer differs from the base {base}: token {token!r} has "
                            f"id {i} here and {where} in the base; inputs must share the base's vocabulary")
    missing = sorted(set(ours) - set(theirs), key=ours.__getitem__)
    raise UserError(f"{item.key}: {item.path}: tokenizer differs from the base {base}: it lacks the base's token "
                    f"{missing[0]!r} (id {ours[missing[0]]}); vocabulary sizes {len(theirs)} vs {len(ours)}")


def input_manifest(folder: Path) -> dict[str, Any] | None:
    """The stage and metrics of an input written by a posttrain stage (None for folders from elsewhere)."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return {"error": f"unreadable manifest.json: {e}"}  # recorded, not fatal: the weights are what we merge
    if not isinstance(manifest, dict):
        return {"error": "manifest.json is not a JSON object"}
    return {"stage": manifest.get("stage"), "metrics": manifest.get("metrics")}
