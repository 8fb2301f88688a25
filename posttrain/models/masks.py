"""Training rows with assistant-only loss masks, for any chat template.

Three ways to find the assistant tokens, tried in this order (:func:`plan_masks`):

1. ``generation_markers``: the template marks assistant turns with ``{% generation %}``; transformers returns the
   mask (``return_assistant_tokens_mask=True``), as TRL's ``assistant_only_loss`` does.
2. ``trl_training_template``: TRL ships a training variant of this family's template (Qwen2.5/3, Llama 3, Gemma,
   Phi-3, DeepSeek, GLM, ...: prefix-preserving and with markers,
   ``trl.chat_template_utils.get_training_chat_template``); the rows are rendered with it. The model keeps (and
   saves) its own template.
3. ``prefix_rendering``: any other template. Each assistant turn is found by rendering the conversation up to it:
   the turn is what ``render(messages[:i+1])`` adds after ``render(messages[:i], add_generation_prompt=True)``, up to
   and including the end-of-turn token the template writes (what the model must generate to stop; text after it,
   such as a newline, is not). A conversation whose rendering rewrites earlier turns as it grows (a thinking
   template that drops old reasoning) is cut into several rows: a new row starts at the first assistant turn whose
   rendered context no longer starts with the previous row, so every trained token is trained in exactly the
   context the template shows at that turn. A template whose assistant turn does not continue its own generation
   prompt cannot be masked this way: a UserError naming the options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from posttrain.errors import UserError
from posttrain.models.chat import ChatFormat, Message
from posttrain.models.templates import template_text

MaskMethod = Literal["generation_markers", "trl_training_template", "prefix_rendering"]
_SENTINEL = "\x00posttrain-turn\x00"


@dataclass(frozen=True)
class MaskPlan:
    """How a template's assistant tokens are found, and the template the training rows are rendered with."""

    method: MaskMethod
    template: str | None  # None: the tokenizer's own
    detail: str

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "detail": self.detail}


@dataclass(frozen=True)
class TrainingRow:
    input_ids: list[int]
    assistant_masks: list[int]


def plan_masks(chat: ChatFormat) -> MaskPlan:
    """The first of the three methods (module doc) that applies to this template."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    text = template_text(chat.tokenizer)
    if has_generation_markers(text):
        return MaskPlan("generation_markers", None, "the template's {% generation %} markers")
    try:
        training = get_training_chat_template(chat.tokenizer)
    except (ValueError, TypeError):  # TRL has no training variant of this template
        training = None
    except Exception:  # TRL's probes render sample conversations; a template that breaks on them has no variant
        training = None
    if training:
        return MaskPlan("trl_training_template", training,
                        "TRL's training variant of this family's template (prefix-preserving, with {% generation %} "
                        "markers); the saved model keeps its own template")
    return MaskPlan("prefix_rendering", None,
                    "derived by rendering each conversation's prefixes (the template has no {% generation %} markers "
                    "and TRL ships no training variant of it)")


def training_rows(chat: ChatFormat, messages: list[Message], tools: list[dict[str, Any]] | None, plan: MaskPlan,
                  *, assistant_only: bool = True, where: str = "") -> list[TrainingRow]:
    """One conversation (interchange messages) -> its training rows (one, or more when ``prefix_rendering`` finds
    a template that rewrites history). ``assistant_only`` False: one row in the model's own template, every token
    trained."""
    tok = chat.tokenizer
    if not assistant_only:  # every token: the model's own template, no masks needed
        text = chat.render(chat.model_messages(messages, tools), tools)
        ids = _encode(tok, text)[0]
        return [TrainingRow(ids, [1] * len(ids))]
    view = chat.model_messages(messages, tools, plan.template)
    if plan.method != "prefix_rendering":
        out = tok.apply_chat_template(view, tools=tools or None, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True, chat_template=plan.template)
        return [TrainingRow(list(out["input_ids"]), [int(b) for b in out["assistant_masks"]])]
    return [_masked_row(tok, text, spans) for text, spans in _prefix_rows(chat, view, tools, where)]


def _encode(tok: Any, text: str, offsets: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=offsets)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]] if offsets else []


def _masked_row(tok: Any, text: str, spans: list[tuple[int, int]]) -> TrainingRow:
    """Tokenize ``text``; a token is trained when its characters overlap an assistant span."""
    ids, offsets = _encode(tok, text, offsets=True)
    mask = [int(any(a < e and b > s for s, e in spans)) for a, b in offsets]
    return TrainingRow(ids, mask)


def turn_closing(chat: ChatFormat, view: list[Message], tools: list[dict[str, Any]] | None) -> str:
    """What the template writes after an assistant turn's content (found by rendering a sentinel as the content)."""
    probe = chat.render([*view, {"role": "assistant", "content": _SENTINEL}], tools)
    cut = probe.rfind(_SENTINEL)
    return probe[cut + len(_SENTINEL):] if cut >= 0 else ""


