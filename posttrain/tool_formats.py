"""Tool-call formats per model family: how a model writes its calls, and how posttrain reads them back.

posttrain's own messages (datasets, environments, trajectories, verifiers) keep tool calls in one interchange form,
Hermes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` text in the assistant content
(:mod:`posttrain.tool_calls`). A model sees and writes its family's own form:

=============  ============================================================  =====================================
name           what the model writes                                         families
=============  ============================================================  =====================================
``hermes``     ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``  Qwen2.5/3, Hermes, SmolLM2 (ours)
``llama3_json`` ``{"name": ..., "parameters": {...}}`` as the whole turn      Llama 3.1/3.2/3.3
               (after an optional ``<|python_tag|>``; several joined by
               ``;``)
``mistral``    ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]``, or       Mistral, Mixtral, Ministral
               ``[TOOL_CALLS]name[ARGS]{...}`` (tokenizer v11+)
``json``       a JSON call object or list of them, as the whole turn or in   any other template (the fallback)
               a fenced ```json block
=============  ============================================================  =====================================

A tokenizer that ships its own ``response_template`` (transformers' response parsing) and whose template shows none of
these formats is read with transformers' ``parse_response`` (``response_template``, :class:`ResponseTemplateFormat`).

Rendering goes the transformers way: the calls are given to the chat template as OpenAI ``tool_calls`` and tool
results as ``tool`` messages, and the model's own template writes them (:mod:`posttrain.models.chat`); a format's
:meth:`ToolFormat.render` text is used only for templates that cannot render ``tool_calls``.

Parsing is written here rather than taken from transformers' ``parse_response`` or vLLM's tool parsers, because
model output is untrusted and each malformed call must come back as an error (the environments show it to the model,
the format reward counts it) while the well-formed calls beside it still count: ``parse_response`` raises on the
first bad call (TRL falls back to treating the whole turn as plain text), vLLM's parsers return the whole turn as
content, and both need a tokenizer (vLLM's also vLLM itself, an optional dependency) in the verifier processes that
read trajectories. tests/test_tool_formats.py checks that well-formed output parses to the same calls as
transformers' ``parse_response`` (with TRL's response templates) and vLLM's Hermes and Llama 3 parsers.
Nothing here raises on model output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, ClassVar

from posttrain.errors import UserError
from posttrain.tool_calls import ParsedCalls, ToolCall, format_assistant_message, parse_tool_calls

TOOL_FORMATS = ("hermes", "llama3_json", "mistral", "json")
PYTHON_TAG = "<|python_tag|>"
MISTRAL_CALLS = "[TOOL_CALLS]"
MISTRAL_ARGS = "[ARGS]"
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)```", re.DOTALL)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _call_from(obj: Any, where: str, arg_keys: tuple[str, ...] = ("arguments", "parameters")) -> ToolCall | str:
    """A decoded JSON object -> a ToolCall, or an error string saying what is wrong with it."""
    if not isinstance(obj, dict):
        return f"{where}: expected a JSON object with 'name' and arguments, got {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"{where}: 'name' must be a non-empty string"
    present = [k for k in arg_keys if k in obj]
    extra = sorted(set(obj) - {"name", *arg_keys, "id", "type"})
    if extra or len(present) > 1:
        return f"{where}: unexpected keys {sorted(set(obj) - {'name'})} (expected 'name' and one of {list(arg_keys)})"
    args = obj.get(present[0], {}) if present else {}
    if isinstance(args, str):  # arguments serialised as a JSON string
        try:
            args = _loads(args) if args.strip() else {}
        except (ValueError, RecursionError) as e:
            return f"{where} ({name}): arguments are a string that is not valid JSON ({e!r:.120})"
    if not isinstance(args, dict):
        return f"{where} ({name}): arguments must be a JSON object, got {type(args).__name__}"
    try:  # lone surrogates from \\ud800-style escapes break every UTF-8 writer downstream
        json.dumps(args, ensure_ascii=False).encode("utf-8")
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{where} ({name}): contains invalid unicode (a lone surrogate escape)"
    return ToolCall(name=name.strip(), arguments=args)


def _json_values(text: str) -> tuple[list[Any], str | None, str]:
    """Consecutive JSON values in ``text`` separated by whitespace, ``;`` or ``,`` -> (the values, an error for
    what follows them or None, the text that did not decode)."""
    values: list[Any] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n;,":
            pos += 1
        if pos >= n:
            return values, None, ""
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the decoder's stack
            return values, f"malformed JSON ({type(e).__name__ if isinstance(e, RecursionError) else e})", text[pos:]
        values.append(value)
        pos = end


class ToolFormat:
    """One family's tool-call text. ``parse`` never raises; ``render`` writes calls as that family's text."""

    name: ClassVar[str]

    def parse(self, text: str | None) -> ParsedCalls:
        raise NotImplementedError

    def render(self, content: str, calls: list[ToolCall]) -> str:
        raise NotImplementedError

    def to_canonical(self, text: str | None) -> str:
        """The model's turn in posttrain's interchange form (Hermes blocks): prose, then one block per call; a call
        that does not parse stays as a block holding its text, so every verifier reports it as malformed."""
        parsed = self.parse(text)
        canonical = format_assistant_message(parsed.content, parsed.calls)
        bad = [f"<tool_call>\n{raw}\n</tool_call>" for raw in parsed.invalid]
        return "\n".join(p for p in [canonical, *bad] if p)

    def __repr__(self) -> str:
        return f"ToolFormat({self.name!r})"


class HermesFormat(ToolFormat):
    """``<tool_call>...</tool_call>`` blocks: posttrain's interchange form itself."""

    name = "hermes"

    def parse(self, text: str | None) -> ParsedCalls:
        return parse_tool_calls(text)

    def render(self, content: str, calls: list[ToolCall]) -> str:
        return format_assistant_message(content, calls)

    def to_canonical(self, text: str | None) -> str:
        return text or ""


