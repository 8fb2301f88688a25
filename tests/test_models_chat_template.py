"""The chat template: SmolLM2's ChatML, Hermes tools, tool responses, and exact assistant-only loss masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

SMOLLM2_ORIGINAL = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOOLS = [
    {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
    {"type": "function", "function": {"name": "weather", "description": "Weather in a city (°C).", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
]
CONVERSATION = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is 17 + 25, and is it warm in Zürich?"},
    {"role": "assistant", "content": 'Let me check.\n<tool_call>{"name": "add", "arguments": {"a": 17, "b": 25}}'
                                     '</tool_call>\n<tool_call>{"name": "weather", "arguments": {"city": "Zürich"}}'
                                     "</tool_call>"},
    {"role": "tool", "content": "42"},
    {"role": "tool", "content": '{"temp_c": 21}'},
    {"role": "assistant", "content": "17 + 25 = 42, and Zürich is at 21 °C."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You're welcome."},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def masked_spans(tok, messages, **kwargs) -> list[str]:
    out = tok.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True, **kwargs)
    spans, current = [], []
    for token_id, bit in zip(out["input_ids"], out["assistant_masks"], strict=True):
        if bit:
            current.append(token_id)
        elif current:
            spans.append(tok.decode(current))
            current = []
    if current:
        spans.append(tok.decode(current))
    return spans


def test_plain_chat_renders_exactly_like_smollm2(tok) -> None:
    for messages in ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]):
        for gen in (False, True):
            ours = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            theirs = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                             chat_template=SMOLLM2_ORIGINAL)
            assert ours == theirs


def test_tools_are_listed_hermes_style_in_the_system_block(tok) -> None:
    text = tok.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou are a careful assistant.\n\n# Tools")
    listed = system.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(line) for line in listed] == TOOLS
    assert "Zürich" in text and "°C" in text  # no \u escapes
    assert "<|im_start|>tool\n<tool_response>\n42\n</tool_response><|im_end|>\n" in text
    assert '<|im_start|>tool\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>\n' in text
    assert CONVERSATION[2]["content"] + "<|im_end|>" in text  # tool-call text as-is


def test_assistant_mask_covers_exactly_the_assistant_turns_with_im_end(tok) -> None:
    spans = masked_spans(tok, CONVERSATION, tools=TOOLS)
    expected = [m["content"] + "<|im_end|>" for m in CONVERSATION if m["role"] == "assistant"]
    assert spans == expected


def test_structured_tool_calls_render_as_hermes_text(tok) -> None:
    messages = [
        {"role": "user", "content": "17 + 25?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "add", "arguments": {"a": 17, "b": 25}}},
            {"type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
        ]},
        {"role": "tool", "content": "42"},
    ]
    spans = masked_spans(tok, messages, tools=TOOLS)
    assert spans == ['<tool_call>{"name": "add", "arguments": {"a": 17, "b": 25}}</tool_call>\n'
                     '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call><|im_end|>']


def test_generation_prompt_and_prefix_stability(tok) -> None:
    for cut in range(2, len(CONVERSATION)):
        head = tok.apply_chat_template(CONVERSATION[:cut], tools=TOOLS, tokenize=False)
        full = tok.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
        assert full.startswith(head)  # multi-turn rollouts extend a conversation by appending tokens
    prompt = tok.apply_chat_template(CONVERSATION[:2], tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    with_answer = tok.apply_chat_template(CONVERSATION[:3], tools=TOOLS, tokenize=False)
    assert with_answer.startswith(prompt)


def test_trl_accepts_the_template_for_assistant_only_loss(tok) -> None:
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tok.chat_template)
    assert is_chat_template_stop_token_trained(tok)
