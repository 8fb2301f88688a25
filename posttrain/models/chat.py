"""How one model converses: its chat template, its tool-call format, and the translation between posttrain's
interchange messages and what the model sees and writes.

posttrain's messages (datasets, environments, trajectories) hold tool calls as Hermes ``<tool_call>`` text in the
assistant content and tool results as ``tool`` messages (docs/CONTRACTS.md). A model sees them in its own format:

- :meth:`ChatFormat.model_messages`: an assistant message's calls become OpenAI ``tool_calls`` that the model's own
  template writes (the transformers way); a template that cannot render ``tool_calls`` gets the calls as the tool
  format's text instead. For a Hermes-format model the content already is its own format and passes unchanged.
- :meth:`ChatFormat.from_model`: what the model wrote -> the interchange form (its calls as Hermes blocks; a call that
  does not parse stays a block holding its text, so verifiers report it).

Reasoning (``<think>...</think>`` at the start of a turn, as Qwen3, DeepSeek-R1 and other thinking models write it;
or everything before a ``</think>`` when the generation prompt opened the block) stays in the content where the model
wrote it; :func:`strip_reasoning` gives the final answer that verifiers and environments judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, parse_tool_calls
from posttrain.tool_formats import ToolFormat, detect_tool_format, get_tool_format

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
Message = dict[str, Any]


# ------------------------------------------------------------------------------------------------------- reasoning
def split_reasoning(text: str | None) -> tuple[str | None, str]:
    """(reasoning, final answer) of a turn. Reasoning ends at the last ``</think>`` (an opening ``<think>`` is
    optional: some templates open it in the generation prompt); a turn with an unclosed ``<think>`` is all
    reasoning and has no answer; a turn without markers has no reasoning."""
    text = text or ""
    if THINK_CLOSE in text:
        head, _, answer = text.rpartition(THINK_CLOSE)
        reasoning = head.split(THINK_OPEN, 1)[-1] if THINK_OPEN in head else head
        return reasoning.strip("\n"), answer.lstrip("\n")
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN):].strip("\n"), ""
    return None, text


def strip_reasoning(text: str | None) -> str:
    """The final answer of a turn, without its reasoning."""
    return split_reasoning(text)[1]


def answer_view(messages: list[Message]) -> list[Message]:
    """The conversation as verifiers judge it: assistant turns without their reasoning."""
    return [{**m, "content": strip_reasoning(m.get("content"))}
            if m.get("role") == "assistant" and isinstance(m.get("content"), str) else m for m in messages]


# ----------------------------------------------------------------------------------------------------- chat format
@dataclass
class ChatFormat:
    """A tokenizer (with the template to use) and the model's tool-call format."""

    tokenizer: Any
    tool_format: ToolFormat
    tool_format_source: str = "detected"  # "detected" from the template, or "config"
    _probes: dict[str, bool] = field(default_factory=dict, repr=False)

    @property
    def template_source(self) -> str:
        return getattr(self.tokenizer, "posttrain_template_source", "model")

    def record(self) -> dict[str, Any]:
        """What a manifest and the log say about it."""
        from posttrain.models.templates import template_record

        return {"template": template_record(self.tokenizer), "tool_format": self.tool_format.name,
                "tool_format_source": self.tool_format_source}

    # -- what the template can do (probed once) ------------------------------------------------------------------
    def renders_tool_calls(self) -> bool:
        """Whether the template writes OpenAI ``tool_calls`` and ``tool`` results (TRL's check)."""
        if "tool_calls" not in self._probes:
            from trl.chat_template_utils import supports_tool_calling

            try:
                self._probes["tool_calls"] = bool(supports_tool_calling(self.tokenizer))
            except Exception:  # a template that breaks on the probe does not support it
                self._probes["tool_calls"] = False
        return self._probes["tool_calls"]

    def check_tools(self, key: str, what: str) -> None:
        """UserError when ``what`` come with tools but the template does not show tools to the model."""
        if "tools" not in self._probes:
            from posttrain.models.templates import renders_tools

            self._probes["tools"] = renders_tools(self.tokenizer)
        if not self._probes["tools"]:
            from posttrain.models.templates import check_renders_tools

            check_renders_tools(self.tokenizer, key, what)

    # -- interchange <-> model -----------------------------------------------------------------------------------
    def to_model(self, message: Message, structured: bool = True) -> Message:
        """One interchange message as the model sees it (see the module doc)."""
        if message.get("role") != "assistant" or self.tool_format.name == "hermes":
            return dict(message)
        parsed = parse_tool_calls(message.get("content"))
        if not parsed.calls or parsed.errors:  # nothing to translate (or text we must not rewrite)
            return dict(message)
        reasoning, _ = split_reasoning(message.get("content"))
        prose = strip_reasoning(parsed.content)
        # the reasoning stays where the model wrote it, in front of the turn
        think = f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n" if reasoning is not None else ""
        if structured and self.renders_tool_calls():
            calls = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                     for c in parsed.calls]
            return {"role": "assistant", "content": (think + prose).rstrip(), "tool_calls": calls}
        return {"role": "assistant", "content": think + self.tool_format.render(prose, parsed.calls)}

    def model_messages(self, messages: list[Message], tools: list[dict[str, Any]] | None = None,
                       chat_template: str | None = None) -> list[Message]:
        """The conversation as the model sees it. A template that refuses the structured calls (Llama 3 takes one
        call per turn) gets those turns as the tool format's text."""
        view = [self.to_model(m) for m in messages]
        if not any("tool_calls" in m for m in view):
            return view
        from jinja2 import TemplateError

        try:
            self.tokenizer.apply_chat_template(view, tools=tools or None, tokenize=False,
                                               chat_template=chat_template)
        except TemplateError:
            return [self.to_model(m, structured=False) for m in messages]
        return view

    def render(self, view: list[Message], tools: list[dict[str, Any]] | None = None, *,
               generation_prompt: bool = False, chat_template: str | None = None) -> str:
        """Render messages the model sees (:meth:`model_messages`) with the template. A template error is the
        user's (template and data do not fit): a UserError naming ``chat_template``."""
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(view, tools=tools or None, tokenize=False,
                                                      add_generation_prompt=generation_prompt,
                                                      chat_template=chat_template)
        except TemplateError as e:
            roles = [m.get("role") for m in view]
            raise UserError(f"chat_template: the chat template ({self.template_source}) cannot render a "
                            f"conversation with roles {roles}: {e}") from None

    def from_model(self, text: str) -> str:
        """What the model wrote -> the interchange form (reasoning kept in front)."""
        if self.tool_format.name == "hermes":
            return text
        reasoning, answer = split_reasoning(text)
        canonical = self.tool_format.to_canonical(answer)
        if reasoning is None:
            return canonical
        return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{canonical}".rstrip()

    def calls(self, text: str) -> list[ToolCall]:
        """The calls in what the model wrote (its final answer), in its own format."""
        return self.tool_format.parse(strip_reasoning(text)).calls


