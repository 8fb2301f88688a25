"""Turn what a user wrote for ``model:`` into a local HF folder, and load model + tokenizer from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.models.fetch import KNOWN_MODELS, fetch_model


def resolve_model(spec: str | Path, key: str = "model") -> Path:
    """A local HF model folder (has ``config.json``) or a known model name (fetched on first use) -> local folder.

    ``key`` names the config key the value came from, so the error says where to look.
    """
    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{key}: {path} is a folder but has no config.json; expected a Hugging Face model folder")
        return path
    if text.lower() in KNOWN_MODELS:
        return fetch_model(text)
    raise UserError(
        f"{key}: model folder {text!r} not found; expected a Hugging Face model folder or one of the known names: "
        + ", ".join(sorted(KNOWN_MODELS))
    )


def load_tokenizer(model_dir: str | Path) -> Any:
    """The folder's tokenizer with our chat template installed (a model fetched elsewhere may carry a plain one)."""
    from transformers import AutoTokenizer

    from posttrain.models.chat_template import install_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    try:
        return install_chat_template(tokenizer)
    except ValueError as e:
        raise UserError(f"{model_dir}: {e}; posttrain trains ChatML models (SmolLM2, Qwen, ...)") from None
