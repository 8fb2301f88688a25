"""posttrain's own ChatML template (``chatml-tools``): SmolLM2's ChatML, extended for tools and assistant-only loss.

It is chosen explicitly: for SmolLM2 when it is fetched (its stock template renders no tools), for the default tiny
test model, and for any ChatML model whose config says ``chat_template: chatml-tools``. Every other model keeps its
own template (:mod:`posttrain.models.templates`).

What it renders (see docs/CONTRACTS.md, "Models, chat templates, tool formats"):

- a system block (the first message when its role is ``system``, else SmolLM2's default system prompt) that lists the
  tool schemas Hermes-style, one JSON object per line inside ``<tools></tools>``;
- assistant turns with their content as-is (Hermes ``<tool_call>{...}</tool_call>`` text stays untouched); OpenAI-style
  structured ``tool_calls`` on a message are rendered as the same ``<tool_call>`` text, so nothing a caller gives is
  dropped;
- ``tool`` messages as ``<|im_start|>tool`` turns holding a ``<tool_response>`` block (one turn per message, so the
  rendering of a conversation is a prefix of the rendering of its continuation, which multi-turn rollouts rely on);
- ``{% generation %}`` markers around each assistant turn's content *and* its ``<|im_end|>``, so
  ``return_assistant_tokens_mask=True`` (TRL ``assistant_only_loss=True``) trains the model to stop.
"""

from __future__ import annotations

from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>{"name": <function-name>, "arguments": <args-json-object>}'
    "</tool_call>"
)


def _jinja_str(text: str) -> str:
    """A Python string as a double-quoted Jinja string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


CHAT_TEMPLATE = (
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set system_message = messages[0].content -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_message = " + _jinja_str(DEFAULT_SYSTEM_PROMPT) + " -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system_message -}}"
    "{%- if tools -%}"
    "{{- " + _jinja_str(TOOLS_PREAMBLE) + " -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- " + _jinja_str(TOOLS_POSTAMBLE) + " -}}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- for message in loop_messages -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{%- if message.content is string -%}{{- message.content -}}{%- endif -%}"
    "{%- if message.tool_calls -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set fn = call.function if call.function is defined else call -%}"
    "{%- set args = fn.arguments if fn.arguments is string else (fn.arguments | tojson) -%}"
    "{%- if (message.content is string and message.content) or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>{\"name\": ' + (fn.name | tojson) + ', \"arguments\": ' + args + '}</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- elif message.role == 'tool' -%}"
    "{{- '<|im_start|>tool\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def install_chat_template(tokenizer: Any) -> Any:
    """Put our template on a tokenizer and make ``<|im_end|>`` its end-of-turn (eos) token; returns the tokenizer."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IM_START, IM_END) if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks the ChatML special tokens {missing}; add them first")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = IM_END
    return tokenizer