def chat_format(tokenizer: Any, tool_format: str = "auto", *, key: str = "tool_format") -> ChatFormat:
    """A tokenizer's chat format; ``tool_format`` ``auto`` reads the format off the template."""
    from posttrain.models.templates import template_text

    if tool_format == "auto":
        name = detect_tool_format(template_text(tokenizer), tokenizer.get_vocab().keys())
        if name == "json" and getattr(tokenizer, "response_template", None) is not None:
            name = "response_template"  # the model ships its own parser: prefer it over the plain-JSON fallback
        return ChatFormat(tokenizer, get_tool_format(name, key, tokenizer), "detected")
    return ChatFormat(tokenizer, get_tool_format(tool_format, key, tokenizer), "config")


def load_chat(model_dir: Any, chat_template: str | None = None, tool_format: str = "auto", *,
              source: str = "config") -> ChatFormat:
    """The chat format of a model folder, with the config's ``chat_template`` and ``tool_format`` (``source``
    prefixes the keys in messages)."""
    from posttrain.models.templates import load_tokenizer

    tokenizer = load_tokenizer(model_dir, chat_template, key=f"{source}: chat_template")
    return chat_format(tokenizer, tool_format, key=f"{source}: tool_format")


def describe(chat: ChatFormat) -> str:
    """One line for the log."""
    rec = chat.record()
    return (f"chat template: {rec['template']['source']} (sha256 {str(rec['template']['sha256'])[:12]}); tool calls: "
            f"{rec['tool_format']} ({rec['tool_format_source']})")