class _WholeTurnJSON(ToolFormat):
    """Formats where a call is JSON standing for the whole turn (after an optional marker)."""

    marker: ClassVar[str] = ""

    def _calls(self, body: str, parsed: ParsedCalls) -> None:
        """Every call in ``body`` into ``parsed``; what does not decode after them is one more error."""
        values, error, rest = _json_values(body)
        items = [v for value in values for v in (value if isinstance(value, list) else [value])]
        for item in items:
            call = _call_from(item, f"tool call {len(parsed.calls) + len(parsed.errors) + 1}")
            if isinstance(call, ToolCall):
                parsed.calls.append(call)
            else:
                parsed.errors.append(call)
                parsed.invalid.append(json.dumps(item, ensure_ascii=False) if _dumpable(item) else str(item))
        if error is not None or not items:
            parsed.errors.append(f"tool call {len(parsed.calls) + len(parsed.errors) + 1}: "
                                 f"{error or 'no JSON after the call marker'}")
            parsed.invalid.append(rest.strip() or body.strip())


def _dumpable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return True
    except (TypeError, ValueError, UnicodeEncodeError):
        return False


def _new_parsed() -> ParsedCalls:
    return ParsedCalls()


def _looks_like_call(body: str) -> bool:
    """A turn that opens with a JSON object or list naming a "name" is a call attempt, even if it does not parse."""
    stripped = body.lstrip()
    return stripped[:1] in ("{", "[") and '"name"' in stripped


class Llama3JSONFormat(_WholeTurnJSON):
    """Llama 3.1-3.3: ``{"name": ..., "parameters": {...}}`` as the whole turn; ``<|python_tag|>`` may precede it
    and several calls may be joined with ``;``. There is no prose beside calls in this format."""

    name = "llama3_json"

    def parse(self, text: str | None) -> ParsedCalls:
        parsed = _new_parsed()
        body = (text or "").strip()
        tagged = body.startswith(PYTHON_TAG)
        if tagged:
            body = body[len(PYTHON_TAG):]
        if not (tagged or _looks_like_call(body)):
            parsed.content = (text or "").strip()
            return parsed
        self._calls(body, parsed)
        return parsed

    def render(self, content: str, calls: list[ToolCall]) -> str:
        if not calls:
            return content
        return "; ".join(json.dumps({"name": c.name, "parameters": c.arguments}, ensure_ascii=False) for c in calls)


class MistralFormat(_WholeTurnJSON):
    """Mistral: prose, then ``[TOOL_CALLS]`` and a JSON list of calls; or, with v11+ tokenizers, one
    ``[TOOL_CALLS]name[ARGS]{json}`` per call."""

    name = "mistral"

    def parse(self, text: str | None) -> ParsedCalls:
        parsed = _new_parsed()
        text = text or ""
        head, sep, rest = text.partition(MISTRAL_CALLS)
        parsed.content = head.strip()
        if not sep:
            return parsed
        for chunk in rest.split(MISTRAL_CALLS):
            if MISTRAL_ARGS in chunk:  # v11: name[ARGS]{...}
                name, _, args = chunk.partition(MISTRAL_ARGS)
                values, error, _ = _json_values(args)
                if error is not None or len(values) != 1:
                    index = len(parsed.calls) + len(parsed.errors) + 1
                    parsed.errors.append(f"tool call {index}: {error or 'expected one JSON object after [ARGS]'}")
                    parsed.invalid.append(chunk.strip())
                    continue
                call = _call_from({"name": name.strip(), "arguments": values[0]},
                                  f"tool call {len(parsed.calls) + len(parsed.errors) + 1}")
                if isinstance(call, ToolCall):
                    parsed.calls.append(call)
                else:
                    parsed.errors.append(call)
                    parsed.invalid.append(chunk.strip())
            else:
                self._calls(chunk, parsed)
        return parsed

    def render(self, content: str, calls: list[ToolCall]) -> str:
        if not calls:
            return content
        payload = json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls], ensure_ascii=False)
        return f"{content.strip()}{MISTRAL_CALLS}{payload}" if content.strip() else f"{MISTRAL_CALLS}{payload}"


