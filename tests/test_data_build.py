"""The build stage: shares and sampling, replay ratio, malformed rows, every source type, tokenizers, determinism."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from posttrain.data import build_dataset, load_built
from posttrain.errors import UserError


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                         {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}


def _jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _recipe(tmp_path: Path, spec: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _buckets(m: dict) -> dict:
    return {n: b["rows"] for n, b in m["metrics"]["buckets"].items()}


def test_count_shares_up_and_down_sampling(tmp_path):
    _jsonl(tmp_path / "small.jsonl", [_chat(i) for i in range(5)])
    _jsonl(tmp_path / "big.jsonl", [_chat(i) for i in range(100, 150)])
    spec = {"kind": "chat", "buckets": {"small": {"sources": [{"path": "small.jsonl"}], "share": {"count": 12}},
                                        "big": {"sources": [{"path": "big.jsonl"}], "share": {"count": 20}}}}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    small, big = m["metrics"]["buckets"]["small"], m["metrics"]["buckets"]["big"]
    assert (small["rows"], small["sampling"], small["max_repeat"]) == (12, "up", 3)
    assert (big["rows"], big["sampling"], big["max_repeat"]) == (20, "down", 1)
    ds = load_built(tmp_path / "out")
    assert len(ds) == 32 and len(set(ds["id"])) == 32  # repeats get their own ids (hash-r1, hash-r2)
    per_question = Counter(r["messages"][0]["content"] for r in ds if r["bucket"] == "small")
    assert sorted(per_question.values()) == [2, 2, 2, 3, 3]  # every row twice, then a sample of 2 more
    assert [s["not_sampled"] for s in m["metrics"]["sources"]] == [0, 30]


def test_weight_shares_with_total_rows_and_natural_size(tmp_path):
    for name, n in (("a", 40), ("b", 40), ("c", 10)):
        _jsonl(tmp_path / f"{name}.jsonl", [_chat(1000 * ord(name) + i) for i in range(n)])
    spec = {"kind": "chat", "total_rows": 50, "buckets": {
        "a": {"sources": [{"path": "a.jsonl"}], "share": {"weight": 2}},
        "b": {"sources": [{"path": "b.jsonl"}], "share": {"weight": 1}},
        "c": {"sources": [{"path": "c.jsonl"}], "share": {"count": 20}}}}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "o1")
    assert _buckets(m) == {"a": 20, "b": 10, "c": 20}  # c takes 20 of the 50; a and b split 30 as 2:1
    del spec["total_rows"]
    spec["buckets"]["c"]["share"] = {"weight": 1}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "o2")
    assert _buckets(m) == {"a": 20, "b": 10, "c": 10}  # the largest 2:1:1 mix that repeats nothing (c has 10)
    spec["total_rows"] = 3
    spec["buckets"]["c"]["share"] = {"count": 5}
    with pytest.raises(UserError, match="total_rows 3 leaves 0 rows for the weight buckets a, b"):
        build_dataset(_recipe(tmp_path, spec), tmp_path / "o3")


def test_token_budgets(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [_chat(i) for i in range(30)])
    _jsonl(tmp_path / "b.jsonl", [_chat(i) for i in range(100, 110)])
    spec = {"kind": "chat", "buckets": {"a": {"sources": [{"path": "a.jsonl"}], "share": {"tokens": 200}},
                                        "b": {"sources": [{"path": "b.jsonl"}], "share": {"tokens": 500}}}}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    a, b = m["metrics"]["buckets"]["a"], m["metrics"]["buckets"]["b"]
    row_tokens = b["available_tokens"] / b["available_rows"]
    assert 200 <= a["tokens"] < 200 + 25 and a["sampling"] == "down"  # met, overshooting by less than one row
    assert 500 <= b["tokens"] < 500 + row_tokens + 2 and b["sampling"] == "up"
    spec["total_tokens"] = 900
    spec["buckets"]["b"]["share"] = {"weight": 1}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    assert m["metrics"]["buckets"]["b"]["target"] == {"tokens": 900 - m["metrics"]["buckets"]["a"]["tokens"]}
    assert 900 <= m["metrics"]["tokens"] < 930


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_replay_ratio(tmp_path, ratio):
    _jsonl(tmp_path / "reason.jsonl", [{"text": f"Step {i}: since {i} + {i} = {2 * i}, the claim holds."}
                                       for i in range(200)])
    _jsonl(tmp_path / "web.jsonl", [{"text": f"Article {i} talks about rivers and mountains."} for i in range(60)])
    _jsonl(tmp_path / "books.jsonl", [{"text": f"Chapter {i} begins on a quiet morning."} for i in range(60)])
    spec = {"kind": "text", "replay_ratio": ratio, "buckets": {
        "reasoning": {"sources": [{"path": "reason.jsonl"}]},
        "web": {"replay": True, "sources": [{"path": "web.jsonl"}], "share": {"weight": 3}},
        "books": {"replay": True, "sources": [{"path": "books.jsonl"}], "share": {"weight": 1}}}}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    replay = m["metrics"]["replay"]
    assert replay["ratio_target"] == ratio and abs(replay["ratio_actual"] - ratio) < 0.01
    web, books = m["metrics"]["buckets"]["web"]["tokens"], m["metrics"]["buckets"]["books"]["tokens"]
    assert abs(web / (web + books) - 0.75) < 0.03
    if ratio == 0.5:  # the replay pool is smaller than needed: it is repeated, and says so
        assert m["metrics"]["buckets"]["web"]["sampling"] == "up"
    ds = load_built(tmp_path / "out")
    assert ds.column_names == ["id", "bucket", "source", "text"]


def _malformed_setup(tmp_path: Path) -> Path:
    rows = [_chat(i) for i in range(8)]
    rows.insert(2, '{"messages": [')  # line 3: invalid JSON
    rows.insert(5, {"messages": [{"role": "user", "content": "unanswered"}]})  # line 6: no assistant turn
    _jsonl(tmp_path / "mixed.jsonl", rows)
    return _recipe(tmp_path, {"kind": "chat", "max_malformed_fraction": 0.25, "max_malformed_examples": 1,
                               "buckets": {"b": {"sources": [{"path": "mixed.jsonl"}], "share": {"count": 8}}}})


def test_malformed_rows_are_counted_and_reported_with_file_and_line(tmp_path):
    m = build_dataset(_malformed_setup(tmp_path), tmp_path / "out")
    bad = m["metrics"]["malformed"]
    assert bad["count"] == 2 and bad["read"] == 10
    assert bad["examples"] == [{"bucket": "b", "file": "mixed.jsonl", "line": 3,
                                "reason": "invalid JSON: Expecting value at column 15"}]  # only the first N
    assert m["metrics"]["sources"][0]["malformed"] == 2 and m["metrics"]["drops"]["malformed"] == 2


def test_too_many_malformed_rows_fail_the_build_naming_file_and_line(tmp_path):
    recipe = _malformed_setup(tmp_path)
    with pytest.raises(UserError) as e:
        build_dataset(recipe, tmp_path / "out", overrides=["max_malformed_fraction=0.1"])
    msg = e.value.message
    assert "max_malformed_fraction 0.1 exceeded" in msg and "2 of 10 rows malformed (20.0%)" in msg
    assert "first at mixed.jsonl:3: invalid JSON" in msg
    assert not (tmp_path / "out" / "data.parquet").exists()


def test_every_read_row_is_accounted_for(tmp_path):
    m = build_dataset(_malformed_setup(tmp_path), tmp_path / "out", overrides=["buckets.b.share={count: 5}"])
    for s in m["metrics"]["sources"]:
        assert s["read"] == s["malformed"] + sum(s["dropped"].values()) + s["kept"]
        assert s["kept"] == s["not_sampled"] + len({r["id"] for r in load_built(tmp_path / "out")})


def test_all_local_source_types(tmp_path):
    import datasets

    rows = [{"instruction": f"Name the number after {i}.", "input": "", "output": str(i + 1)} for i in range(4)]
    (tmp_path / "a.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + ",\n5\n]\n")  # 5: not a row
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "a.parquet"))
    with open(tmp_path / "a.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "input", "output"])
        writer.writerows([[r["instruction"], r["input"], r["output"]] for r in rows])
        writer.writerow(["only", "two"])  # ragged row: malformed, reported with its line
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    spec = {"kind": "chat", "max_malformed_fraction": 0.5, "defaults": {"format": "alpaca", "filters": {
        "dedupe": False}}, "buckets": {"b": {"sources": [{"path": p} for p in ("a.json", "a.parquet", "a.csv",
                                                                            "saved")], "share": {"count": 16}}}}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    assert [(s["source"], s["kept"]) for s in m["metrics"]["sources"]] == [
        ("a.json", 4), ("a.parquet", 4), ("a.csv", 4), ("saved", 4)]
    assert m["metrics"]["malformed"]["examples"] == [
        {"bucket": "b", "file": "a.json", "line": 6, "reason": "expected a JSON object, got int"},
        {"bucket": "b", "file": "a.csv", "line": 6, "reason": "CSV row has 2 fields, the header has 3"}]
    assert set(m["inputs"]) >= {"a.json", "a.parquet", "a.csv", "saved", "recipe:r.yaml"}
    assert sorted(load_built(tmp_path / "out")["source"]) == sorted(["a.json", "a.parquet", "a.csv", "saved"] * 4)


def test_unsupported_file_and_empty_source(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    spec = {"kind": "text", "buckets": {"b": {"sources": [{"path": "notes.txt"}]}}}
    with pytest.raises(UserError, match=r"buckets.b.sources.0: notes.txt: unsupported file type '.txt'"):
        build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    (tmp_path / "folder").mkdir()
    spec["buckets"]["b"]["sources"] = [{"path": "folder"}]
    with pytest.raises(UserError, match="buckets.b.sources.0: folder: not a folder written by datasets' save_to_disk"):
        build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    (tmp_path / "broken.json").write_text('[{"text": "a"},\n{"text" "b"}]')
    spec["buckets"]["b"]["sources"] = [{"path": "broken.json"}]
    with pytest.raises(UserError, match=r"broken.json:2: invalid JSON \(Expecting ':' delimiter"):
        build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    (tmp_path / "empty.jsonl").write_text("\n")
    spec["buckets"]["b"]["sources"] = [{"path": "empty.jsonl"}]
    with pytest.raises(UserError, match="empty.jsonl has no rows"):
        build_dataset(_recipe(tmp_path, spec), tmp_path / "out")


def test_bucket_emptied_by_filters_is_an_error(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": "tiny"}])
    spec = {"kind": "text", "defaults": {"filters": {"min_tokens": 50}}, "buckets": {"b": {"sources": [
        {"path": "a.jsonl"}]}}}
    with pytest.raises(UserError, match="buckets.b: no rows left after filtering"):
        build_dataset(_recipe(tmp_path, spec), tmp_path / "out")


def test_hub_source_unreachable_names_bucket_and_source(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no hub here; offline mode fails fast
    spec = {"kind": "chat", "buckets": {"chat": {"sources": [{"hub": "someorg/some-chat-set", "split": "train"}]}}}
    with pytest.raises(UserError) as e:
        build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    msg = e.value.message
    assert "buckets.chat.sources.0 (hub:someorg/some-chat-set)" in msg and "could not load hub dataset" in msg


def test_hub_source_loads_through_load_dataset(tmp_path, monkeypatch):
    import datasets

    # No hub is reachable here: a local folder stands in for the hub id; load_dataset resolves both the same way.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    (tmp_path / "hubset").mkdir()
    _jsonl(tmp_path / "hubset" / "train.jsonl", [{"text": f"Document number {i}."} for i in range(5)] + [{"txt": 1}])
    spec = {"kind": "text", "max_malformed_fraction": 0.5,
            "buckets": {"web": {"sources": [{"hub": str(tmp_path / "hubset"), "split": "train"}]}}}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    label = f"hub:{tmp_path / 'hubset'}"
    assert m["metrics"]["sources"][0]["kept"] == 5 and m["inputs"][label].startswith("hub-fingerprint:")
    assert m["metrics"]["malformed"]["examples"][0]["file"] == label
    assert m["metrics"]["malformed"]["examples"][0]["row"] == 5


def test_out_must_be_a_folder(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": "some words here"}])
    (tmp_path / "file").write_text("x")
    spec = {"kind": "text", "buckets": {"b": {"sources": [{"path": "a.jsonl"}]}}}
    with pytest.raises(UserError, match="exists and is not a folder"):
        build_dataset(_recipe(tmp_path, spec), tmp_path / "file")


def test_task_kind(tmp_path):
    tasks = [{"id": f"t{i}", "env": "math", "messages": [{"role": "user", "content": f"Compute {i} * 3."}],
              "tools": [], "answer": str(3 * i)} for i in range(6)]
    _jsonl(tmp_path / "tasks.jsonl", tasks)
    m = build_dataset(_recipe(tmp_path, {"kind": "task", "buckets": {"math": {"sources": [{"path": "tasks.jsonl"}]}}}),
                      tmp_path / "out")
    ds = load_built(tmp_path / "out")
    assert m["columns"] == ds.column_names == ["id", "bucket", "source", "env", "messages", "tools", "task"]
    assert sorted(json.loads(t)["answer"] for t in ds["task"]) == sorted(t["answer"] for t in tasks)


def test_real_tokenizer_counts(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "alpha", "beta", "gamma", "delta"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    _jsonl(tmp_path / "a.jsonl", [{"text": "alpha gamma " * (i + 1)} for i in range(4)])
    spec = {"kind": "text", "tokenizer": "tok", "buckets": {"b": {"sources": [{"path": "a.jsonl"}]}}}
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    assert m["metrics"]["tokens"] == 2 * (1 + 2 + 3 + 4)  # one word-level token per word
    assert m["token_counter"] == "tokenizer:tok (tokenizer.json, vocab 5)"
    assert "tokenizer:tok" in m["inputs"]
    del spec["tokenizer"]
    m = build_dataset(_recipe(tmp_path, spec), tmp_path / "out")
    assert m["metrics"]["tokens"] == 4 * (1 + 2 + 3 + 4) and m["token_counter"].startswith("built-in approximation")
    (tmp_path / "tok" / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="tok has no tokenizer.json"):
        build_dataset(_recipe(tmp_path, {**spec, "tokenizer": "tok"}), tmp_path / "out")


def test_same_inputs_same_bytes_and_seed_changes_order(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [_chat(i) for i in range(30)])
    _jsonl(tmp_path / "b.jsonl", [_chat(i) for i in range(100, 120)])
    spec = {"kind": "chat", "buckets": {"a": {"sources": [{"path": "a.jsonl"}], "share": {"count": 40}},
                                        "b": {"sources": [{"path": "b.jsonl"}], "share": {"count": 10}}}}
    recipe = _recipe(tmp_path, spec)
    build_dataset(recipe, tmp_path / "one")
    build_dataset(recipe, tmp_path / "sub" / "two")
    for name in ("data.parquet", "manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "sub" / "two" / name).read_bytes()
    assert "time" not in (tmp_path / "one" / "manifest.json").read_text()
    build_dataset(recipe, tmp_path / "three", seed=1)
    first, other = load_built(tmp_path / "one")["id"], load_built(tmp_path / "three")["id"]
    assert first != other
    manifest = json.loads((tmp_path / "three" / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["config"]["seed"] == 1


def test_load_built_checks_folder(tmp_path):
    with pytest.raises(UserError, match="no manifest here"):
        load_built(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"stage": "sft"}))
    with pytest.raises(UserError, match="expected a `posttrain data build` output"):
        load_built(tmp_path)
