"""The config keys that say how a model converses, shared by every stage that renders conversations for a model.
Importing this module imports nothing heavy (configs validate in milliseconds)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from posttrain.config import Schema

ToolFormatName = Literal["auto", "hermes", "llama3_json", "mistral", "json", "response_template"]


class ChatSettings(Schema):
    """``chat_template`` and ``tool_format`` (docs/training.md, "Your model")."""

    chat_template: str | None = Field(
        None, description="the model's own chat template unless set: a .jinja file, Jinja text, chatml-tools "
        "(posttrain's ChatML with tools), or one of the model's named templates")
    tool_format: ToolFormatName = Field(
        "auto", description="how the model writes tool calls: auto (read off its template), hermes (<tool_call>), "
        "llama3_json, mistral ([TOOL_CALLS]), json (the fallback) or response_template (transformers' parser with the "
        "tokenizer's own response_template)")
