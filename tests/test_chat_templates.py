"""The model's own chat template (or the config's), its tool-call format, and assistant-only loss masks checked token by
token for the three template families: ChatML/Hermes with thinking (Qwen3's own template), Llama 3 headers with
JSON tool calls (Llama 3.2's own template), and a plain custom template given by the ``chat_template`` key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.errors import UserError
from posttrain.models.chat import answer_view, load_chat, split_reasoning, strip_reasoning
from posttrain.models.masks import MaskPlan, plan_masks, stop_token_trained, training_rows
from posttrain.models.templates import read_chat_template
from posttrain.tool_calls import parse_tool_calls

ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 17, "b": 25}}\n</tool_call>'
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 17 + 25?"},
    {"role": "assistant", "content": f"<think>\nuse the tool\n</think>\n\n{CALL}"},
    {"role": "tool", "content": json.dumps({"name": "add", "result": 42})},
    {"role": "assistant", "content": "<think>\nit said 42\n</think>\n\n17 + 25 = 42."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You're welcome."},
]
# A plain template such as a user might write for a base model: tools as a JSON list, no call syntax of its own (so
# the json tool format), assistant turns closed by the eos token, no {% generation %} markers.
PLAIN_TEMPLATE = (
    "{% if tools %}### tools\n{{ tools | tojson }}\nCall one with a JSON object {\"name\", \"arguments\"}.\n{% endif %}"
    "{% for m in messages %}### {{ m.role }}\n{{ m.content }}{% if m.role == 'assistant' %}<|endoftext|>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}### assistant\n{% endif %}")


def masked_runs(tok, row) -> list[str]:
    runs, current = [], []
    for token, bit in zip(row.input_ids, row.assistant_masks, strict=True):
        if bit:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


@pytest.fixture(scope="module")
def plain_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("templates") / "plain.jinja"
    path.write_text(PLAIN_TEMPLATE)
    return path


def test_template_values_file_text_and_names(plain_template: Path, tmp_path: Path) -> None:
    assert read_chat_template(str(plain_template)) == (PLAIN_TEMPLATE, str(plain_template))
    assert read_chat_template(PLAIN_TEMPLATE) == (PLAIN_TEMPLATE, "inline")
    assert read_chat_template("chatml-tools")[1] == "chatml-tools"
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": PLAIN_TEMPLATE}))
    assert read_chat_template(str(config))[0] == PLAIN_TEMPLATE
    with pytest.raises(UserError, match="sft.yaml: chat_template: file 'nope/t.jinja' not found"):
        read_chat_template("nope/t.jinja", "sft.yaml: chat_template")


def test_models_keep_their_own_template_and_format(tiny_model_dir, tiny_family, plain_template) -> None:
    from trl.chat_template_utils import llama3_2_chat_template, qwen3_chat_template

    from posttrain.models.chat_template import CHAT_TEMPLATE

    cases = [(tiny_model_dir, None, CHAT_TEMPLATE, "hermes"),
             (tiny_family("qwen3"), None, qwen3_chat_template, "hermes"),
             (tiny_family("llama3"), None, llama3_2_chat_template, "llama3_json"),
             (tiny_family("plain"), str(plain_template), PLAIN_TEMPLATE, "json")]
    for folder, override, template, fmt in cases:
        chat = load_chat(folder, override)
        assert chat.tokenizer.chat_template == template and chat.tool_format.name == fmt
        assert chat.record()["template"]["source"] == (str(plain_template) if override else "model")
    with pytest.raises(UserError, match="has no chat template.*chat_template"):
        load_chat(tiny_family("plain"))
    assert load_chat(tiny_family("qwen3"), tool_format="json").tool_format_source == "config"


def test_reasoning_is_split_off_the_final_answer() -> None:
    assert split_reasoning("<think>\nhm\n</think>\n\n42") == ("hm", "42")
    assert split_reasoning("hm</think>42") == ("hm", "42")  # the generation prompt opened the block
    assert split_reasoning("<think>never closed") == ("never closed", "")
    assert split_reasoning("no markers") == (None, "no markers")
    assert strip_reasoning(CONVERSATION[2]["content"]) == CALL
    judged = answer_view(CONVERSATION)
    assert judged[4]["content"] == "17 + 25 = 42." and judged[1] == CONVERSATION[1]


def test_llama3_sees_calls_in_its_own_format(tiny_family) -> None:
    """Interchange (Hermes) calls become OpenAI tool_calls that Llama 3.2's template writes as its JSON; two calls in
    one turn (which the template refuses) are written as the format's text instead."""
    chat = load_chat(tiny_family("llama3"))
    view = chat.model_messages(CONVERSATION, [ADD])
    assert view[2]["tool_calls"] == [{"type": "function", "function": {"name": "add", "arguments": {"a": 17, "b": 25}}}]
    text = chat.render(view, [ADD])
    assert '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "add", "parameters": {"a": 17, "b": 25}}' \
           '<|eot_id|>' in text and "<tool_call>" not in text
    assert '"name": "add"' in text.split("<|eot_id|>")[1]  # the tool schema is shown to the model
    two = [CONVERSATION[1], {"role": "assistant", "content": CALL + "\n" + CALL.replace("17", "1")}]
    text = chat.render(chat.model_messages(two, [ADD]), [ADD])
    assert '{"name": "add", "parameters": {"a": 17, "b": 25}}; {"name": "add", "parameters": {"a": 1, "b": 25}}' \
           in text
    assert parse_tool_calls(chat.from_model('{"name": "add", "parameters": {"a": 1, "b": 2}}')).calls[0].name == "add"


