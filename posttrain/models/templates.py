"""Chat templates: a model keeps its own, unless the config's ``chat_template`` key names another.

``chat_template`` may be:

- a path to a file holding a Jinja chat template (``templates/mine.jinja``), or to a ``tokenizer_config.json`` /
  ``chat_template.json`` that holds one under ``chat_template``;
- the Jinja text itself (anything containing ``{{`` or ``{%``);
- a template name: ``chatml-tools``, posttrain's extended ChatML (SmolLM2's format with Hermes tools, tool turns and
  ``{% generation %}`` masks; it needs the ``<|im_start|>``/``<|im_end|>`` tokens and makes ``<|im_end|>`` the end of
  turn), or the name of one of the model's own named templates (``tool_use``, ...).

A template given this way is used for training, sampling and evaluation alike, and saved with every model a stage
writes, so the next stage reads it from the folder. posttrain never swaps a template silently: what it uses is logged
and recorded in the manifest (:func:`template_record`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

TEMPLATE_NAMES = ("chatml-tools",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model",
                   "tekken.json", "tiktoken.model")


def read_chat_template(value: str, key: str = "chat_template") -> tuple[str, str]:
    """The config's ``chat_template`` value -> (template text, where it came from). UserError if it is none of a
    file, Jinja text or a template name."""
    text = value.strip()
    if text in TEMPLATE_NAMES:
        from posttrain.models.chat_template import CHAT_TEMPLATE

        return CHAT_TEMPLATE, text
    if "{{" in value or "{%" in value:
        return value, "inline"
    path = Path(text).expanduser()
    if path.is_file():
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{key}: cannot read {path} ({e})") from None
        if path.suffix == ".json":
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as e:
                raise UserError(f"{key}: {path} is not valid JSON ({e})") from None
            raw = data.get("chat_template") if isinstance(data, dict) else None
            if isinstance(raw, list):  # tokenizer_config's named templates: take the default
                raw = next((t.get("template") for t in raw if isinstance(t, dict) and t.get("name") == "default"), None)
            if not isinstance(raw, str):
                raise UserError(f"{key}: {path} holds no 'chat_template' string")
        if not raw.strip():
            raise UserError(f"{key}: {path} is empty; expected a Jinja chat template")
        return raw, str(path)
    if path.suffix in (".jinja", ".j2", ".json", ".txt") or "/" in text:
        raise UserError(f"{key}: file {text!r} not found; expected a chat template file, Jinja text, or one of: "
                        + ", ".join(TEMPLATE_NAMES))
    return "", text  # maybe a name of one of the model's own templates: checked against the tokenizer


def template_text(tokenizer: Any, tools: Any = None) -> str:
    """The template text the tokenizer renders with (the ``default`` one of named templates; ``tool_use`` when
    tools are given and it has one); "" when it has none."""
    try:
        return tokenizer.get_chat_template(tools=tools) or ""
    except ValueError:
        return ""


def template_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_tokenizer(model_dir: str | Path, chat_template: str | None = None, *, key: str = "chat_template",
                   need_template: bool = True) -> Any:
    """The folder's tokenizer with its own chat template, or the one ``chat_template`` names (see the module doc).

    ``key`` names the config key in messages. ``need_template``: a tokenizer with no template at all (a base model)
    is a UserError naming the key, since chat stages cannot render a conversation without one.
    """
    from transformers import AutoTokenizer

    folder = Path(model_dir)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{folder}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES[:4])}); a model "
                        "folder needs its tokenizer saved beside the weights (tokenizer.save_pretrained(folder))")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"{folder}: the tokenizer does not load ({type(e).__name__}: {str(e)[:300]})") from None
    source = "model"
    if chat_template is not None:
        text, source = read_chat_template(chat_template, key)
        if not text:  # a name: one of the tokenizer's own named templates
            own = tokenizer.chat_template if isinstance(tokenizer.chat_template, dict) else {}
            if source not in own:
                names = ", ".join([*TEMPLATE_NAMES, *sorted(own)])
                raise UserError(f"{key}: {chat_template!r} is not a file, Jinja text or a template name; expected one "
                                f"of: {names} (or a path to a .jinja file)")
            text, source = own[source], f"model:{source}"
        if source == "chatml-tools":
            from posttrain.models.chat_template import install_chat_template

            try:
                install_chat_template(tokenizer)
            except ValueError as e:
                raise UserError(f"{key}: chatml-tools: {e}; this model's vocabulary is not ChatML, so give its own "
                                "template or a template file instead") from None
        else:
            tokenizer.chat_template = text
    elif need_template and not template_text(tokenizer):
        raise UserError(f"{folder}: the tokenizer has no chat template (a base model?); set {key} to a template file, "
                        f"Jinja text or one of: {', '.join(TEMPLATE_NAMES)}")
    tokenizer.posttrain_template_source = source  # what template_record reports
    return tokenizer


def template_record(tokenizer: Any) -> dict[str, Any]:
    """Which template a tokenizer renders with, for logs and manifests."""
    text = template_text(tokenizer)
    return {"source": getattr(tokenizer, "posttrain_template_source", "model"),
            "sha256": template_sha256(text) if text else None}


def renders_tools(tokenizer: Any, chat_template: str | None = None) -> bool:
    """Whether the template shows the model the tool schemas it is given (``apply_chat_template(tools=...)``)."""
    sentinel = "posttrain_tool_probe_5f1c"
    tool = {"type": "function", "function": {"name": sentinel, "description": "probe",
                                             "parameters": {"type": "object", "properties": {}}}}
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=[tool], tokenize=False,
                                             add_generation_prompt=True, chat_template=chat_template)
    except Exception:  # a template that refuses tools (or this probe) does not render them
        return False
    return sentinel in text


def check_renders_tools(tokenizer: Any, key: str, what: str) -> None:
    """UserError when ``what`` (rows, tasks) come with tools but the template would not show them to the model."""
    if not renders_tools(tokenizer):
        raise UserError(f"{key}: the chat template ({template_record(tokenizer)['source']}) does not render tool "
                        f"schemas, but {what} come with tools; give a template that does (a template file, or "
                        f"{', '.join(TEMPLATE_NAMES)} for ChatML models)")
