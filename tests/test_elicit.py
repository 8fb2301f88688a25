"""Confidence elicitation: p_yes against an independent transformers computation, verbalized parsing, and the
sequence likelihood against the engine's own log-probs recomputed with transformers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from posttrain.calibration.elicit import (
    DEFAULT_QUERY,
    ElicitConfig,
    load_calibration,
    p_yes_logits,
    parse_verbalized,
    query_inputs,
    sequence_likelihood,
    sigmoid,
    strip_confidence,
    verbalized_confidences,
    with_instruction,
    yes_no_tokens,
)
from posttrain.errors import UserError

QUESTION = "What is 2 + 2?\n\nGive a short solution and put your final answer in \\boxed{}."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def conversation(answer: str, question: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def test_yes_no_tokens_keep_single_token_words_and_report_the_rest(tiny) -> None:
    _, tok = tiny
    tokens = yes_no_tokens(tok, ["yes", "Yes", "yes indeed"], ["no", "No"])
    for i in tokens.yes_ids + tokens.no_ids:
        assert tok.decode([i]).strip().lower() in ("yes", "no")
    assert "yes indeed" in tokens.skipped
    assert not set(tokens.yes_ids) & set(tokens.no_ids)
    with pytest.raises(UserError, match="elicitation.yes_words: none of"):
        yes_no_tokens(tok, ["yes indeed"], ["no"])
    with pytest.raises(UserError, match="in both yes_words and no_words"):
        yes_no_tokens(tok, ["yes"], ["yes", "no"])


def test_query_inputs_mark_the_answer_span(tiny) -> None:
    _, tok = tiny
    inputs = query_inputs(tok, conversation("It is \\boxed{4}."))
    start, end = inputs.answer_span
    assert tok.decode(inputs.input_ids[start:end]) == "It is \\boxed{4}.<|im_end|>\n"
    text = tok.decode(inputs.input_ids)
    assert text.endswith(f"<|im_start|>user\n{DEFAULT_QUERY}<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="last message must be the assistant"):
        query_inputs(tok, [{"role": "user", "content": "hi"}])


def test_p_yes_equals_softmax_over_yes_no_logits_computed_independently(tiny) -> None:
    model, tok = tiny
    cfg = ElicitConfig(batch_size=2)  # three conversations of different lengths: padding is exercised
    conversations = [conversation("\\boxed{4}"), conversation("I think the answer is \\boxed{5}, because 2 + 3 = 5."),
                     conversation("4", question="Add two and two.")]
    z = p_yes_logits(model, tok, conversations, config=cfg)
    p = sigmoid(z)
    assert z.shape == (3,) and np.all((p >= 0) & (p <= 1))

    tokens = yes_no_tokens(tok, cfg.yes_words, cfg.no_words)
    for k, messages in enumerate(conversations):
        text = tok.apply_chat_template([*messages, {"role": "user", "content": cfg.query}], tokenize=False,
                                       add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), dim=-1)
        yes, no = probs[tokens.yes_ids].sum(), probs[tokens.no_ids].sum()
        assert p[k] == pytest.approx(float(yes / (yes + no)), abs=1e-5)


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is \\boxed{4}. <confidence>0.8</confidence>", 0.8),
    ("<confidence> 85% </confidence>", 0.85),
    ("<CONFIDENCE>1</CONFIDENCE>", 1.0),
    ("<confidence>.25</confidence>", 0.25),
    ("<confidence>0.2</confidence> on second thought <confidence>0.6</confidence>", 0.6),  # the last tag counts
    ("no tag at all", None),
    ("<confidence>high</confidence>", None),
    ("<confidence>80</confidence>", None),  # a bare 80 is neither a probability nor a percentage
    ("<confidence>120%</confidence>", None),
    ("<confidence>-0.5</confidence>", None),
    ("<confidence>0.7", None),  # unclosed
    ("", None),
])
def test_parse_verbalized(text: str, expected: float | None) -> None:
    assert parse_verbalized(text) == (pytest.approx(expected) if expected is not None else None)


def test_verbalized_confidences_fall_back_and_count() -> None:
    conf, parsed = verbalized_confidences(["x <confidence>0.9</confidence>", "nothing", "<confidence>?</confidence>"],
                                          fallback=0.3)
    assert conf.tolist() == [0.9, 0.3, 0.3] and parsed.tolist() == [True, False, False]
    assert strip_confidence("\\boxed{4} <confidence>0.9</confidence>") == "\\boxed{4}"
    messages = with_instruction([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "say it")
    assert messages[-1]["content"] == "q\n\nsay it"
    with pytest.raises(UserError, match="no user message"):
        with_instruction([{"role": "system", "content": "s"}], "say it")


def test_sequence_likelihood_by_hand() -> None:
    assert sequence_likelihood([math.log(0.5), math.log(0.5)]) == pytest.approx(0.5)
    assert sequence_likelihood([math.log(0.9), math.log(0.1)]) == pytest.approx(math.sqrt(0.09))
    assert sequence_likelihood([]) is None
    assert sequence_likelihood([float("nan")]) is None


def test_likelihood_from_engine_logprobs_matches_transformers(tiny, tiny_model_dir) -> None:
    from posttrain.rollout.hf_engine import HFEngine
    from posttrain.rollout.sampling import SamplingParams

    model, tok = tiny
    engine = HFEngine(tiny_model_dir, dtype="float32", seed=0)
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                     add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    sample = engine.generate([prompt_ids], SamplingParams(temperature=0.0, max_tokens=12))[0][0]
    engine.close()
    assert len(sample.logprobs) == len(sample.token_ids) > 0
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + sample.token_ids])).logits[0].double()
    logp = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    reference = logp.gather(-1, torch.tensor(sample.token_ids).unsqueeze(-1)).squeeze(-1)
    expected = math.exp(float(reference.mean()))
    assert sequence_likelihood(sample.logprobs) == pytest.approx(expected, rel=1e-4)
    assert 0.0 < expected <= 1.0


def test_load_calibration_reads_the_settings_saved_with_a_model(tmp_path) -> None:
    assert load_calibration(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"posttrain_calibration": {"temperature": 2.0}}))
    assert load_calibration(tmp_path) == {"temperature": 2.0}
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(UserError, match="calibration.json: not valid JSON"):
        load_calibration(tmp_path)