def trained_closing(tok: Any, closing: str) -> str:
    """The part of a turn's closing the model must generate: up to and including the first special token (its
    end of turn); without one, the closing without trailing whitespace."""
    specials = sorted({t for t in tok.all_special_tokens if t} | set(tok.get_added_vocab()), key=len, reverse=True)
    first = min(((closing.find(t), t) for t in specials if t in closing), default=None)
    if first is None:
        return closing.rstrip()
    return closing[:first[0] + len(first[1])]


def _prefix_rows(chat: ChatFormat, view: list[Message], tools: list[dict[str, Any]] | None,
                 where: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """(row text, assistant character spans) per row, cutting a new row where the rendering rewrote history."""
    rows: list[tuple[str, list[tuple[int, int]]]] = []
    text, spans = None, []
    for i, message in enumerate(view):
        if message.get("role") != "assistant":
            continue
        prompt = chat.render(view[:i], tools, generation_prompt=True)
        full = chat.render(view[:i + 1], tools)
        if not full.startswith(prompt):
            raise UserError(f"{where}the chat template ({chat.template_source}) does not render an assistant turn as a "
                            "continuation of its generation prompt and has no {% generation %} markers, so assistant "
                            "tokens cannot be told apart; set chat_template to a template with {% generation %} "
                            "markers (a .jinja file), or set train.assistant_only_loss=false")
        closing = turn_closing(chat, view[:i], tools)
        rendered_turn = full[len(prompt):]
        keep = rendered_turn
        if closing and rendered_turn.endswith(closing):
            keep = rendered_turn[:len(rendered_turn) - len(closing)] + trained_closing(chat.tokenizer, closing)
        span = (len(prompt), len(prompt) + len(keep))
        if text is not None and full.startswith(text):
            text, spans = full, [*spans, span]
        else:
            if text is not None:
                rows.append((text, spans))
            text, spans = full, [span]
    if text is None:
        raise UserError(f"{where}no assistant turn to train on")
    rows.append((text, spans))
    return rows


def stop_token_trained(chat: ChatFormat, plan: MaskPlan) -> bool:
    """Whether an assistant turn's trained tokens end on a special token (its end of turn), so the model learns to
    stop (TRL's ``is_chat_template_stop_token_trained`` check, for every mask method)."""
    probe = [{"role": "user", "content": "dummy"}, {"role": "assistant", "content": "dummy"},
             {"role": "user", "content": "dummy"}]
    try:
        rows = training_rows(chat, probe, None, plan)
    except UserError:
        return False
    tok = chat.tokenizer
    special = set(tok.all_special_ids) | set(tok.get_added_vocab().values())
    masked = [t for row in rows for t, m in zip(row.input_ids, row.assistant_masks, strict=True) if m]
    for token in reversed(masked):
        if tok.decode([token]).strip():
            return token in special
    return False
