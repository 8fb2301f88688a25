"""The ``preference`` recipe kind (format adapter, columns, filters) and the shipped preference sample data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from posttrain.data import build_dataset, load_built
from posttrain.data.formats import adapt
from posttrain.data.sources import MalformedRow
from posttrain.errors import UserError
from posttrain.preference import samples

ROOT = Path(__file__).resolve().parent.parent
U = {"role": "user", "content": "What is 2 + 2?"}
GOOD = {"role": "assistant", "content": "2 + 2 = 4."}
BAD = {"role": "assistant", "content": "2 + 2 = 5."}


def test_explicit_prompt_with_strings_and_messages() -> None:
    row = adapt("preference", {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5.",
                               "system": "Be brief."})
    assert row == {"prompt": [{"role": "system", "content": "Be brief."}, U], "chosen": [GOOD], "rejected": [BAD]}
    row = adapt("preference", {"prompt": [U], "chosen": [GOOD], "rejected": [BAD]})
    assert row == {"prompt": [U], "chosen": [GOOD], "rejected": [BAD]}


def test_implicit_prompt_is_the_shared_prefix() -> None:
    sys_msg = {"role": "system", "content": "Be brief."}
    row = adapt("preference", {"chosen": [sys_msg, U, GOOD], "rejected": [sys_msg, U, BAD]})
    assert row == {"prompt": [sys_msg, U], "chosen": [GOOD], "rejected": [BAD]}


@pytest.mark.parametrize("record, reason", [
    ({"prompt": "hi", "chosen": "a"}, "missing key 'rejected'"),
    ({"prompt": "hi", "chosen": "same", "rejected": "same"}, "identical"),
    ({"prompt": [U, GOOD], "chosen": "x", "rejected": "y"}, "must end with a user"),
    ({"prompt": [U], "chosen": [U, GOOD], "rejected": [BAD]}, "chosen: must start with an assistant"),
    ({"prompt": [U], "chosen": [U], "rejected": [BAD]}, "chosen: no assistant message"),
    ({"prompt": [U], "chosen": [GOOD], "rejected": [{"role": "assistant", "content": " "}]}, "rejected:"),
    ({"chosen": "x", "rejected": "y"}, "no 'prompt'"),
    ({"chosen": [U, GOOD], "rejected": [U, GOOD]}, "chosen:"),
    ({"prompt": [{"role": "wizard", "content": "x"}], "chosen": "x", "rejected": "y"}, "prompt: messages[0]: role"),
])
def test_malformed_pairs_say_why(record: dict, reason: str) -> None:
    with pytest.raises(MalformedRow, match=re.escape(reason)):
        adapt("preference", record)


def test_build_preference_recipe_columns_dedupe_and_malformed_rows(tmp_path: Path) -> None:
    lines = [
        {"prompt": [U], "chosen": [GOOD], "rejected": [BAD]},
        {"prompt": [U], "chosen": [GOOD], "rejected": [BAD]},  # exact duplicate: dropped and counted
        {"prompt": [U], "chosen": [GOOD], "rejected": [{"role": "assistant", "content": "Five."}]},  # another pair
        {"prompt": [U], "chosen": "same", "rejected": "same"},  # malformed: counted with its line
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "r.yaml").write_text("kind: preference\nmax_malformed_fraction: 0.5\n"
                                     "buckets:\n  helpfulness:\n    sources: [{path: pairs.jsonl}]\n")
    manifest = build_dataset(tmp_path / "r.yaml", tmp_path / "out")
    assert manifest["kind"] == "preference"
    assert manifest["columns"] == ["id", "bucket", "source", "prompt", "chosen", "rejected"]
    rows = load_built(tmp_path / "out").to_list()
    assert len(rows) == 2 and {r["rejected"][0]["content"] for r in rows} == {"2 + 2 = 5.", "Five."}
    assert all(r["prompt"] == [U] and r["chosen"] == [GOOD] and r["bucket"] == "helpfulness" for r in rows)
    metrics = manifest["metrics"]
    assert metrics["drops"]["exact_duplicate"] == 1
    assert metrics["malformed"]["count"] == 1 and "identical" in metrics["malformed"]["examples"][0]["reason"]


def test_chat_format_in_a_preference_recipe_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    (tmp_path / "r.yaml").write_text("kind: preference\nbuckets:\n  b:\n    sources: [{path: pairs.jsonl, "
                                     "format: messages}]\n")
    with pytest.raises(UserError, match=r"buckets\.b\.sources\.0\.format: 'messages' makes chat rows"):
        build_dataset(tmp_path / "r.yaml", tmp_path / "out")


def test_shipped_samples_are_reproducible_and_honest(tmp_path: Path) -> None:
    counts = samples.write_preference_samples(tmp_path)
    for name in samples.SAMPLES:
        assert (tmp_path / name).read_bytes() == (ROOT / "data_recipes/samples" / name).read_bytes(), name
    assert counts["preference_helpfulness.jsonl"] >= 150 and counts["preference_safety.jsonl"] >= 60
    capitals = dict(samples.CAPITALS)
    for row in samples.helpfulness():
        question, chosen = row["prompt"][-1]["content"], row["chosen"][0]["content"]
        for country, capital in capitals.items():
            if question.endswith(f"capital of {country}?"):
                assert chosen == f"The capital of {country} is {capital}."
                assert capital not in row["rejected"][0]["content"]
    refusals = 0
    for row in samples.safety():
        request, chosen, rejected = row["prompt"][-1]["content"], row["chosen"][0]["content"], \
            row["rejected"][0]["content"]
        if any(request.endswith(h[0]) for h in samples.HARMFUL):
            refusals += 1
            assert rejected in samples.COMPLIANCE and chosen not in samples.COMPLIANCE
        elif any(request.endswith(b[0]) for b in samples.BENIGN):
            assert rejected in samples.OVER_REFUSALS
    assert refusals == 4 * len(samples.HARMFUL)


def test_shipped_recipes_build(tmp_path: Path) -> None:
    full = build_dataset(ROOT / "data_recipes/preference.yaml", tmp_path / "full")
    assert full["metrics"]["rows"] == 255 and set(full["metrics"]["buckets"]) == {"helpfulness", "safety"}
    assert full["metrics"]["malformed"]["count"] == 0
    tiny = build_dataset(ROOT / "data_recipes/preference_tiny.yaml", tmp_path / "tiny")
    assert {b: v["rows"] for b, v in tiny["metrics"]["buckets"].items()} == {"helpfulness": 32, "safety": 16}