def test_masks_token_by_token_for_three_families(tiny_model_dir, tiny_family, plain_template) -> None:
    """The trained tokens of each family are exactly what the model writes in each assistant turn, its end-of-turn
    token included; every other token is context."""
    cases = {
        "chatml": (tiny_model_dir, None, "generation_markers",
                   [f"<think>\nuse the tool\n</think>\n\n{CALL}<|im_end|>",
                    "<think>\nit said 42\n</think>\n\n17 + 25 = 42.<|im_end|>", "You're welcome.<|im_end|>"]),
        "qwen3": (tiny_family("qwen3"), None, "trl_training_template",
                  [f"<think>\nuse the tool\n</think>\n\n{CALL}<|im_end|>\n",
                   "<think>\nit said 42\n</think>\n\n17 + 25 = 42.<|im_end|>\n",
                   "<think>\n\n</think>\n\nYou're welcome.<|im_end|>\n"]),
        "llama3": (tiny_family("llama3"), None, "prefix_rendering",
                   ['{"name": "add", "parameters": {"a": 17, "b": 25}}<|eot_id|>',
                    "<think>\nit said 42\n</think>\n\n17 + 25 = 42.<|eot_id|>", "You're welcome.<|eot_id|>"]),
        "plain": (tiny_family("plain"), str(plain_template), "prefix_rendering",
                  ['<think>\nuse the tool\n</think>\n\n{"name": "add", "arguments": {"a": 17, "b": 25}}<|endoftext|>',
                   "<think>\nit said 42\n</think>\n\n17 + 25 = 42.<|endoftext|>", "You're welcome.<|endoftext|>"]),
    }
    for family, (folder, override, method, expected) in cases.items():
        chat = load_chat(folder, override)
        plan = plan_masks(chat)
        assert plan.method == method, family
        assert stop_token_trained(chat, plan), family
        [row] = training_rows(chat, CONVERSATION, [ADD], plan)
        tok = chat.tokenizer
        assert masked_runs(tok, row) == expected, family
        full = chat.render(chat.model_messages(CONVERSATION, [ADD], plan.template), [ADD], chat_template=plan.template)
        assert tok.decode(row.input_ids) == full, family  # nothing added or lost around the masks
        [everything] = training_rows(chat, CONVERSATION, [ADD], plan, assistant_only=False)
        assert all(everything.assistant_masks) and tok.decode(everything.input_ids) == chat.render(
            chat.model_messages(CONVERSATION, [ADD]), [ADD])


def test_prefix_rendering_forks_rows_where_the_template_rewrites_history(tiny_family) -> None:
    """Qwen3's own template (no markers) drops the reasoning of turns before the latest user message: masked by
    prefix rendering, the conversation becomes two rows, each turn trained once in the context it is shown in."""
    chat = load_chat(tiny_family("qwen3"))
    first, second = training_rows(chat, CONVERSATION, [ADD], MaskPlan("prefix_rendering", None, ""))
    tok = chat.tokenizer
    assert masked_runs(tok, first) == [f"<think>\nuse the tool\n</think>\n\n{CALL}<|im_end|>",
                                       "<think>\nit said 42\n</think>\n\n17 + 25 = 42.<|im_end|>"]
    assert masked_runs(tok, second) == ["<think>\n\n</think>\n\nYou're welcome.<|im_end|>"]
    context = tok.decode(second.input_ids)
    assert "use the tool" not in context and "<|im_start|>assistant\n17 + 25 = 42.<|im_end|>" in context
    view = chat.model_messages(CONVERSATION, [ADD])
    assert tok.decode(second.input_ids) == chat.render(view, [ADD])  # the row is the template's own rendering


def test_templates_that_cannot_be_masked_or_show_tools_are_refused(tiny_family) -> None:
    # The assistant turn does not continue the generation prompt ("### reply" vs "### assistant"), no markers.
    odd = ("{% for m in messages %}### {{ 'reply' if m.role == 'assistant' else m.role }}\n{{ m.content }}\n"
           "{% endfor %}{% if add_generation_prompt %}### assistant\n{% endif %}")
    chat = load_chat(tiny_family("plain"), odd)
    with pytest.raises(UserError, match=r"row 3: the chat template .* does not render an assistant turn as a "
                                        r"continuation.*\{% generation %\}.*assistant_only_loss=false"):
        training_rows(chat, CONVERSATION[:3], None, plan_masks(chat), where="row 3: ")
    no_tools = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    chat = load_chat(tiny_family("plain"), no_tools)
    with pytest.raises(UserError, match="does not render tool schemas, but rows of x come with tools"):
        chat.check_tools("chat_template", "rows of x")
