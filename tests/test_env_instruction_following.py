"""The instruction_following environment on if-verifiable's real IFEval checkers: the seeded generator and its
references, partial scores, one pass/fail pair per instruction family, strict and loose modes, no NLTK download
anywhere, bad tasks, and the hacks it is tested against (empty or reasoning-only replies, text whose language cannot
be detected, pasting the instructions back)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from envs.instruction_following import InstructionFollowingEnv
from envs.instruction_following.generator import KWARGS
from posttrain.environment import Trajectory, make_env
from posttrain.errors import UserError


def task(ids: list[str], kwargs: list[dict], prompt: str = "Write about the sea.") -> dict:
    return {"id": "if-test", "env": "instruction_following", "tools": [], "prompt": prompt,
            "messages": [{"role": "user", "content": prompt}], "instruction_id_list": ids, "kwargs": kwargs}


def verify(t: dict, reply: str, **env_kwargs):
    return InstructionFollowingEnv(**env_kwargs).verify(Trajectory(t, [*t["messages"],
                                                                     {"role": "assistant", "content": reply}]))


CASES = [  # instruction, kwargs, a reply that follows it, one that does not
    ("keywords:existence", {"keywords": ["lantern", "harbor"]}, "A lantern by the harbor.", "A lamp by the dock."),
    ("keywords:forbidden_words", {"forbidden_words": ["blue"]}, "The sea is grey.", "The sea is blue."),
    ("keywords:frequency", {"keyword": "wave", "frequency": 3, "relation": "at least"}, "wave wave wave", "wave"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "Calm sea today.",
     "The sea is very calm and quiet today."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Dr. Lee sailed. The sea was calm. We swam.", "Dr. Lee sailed. The sea was calm."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\nTwo.", "One.\n\nTwo."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* salt\n* wind", "* salt\n* wind\n* sun"),
    ("detectable_format:title", {}, "<<The Sea>>\nIt is wide.", "The Sea\nIt is wide."),
    ("detectable_format:json_format", {}, '```json\n{"sea": "wide"}\n```', "sea: wide"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*salt* and *wind*", "*salt* and wind"),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nSalt.\nSECTION 2\nWind.", "SECTION 1\nSalt and wind."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Waves.\n\nP.S. Bring a towel.", "Waves."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Meet [name] at [place].", "Meet me."),
    ("change_case:english_lowercase", {}, "the sea is calm and the sky is clear today.",
     "The sea is calm and the sky is clear today."),
    ("change_case:english_capital", {}, "THE SEA IS CALM AND THE SKY IS CLEAR TODAY.",
     "THE SEA IS CALM and the sky is clear today."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "The SEA is VERY calm.", "The SEA is calm."),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "The sea is calm. Any other questions?",
     "Any other questions? The sea is calm."),
    ("startend:quotation", {}, '"The sea is calm."', "The sea is calm."),
    ("punctuation:no_comma", {}, "Salt and wind and sun.", "Salt, wind, sun."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write about the sea."},
     "Write about the sea. The sea is calm.", "The sea is calm."),
    ("language:response_language", {"language": "fr"},
     "La mer est calme aujourd'hui et le ciel est très clair au-dessus de la plage.",
     "The sea is calm today and the sky is very clear above the beach."),
]


@pytest.mark.parametrize("instruction, kwargs, good, bad", CASES, ids=[c[0] for c in CASES])
def test_each_instruction_passes_and_fails(instruction, kwargs, good, bad) -> None:
    t = task([instruction], [kwargs])
    ok = verify(t, good)
    assert ok.passed and ok.score == 1.0 and ok.details["instructions"][0]["strict"], ok
    no = verify(t, bad)
    assert not no.passed and no.score == 0.0 and no.reasons == [f"not_followed:{instruction}"]


def test_the_score_is_the_fraction_followed_and_loose_mode_forgives_a_first_line() -> None:
    t = task(["punctuation:no_comma", "startend:quotation", "keywords:existence"],
             [{}, {}, {"keywords": ["gull"]}])
    half = verify(t, '"A gull, flying."')
    assert half.score == pytest.approx(2 / 3) and half.reasons == ["not_followed:punctuation:no_comma"]
    framed = task(["startend:quotation"], [{}])
    reply = 'Here is my answer:\n"A gull flies."'
    assert not verify(framed, reply).passed and verify(framed, reply, loose=True).passed


def test_no_nltk_data_is_needed_or_downloaded(monkeypatch, tmp_path) -> None:
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError("nltk tried to download data")

    monkeypatch.setattr(nltk, "download", refuse)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk-data")])
    with pytest.raises(LookupError):  # so the checks below cannot be using NLTK's own punkt data
        nltk.data.load("nltk:tokenizers/punkt/english.pickle")
    env = InstructionFollowingEnv()
    for t in env.generate_tasks(60, seed=11):
        assert env.verify(Trajectory(t, env.reference_trajectory(t))).passed
    for instruction, kwargs, good, _ in CASES:
        assert verify(task([instruction], [kwargs]), good).passed


def test_hacks_empty_undetectable_and_echoed_replies_score_nothing() -> None:
    lowercase = task(["change_case:english_lowercase"], [{}])
    for empty in ("", "   ", "<think>all lowercase, I promise</think>", "<think>still thinking"):
        result = verify(lowercase, empty)
        assert not result.passed and result.score == 0.0, empty
    # the library counts an undetectable language as followed; here it is not
    assert not verify(task(["language:response_language"], [{"language": "en"}]), "12345 ... 678").passed
    assert not verify(task(["change_case:english_capital"], [{}]), "1234 !!!").passed
    keywords = task(["keywords:existence"], [{"keywords": ["lantern", "harbor"]}])
    from envs.instruction_following.checks import build

    description = build("keywords:existence", {"keywords": ["lantern", "harbor"]}, keywords["prompt"],
                        "test").description
    pasted = verify(keywords, f"Sure. {description}")
    assert not pasted.passed and pasted.score == 0.0 and pasted.reasons[0] == "echoes_instructions"


def test_generator_is_seeded_varied_and_every_reference_passes() -> None:
    env = make_env("instruction_following")
    tasks = list(env.generate_tasks(150, seed=5))
    assert tasks == list(env.generate_tasks(150, seed=5))
    assert len({t["id"] for t in tasks}) == 150 and len({t["prompt"] for t in tasks}) > 100
    used = Counter(i for t in tasks for i in t["instruction_id_list"])
    assert set(used) == set(KWARGS)  # every instruction family the generator offers is drawn
    assert {len(t["instruction_id_list"]) for t in tasks} == {1, 2, 3}
    for t in tasks:
        result = env.verify(Trajectory(t, env.reference_trajectory(t)))
        assert result.passed and result.score == 1.0, (t["prompt"], result)
        assert json.loads(json.dumps(t)) == t
    step_env = make_env("instruction_following")
    step_env.reset(tasks[0])
    step = step_env.step({"role": "assistant", "content": tasks[0]["reference_response"]})
    assert step.done and step.reward == 1.0


def test_bad_tasks_are_refused_at_reset_and_are_bad_task_verdicts() -> None:
    env = InstructionFollowingEnv()
    for t, match in [(task(["keywords:nonsense"], [{}]), "unknown instruction 'keywords:nonsense'"),
                     (task(["length_constraints:number_words"], [{"num_words": 10}]), r"needs kwargs \['relation'\]"),
                     (task(["startend:end_checker"], [{"phrase": "x"}]), "does not take kwargs"),
                     (task(["keywords:existence"], [{"keywords": ["(unclosed"]}]), "not a usable pattern"),
                     (task([], []), "non-empty list"),
                     (task(["punctuation:no_comma"], [{}, {}]), "one per instruction")]:
        with pytest.raises(UserError, match=match):
            env.reset(t)
        result = env.verify(Trajectory(t, [*t["messages"], {"role": "assistant", "content": "hi"}]))
        assert result.reasons == ["bad_task"] and result.error
