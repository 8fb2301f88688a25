"""Recipe schema and checks: every mistake is a UserError naming the recipe file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from posttrain.data.recipe import load_recipe
from posttrain.errors import UserError

CHAT = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I"}]}


def _setup(tmp_path: Path, recipe: dict) -> Path:
    (tmp_path / "chat.jsonl").write_text(json.dumps(CHAT) + "\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _base(**extra) -> dict:
    recipe = {"kind": "chat", "buckets": {"chat": {"sources": [{"path": "chat.jsonl"}]}}}
    recipe.update(extra)
    return recipe


def _error(tmp_path: Path, recipe: dict, overrides: list[str] | None = None) -> str:
    path = _setup(tmp_path, recipe)
    with pytest.raises(UserError) as e:
        load_recipe(path, overrides)
    assert str(path) in e.value.message
    return e.value.message


def test_minimal_recipe_resolves_defaults(tmp_path):
    loaded = load_recipe(_setup(tmp_path, _base()))
    resolved = loaded.resolved()
    assert resolved["seed"] == 0 and resolved["replay_ratio"] == 0.2
    assert resolved["buckets"]["chat"]["share"] == {"weight": 1.0, "count": None, "tokens": None}
    assert resolved["buckets"]["chat"]["sources"][0]["format"] == "messages"  # the kind's default format
    assert resolved["buckets"]["chat"]["filters"] == {"min_tokens": 0, "max_tokens": None, "dedupe": True,
                                                      "near_dedupe": None, "decontaminate": []}


def test_bucket_filters_override_defaults_key_by_key(tmp_path):
    recipe = _base(defaults={"filters": {"min_tokens": 3, "max_tokens": 100, "near_dedupe": True}})
    recipe["buckets"]["chat"]["filters"] = {"max_tokens": 50, "dedupe": False}
    filters = load_recipe(_setup(tmp_path, recipe)).resolved()["buckets"]["chat"]["filters"]
    assert filters["min_tokens"] == 3 and filters["max_tokens"] == 50 and filters["dedupe"] is False
    assert filters["near_dedupe"]["threshold"] == 0.8  # `true` means the default near-dedupe settings


def test_unknown_key_names_key_and_allowed_ones(tmp_path):
    recipe = _base()
    recipe["buckets"]["chat"]["shares"] = {"weight": 1}
    msg = _error(tmp_path, recipe)
    assert "buckets.chat.shares: unknown key" in msg and "share" in msg


def test_wrong_type(tmp_path):
    msg = _error(tmp_path, _base(seed="abc"))
    assert "seed:" in msg and "'abc'" in msg


def test_unknown_kind(tmp_path):
    assert "kind:" in _error(tmp_path, _base(kind="pretraining"))


@pytest.mark.parametrize("share, expect", [
    ({"weight": 1, "count": 5}, "set exactly one of weight, count, tokens; got weight, count"),
    ({}, "set exactly one of weight, count, tokens; got none"),
    ({"weight": -1}, "greater than 0"),
    ({"count": 0}, "greater than or equal to 1"),
    ({"tokens": "many"}, "valid integer"),
])
def test_bad_share(tmp_path, share, expect):
    recipe = _base()
    recipe["buckets"]["chat"]["share"] = share
    msg = _error(tmp_path, recipe)
    assert "buckets.chat.share" in msg and expect in msg


def test_missing_source_file_names_file_and_key(tmp_path):
    recipe = _base()
    recipe["buckets"]["chat"]["sources"].append({"path": "data/missing.jsonl"})
    msg = _error(tmp_path, recipe)
    assert "buckets.chat.sources.1.path: file not found: data/missing.jsonl" in msg


def test_source_needs_exactly_one_location(tmp_path):
    recipe = _base()
    recipe["buckets"]["chat"]["sources"] = [{"path": "chat.jsonl", "hub": "org/name"}]
    assert "buckets.chat.sources.0" in _error(tmp_path, recipe)


def test_format_must_fit_kind(tmp_path):
    recipe = _base()
    recipe["buckets"]["chat"]["format"] = "text"
    msg = _error(tmp_path, recipe)
    assert "buckets.chat.sources.0.format: 'text' makes text rows but the recipe kind is 'chat'" in msg


def test_unknown_format(tmp_path):
    recipe = _base()
    recipe["buckets"]["chat"]["sources"][0]["format"] = "openai"
    assert "buckets.chat.sources.0.format" in _error(tmp_path, recipe)


def test_unknown_eval_set(tmp_path):
    recipe = _base(defaults={"filters": {"decontaminate": ["mmlu"]}})
    msg = _error(tmp_path, recipe)
    assert "buckets.chat.filters.decontaminate: unknown eval set 'mmlu'" in msg and "humaneval" in msg


def test_eval_set_file_missing_and_builtin_name_reserved(tmp_path):
    assert "eval_sets.mine.path: file not found: evals.jsonl" in _error(
        tmp_path, _base(eval_sets={"mine": {"path": "evals.jsonl"}}))
    assert "built-in eval set name" in _error(tmp_path, _base(eval_sets={"humaneval": {"path": "chat.jsonl"}}))


def test_totals_and_replay_rules(tmp_path):
    assert "at most one of total_rows and total_tokens" in _error(tmp_path, _base(total_rows=5, total_tokens=50))
    recipe = _base()
    recipe["buckets"]["chat"]["replay"] = True
    assert "every bucket is marked replay" in _error(tmp_path, recipe)
    recipe["buckets"]["more"] = {"sources": [{"path": "chat.jsonl"}], "replay": True, "share": {"count": 3}}
    recipe["buckets"]["chat"]["replay"] = False
    assert "buckets.more.share: replay buckets are sized by replay_ratio" in _error(tmp_path, recipe)
    assert "replay_ratio" in _error(tmp_path, _base(replay_ratio=1.0))


def test_tokenizer_folder_missing(tmp_path):
    assert "tokenizer: folder not found: tok" in _error(tmp_path, _base(tokenizer="tok"))


def test_overrides_and_seed(tmp_path):
    path = _setup(tmp_path, _base())
    loaded = load_recipe(path, ["buckets.chat.share={count: 7}", "max_malformed_fraction=0.5"], seed=9)
    r = loaded.recipe
    assert r.buckets["chat"].share.count == 7 and r.max_malformed_fraction == 0.5 and r.seed == 9
    with pytest.raises(UserError, match=r"\(with overrides\): max_malformed_fraction"):
        load_recipe(path, ["max_malformed_fraction=2"])


def test_not_a_mapping_and_bad_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_recipe(path)
    path.write_text("kind: [chat\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_recipe(path)


def test_a_bucket_named_twice_is_refused_not_silently_dropped(tmp_path):
    (tmp_path / "chat.jsonl").write_text(json.dumps(CHAT) + "\n")
    path = tmp_path / "recipe.yaml"
    path.write_text("kind: chat\nbuckets:\n  chat:\n    sources: [{path: chat.jsonl}]\n"
                    "  chat:\n    sources: [{path: chat.jsonl}]\n    share: {count: 3}\n")
    with pytest.raises(UserError) as e:
        load_recipe(path)
    assert str(path) in e.value.message and "line 5" in e.value.message and "duplicate key 'chat'" in e.value.message


def test_missing_source_says_it_was_resolved_against_the_recipe_folder(tmp_path):
    msg = _error(tmp_path, _base(buckets={"chat": {"sources": [{"path": "sub/mth.jsonl"}]}}))
    assert f"relative to the recipe's folder {tmp_path}" in msg and str(tmp_path / "sub" / "mth.jsonl") in msg


def test_negative_seed_is_a_user_error(tmp_path):
    path = _setup(tmp_path, _base())
    with pytest.raises(UserError, match="seed"):
        load_recipe(path, seed=-1)
