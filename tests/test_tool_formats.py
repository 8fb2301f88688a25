"""Tool-call formats per model family: parsing (never raising), translation to the interchange form, detection from
real templates, and agreement with transformers' response parser and vLLM's tool parsers on well-formed output."""

from __future__ import annotations

import json
import random

import pytest

from posttrain.errors import UserError
from posttrain.tool_calls import ToolCall, parse_tool_calls
from posttrain.tool_formats import TOOL_FORMATS, detect_tool_format, get_tool_format

ADD = ToolCall("add", {"a": 1, "b": [2, 3]})
MUL = ToolCall("mul", {})


def calls(fmt: str, text: str) -> list[ToolCall]:
    parsed = get_tool_format(fmt).parse(text)
    assert not parsed.errors, parsed.errors
    return parsed.calls


def test_llama3_json_whole_turn_calls() -> None:
    assert calls("llama3_json", '{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}') == [ADD]
    assert calls("llama3_json", '<|python_tag|>{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}') == [ADD]
    assert calls("llama3_json", '{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}; {"name": "mul", '
                 '"parameters": {}}') == [ADD, MUL]
    plain = get_tool_format("llama3_json").parse("The answer is {4}.")
    assert plain.calls == [] and plain.errors == [] and plain.content == "The answer is {4}."
    bad = get_tool_format("llama3_json").parse('{"name": "add", "parameters": {"a": 1')
    assert bad.calls == [] and bad.errors and "malformed JSON" in bad.errors[0]


def test_mistral_both_generations_of_the_format() -> None:
    assert calls("mistral", '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}, '
                 '{"name": "mul", "arguments": {}}]') == [ADD, MUL]
    assert calls("mistral", '[TOOL_CALLS]add[ARGS]{"a": 1, "b": [2, 3]}[TOOL_CALLS]mul[ARGS]{}') == [ADD, MUL]
    parsed = get_tool_format("mistral").parse('Let me add.[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, '
                                              '"b": [2, 3]}}]')
    assert parsed.content == "Let me add." and parsed.calls == [ADD]
    half = get_tool_format("mistral").parse('[TOOL_CALLS]add[ARGS]{"a": 1, "b": [2, 3]}[TOOL_CALLS]mul[ARGS]{"x"')
    assert half.calls == [ADD] and len(half.errors) == 1  # the good call counts, the bad one is reported


def test_plain_json_fallback() -> None:
    assert calls("json", '{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}') == [ADD]
    assert calls("json", '[{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}, {"name": "mul"}]') == [ADD, MUL]
    fenced = get_tool_format("json").parse('I will add.\n```json\n{"name": "add", "arguments": {"a": 1, "b": [2, '
                                           '3]}}\n```\nThen report.')
    assert fenced.calls == [ADD] and fenced.content == "I will add.\n\nThen report."
    prose = get_tool_format("json").parse('Here is JSON: ```json\n{"x": 1}\n```')
    assert prose.calls == [] and prose.errors == []  # a JSON answer that is not a call stays content
    wrong = get_tool_format("json").parse('{"name": "add", "arguments": 3}')
    assert wrong.calls == [] and "arguments must be a JSON object" in wrong.errors[0]


def test_bad_calls_reach_the_interchange_form_as_malformed_blocks() -> None:
    """What the model wrote in its own format becomes Hermes blocks; a call that does not parse stays a block holding
    its text, so the environment's Hermes parser reports it (and the format reward counts it)."""
    fmt = get_tool_format("llama3_json")
    good = parse_tool_calls(fmt.to_canonical('{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}'))
    assert good.calls == [ADD] and good.errors == []
    bad = parse_tool_calls(fmt.to_canonical('{"name": "add", "parameters": {"a": 1'))
    assert bad.calls == [] and bad.errors and "malformed JSON" in bad.errors[0]
    mixed = parse_tool_calls(get_tool_format("json").to_canonical('[{"name": "add", "arguments": {"a": 1, "b": '
                                                                 '[2, 3]}}, {"name": ""}]'))
    assert mixed.calls == [ADD] and len(mixed.errors) == 1
    assert get_tool_format("hermes").to_canonical("<tool_call>x") == "<tool_call>x"  # already the interchange form


def test_render_then_parse_round_trips() -> None:
    for name in TOOL_FORMATS:
        fmt = get_tool_format(name)
        assert fmt.parse(fmt.render("", [ADD, MUL])).calls == [ADD, MUL]
        assert fmt.parse(fmt.render("plain words", [])).calls == []


def test_untrusted_output_never_raises() -> None:
    """Mutations of well-formed calls (cut, doubled, nested deep, unicode escapes) in every format."""
    rng = random.Random(0)
    seeds = ['{"name": "add", "parameters": {"a": 1}}', '[TOOL_CALLS][{"name": "a", "arguments": {}}]',
             '[TOOL_CALLS]a[ARGS]{"x": "\\ud800"}', '```json\n{"name": "a", "arguments": {"k": NaN}}\n```',
             '<tool_call>{"name": "a"}</tool_call>', '<|python_tag|>' + "[" * 5000, '{"name": ' + "{" * 5000]
    for name in TOOL_FORMATS:
        fmt = get_tool_format(name)
        for seed in seeds:
            for _ in range(40):
                cut = seed[:rng.randrange(len(seed) + 1)] + seed[rng.randrange(len(seed)):]
                parsed = fmt.parse(cut)
                assert isinstance(parsed.calls, list) and isinstance(parsed.errors, list)
                parse_tool_calls(fmt.to_canonical(cut))
    assert get_tool_format("json").parse(None).calls == []