class JSONFormat(_WholeTurnJSON):
    """The fallback for templates with no call syntax of their own: a call object ``{"name", "arguments"}`` (or a
    list of them) as the whole turn or inside a fenced ```json block; prose outside a fence is content."""

    name = "json"

    def parse(self, text: str | None) -> ParsedCalls:
        parsed = _new_parsed()
        text = text or ""
        fences = [m for m in _FENCE.finditer(text) if _looks_like_call(m.group(1))]
        if fences:
            outside, pos = [], 0
            for m in fences:
                outside.append(text[pos:m.start()])
                self._calls(m.group(1), parsed)
                pos = m.end()
            outside.append(text[pos:])
            parsed.content = "".join(outside).strip()
            return parsed
        if _looks_like_call(text):
            self._calls(text, parsed)
            return parsed
        parsed.content = text.strip()
        return parsed

    def render(self, content: str, calls: list[ToolCall]) -> str:
        if not calls:
            return content
        items = [{"name": c.name, "arguments": c.arguments} for c in calls]
        payload = json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)
        return f"{content.strip()}\n```json\n{payload}\n```" if content.strip() else payload


class ResponseTemplateFormat(ToolFormat):
    """The model's own parser: transformers' ``tokenizer.parse_response`` with the ``response_template`` the model
    ships (recent repos do; TRL's ``add_response_schema`` sets one for the families it knows). Used when the template
    shows none of the formats above but the tokenizer has one. A turn the parser refuses is one malformed call."""

    name = "response_template"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def parse(self, text: str | None) -> ParsedCalls:
        parsed = _new_parsed()
        try:
            message = self.tokenizer.parse_response(text or "", prefix="")
        except Exception as e:  # untrusted output: whatever the parser raises is this turn's format error
            parsed.errors.append(f"tool call 1: the model's response template does not parse this turn "
                                 f"({type(e).__name__}: {str(e)[:200]})")
            parsed.invalid.append((text or "").strip())
            return parsed
        message = message if isinstance(message, dict) else {}
        for call in message.get("tool_calls") or []:
            fn = call.get("function", call) if isinstance(call, dict) else call
            where = f"tool call {len(parsed.calls) + len(parsed.errors) + 1}"
            found = _call_from({"name": fn.get("name"), "arguments": fn.get("arguments", {})}
                               if isinstance(fn, dict) else fn, where)
            if isinstance(found, ToolCall):
                parsed.calls.append(found)
            else:
                parsed.errors.append(found)
                parsed.invalid.append(json.dumps(fn, ensure_ascii=False) if _dumpable(fn) else str(fn))
        content = message.get("content")
        parsed.content = content.strip() if isinstance(content, str) else ""
        return parsed

    def render(self, content: str, calls: list[ToolCall]) -> str:
        # Templates with a response template render OpenAI tool_calls themselves; this text is only a fallback.
        return JSONFormat().render(content, calls)


_FORMATS: dict[str, type[ToolFormat]] = {
    "hermes": HermesFormat, "llama3_json": Llama3JSONFormat, "mistral": MistralFormat, "json": JSONFormat,
}


def get_tool_format(name: str, key: str = "tool_format", tokenizer: Any = None) -> ToolFormat:
    """A format by name (``response_template`` needs the ``tokenizer`` that carries one); an unknown name is a
    UserError naming ``key`` and the known ones."""
    if name == "response_template":
        if tokenizer is None or getattr(tokenizer, "response_template", None) is None:
            raise UserError(f"{key}: response_template: this tokenizer ships no response_template; choose one of: "
                            f"{', '.join(TOOL_FORMATS)}")
        return ResponseTemplateFormat(tokenizer)
    cls = _FORMATS.get(name)
    if cls is None:
        raise UserError(f"{key}: unknown tool-call format {name!r}; expected one of: auto, {', '.join(TOOL_FORMATS)}, "
                        "response_template")
    return cls()


def detect_tool_format(chat_template: str | None, vocab: Iterable[str] = ()) -> str:
    """The format a chat template (and vocabulary) shows its model was trained on; ``json`` when it shows none."""
    template = chat_template or ""
    tokens = set(vocab)
    if "<tool_call>" in template:
        return "hermes"
    if MISTRAL_CALLS in template or MISTRAL_CALLS in tokens:
        return "mistral"
    if '"parameters"' in template and (PYTHON_TAG in template or "<|start_header_id|>" in template):
        return "llama3_json"
    return "json"


def canonical_calls(content: str | None) -> ParsedCalls:
    """The calls in a message of posttrain's interchange form (what datasets and environments hold)."""
    return parse_tool_calls(content)