def test_unknown_format_names_the_key() -> None:
    with pytest.raises(UserError, match=r"sft.yaml: tool_format: unknown tool-call format 'xml'.*hermes, llama3_json"):
        get_tool_format("xml", key="sft.yaml: tool_format")


def test_formats_are_detected_from_real_templates() -> None:
    from trl.chat_template_utils import llama3_1_chat_template, llama3_2_chat_template, qwen3_chat_template

    from posttrain.models.chat_template import CHAT_TEMPLATE

    assert detect_tool_format(qwen3_chat_template) == "hermes"
    assert detect_tool_format(CHAT_TEMPLATE) == "hermes"
    assert detect_tool_format(llama3_1_chat_template) == "llama3_json"
    assert detect_tool_format(llama3_2_chat_template) == "llama3_json"
    assert detect_tool_format("{{ messages }}", vocab=["[TOOL_CALLS]", "a"]) == "mistral"
    assert detect_tool_format("{% for m in messages %}{{ m.content }}{% endfor %}") == "json"


def test_parses_like_transformers_response_parser(tiny_family) -> None:
    """transformers' parse_response with TRL's response templates for Qwen3 and Llama 3 finds the same calls."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema

    qwen = add_response_schema(AutoTokenizer.from_pretrained(tiny_family("qwen3")))
    llama = add_response_schema(AutoTokenizer.from_pretrained(tiny_family("llama3")))
    cases = [
        (qwen, "hermes", 'Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}\n</tool_call>',
         "<|im_end|>"),
        (qwen, "hermes", '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}\n</tool_call>\n'
                         '<tool_call>\n{"name": "mul", "arguments": {}}\n</tool_call>', "<|im_end|>"),
        (llama, "llama3_json", '{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}', "<|eot_id|>"),
    ]
    for tok, fmt, text, end in cases:
        theirs = tok.parse_response(text + end, prefix="")
        expected = [ToolCall(c["function"]["name"], c["function"]["arguments"]) for c in theirs["tool_calls"]]
        assert get_tool_format(fmt).parse(text).calls == expected
        assert get_tool_format(fmt).parse(text).content == (theirs.get("content") or "").strip()


def test_parses_like_vllm_tool_parsers(tiny_family) -> None:
    """vLLM's Hermes and Llama 3 JSON tool parsers find the same calls (vLLM imports in ~20 s)."""
    pytest.importorskip("vllm")
    from transformers import AutoTokenizer
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser
    from vllm.tool_parsers.llama_tool_parser import Llama3JsonToolParser

    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    hermes = Hermes2ProToolParser(AutoTokenizer.from_pretrained(tiny_family("qwen3")))
    llama = Llama3JsonToolParser(AutoTokenizer.from_pretrained(tiny_family("llama3")))
    cases = [(hermes, "hermes", 'Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}\n'
                                '</tool_call>'),
             (llama, "llama3_json", '{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}; {"name": "mul", '
                                    '"arguments": {}}'),
             (llama, "llama3_json", '<|python_tag|>{"name": "mul", "parameters": {}}')]
    for parser, fmt, text in cases:
        theirs = parser.extract_tool_calls(text, request)
        assert theirs.tools_called
        expected = [ToolCall(c.function.name, json.loads(c.function.arguments)) for c in theirs.tool_calls]
        assert get_tool_format(fmt).parse(text).calls == expected


def test_a_models_own_response_template_is_read_with_transformers(tiny_family) -> None:
    """A tokenizer that ships a response_template (here TRL's for Llama 3, set by add_response_schema) is parsed with
    transformers' parse_response when asked (or when its template shows no known format); a turn the parser refuses
    is one malformed call, never an exception."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import add_response_schema

    from posttrain.models.chat import chat_format

    tok = add_response_schema(AutoTokenizer.from_pretrained(tiny_family("llama3")))
    chat = chat_format(tok, "response_template")
    assert chat.tool_format.name == "response_template"
    good = '{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}<|eot_id|>'
    assert chat.tool_format.parse(good).calls == [ADD] == get_tool_format("llama3_json").parse(good[:-10]).calls
    assert chat.tool_format.parse("Hello there.<|eot_id|>").content == "Hello there."
    broken = chat.tool_format.parse('{"name": "add", "parameters": {"a": 1<|eot_id|>')
    assert broken.calls == [] and broken.errors
    tok.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"  # shows no format: the parser wins
    assert chat_format(tok).tool_format.name == "response_template"
    with pytest.raises(UserError, match="ships no response_template"):
        chat_format(AutoTokenizer.from_pretrained(tiny_family("llama3")), "response_template")
