"""One bad row never kills a build: it is counted as malformed with its file and line, and the other rows go on.

Each case here used to end the whole `data build` with a traceback (or, for undecodable bytes, kept a mangled row).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from posttrain.data import build_dataset, load_built
from posttrain.errors import UserError


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"What is {i} times {i}?"},
                         {"role": "assistant", "content": f"{i} times {i} is {i * i}."}]}


def _build(tmp_path: Path, source: str, kind: str = "chat", fmt: str | None = None) -> dict:
    spec = {"kind": kind, "max_malformed_fraction": 0.5, "buckets": {"b": {"sources": [{"path": source}]}}}
    if fmt:
        spec["buckets"]["b"]["format"] = fmt
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    return build_dataset(tmp_path / "r.yaml", tmp_path / "out")


def _examples(m: dict) -> list[tuple[int, str]]:
    return [(ex["line"], ex["reason"]) for ex in m["metrics"]["malformed"]["examples"]]


def _write_lines(path: Path, lines: list[str | bytes]) -> None:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))


@pytest.mark.parametrize("bad, reason", [
    ('{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "ok"}]}',
     "lone surrogate"),
    ('{"messages": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('{"messages": [], "n": ' + "7" * 5000 + "}", "invalid JSON"),
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok"}]}',
     "not valid UTF-8 (byte 0xe9 at column 47)"),
])
def test_a_bad_jsonl_row_is_malformed_with_its_line(tmp_path, bad, reason):
    _write_lines(tmp_path / "rows.jsonl", [json.dumps(_chat(1)), bad, json.dumps(_chat(2))])
    m = _build(tmp_path, "rows.jsonl")
    assert m["metrics"]["malformed"]["count"] == 1 and m["metrics"]["rows"] == 2
    [(line, why)] = _examples(m)
    assert line == 2 and reason in why, why
    assert len(load_built(tmp_path / "out")) == 2


def test_a_deep_or_undecodable_item_of_a_json_list_is_malformed_and_the_next_item_is_read(tmp_path):
    items = [json.dumps(_chat(1)).encode(), b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
             b'{"x": "caf\xe9"}', json.dumps(_chat(2)).encode()]
    (tmp_path / "rows.json").write_bytes(b"[\n" + b",\n".join(items) + b"\n]\n")
    m = _build(tmp_path, "rows.json")
    assert m["metrics"]["rows"] == 2
    assert [(line, why.split(" (")[0].split(":")[0]) for line, why in _examples(m)] == [
        (3, "invalid JSON"), (4, "not valid UTF-8")]


def test_nesting_close_to_the_recursion_limit_never_crashes_the_build(tmp_path):
    rows = [{"id": f"t{i}", "env": "math", "messages": [{"role": "user", "content": f"Compute {i}."}],
             "tools": [], "answer": str(i)} for i in range(3)]
    lines = [json.dumps(r) for r in rows]
    for depth in range(900, 1000, 10):  # where json reaches the recursion limit depends on the stack
        deep = {**rows[0], "id": f"deep{depth}", "messages": [{"role": "user", "content": f"Depth {depth}."}]}
        lines.append(json.dumps({**deep, "meta": "X"}).replace('"X"', "[" * depth + "]" * depth))
    _write_lines(tmp_path / "tasks.jsonl", lines)
    m = _build(tmp_path, "tasks.jsonl", kind="task")
    s = m["metrics"]["sources"][0]
    assert s["read"] == 13 and s["read"] == s["malformed"] + sum(s["dropped"].values()) + s["kept"]
    assert all(why.startswith("invalid JSON: nested too deeply") for _, why in _examples(m))


def test_csv_field_over_128_kib_is_read_and_bad_bytes_are_malformed(tmp_path):
    long = "word " * 40_000  # 200 KB: over the csv module's default field limit
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        w.writerow(["Summarize this.", long, "Words."])
        w.writerow(["Say hi.", "", "Hi!"])
    with open(tmp_path / "rows.csv", "ab") as f:
        f.write(b"Say caf\xe9.,,Caf\xe9!\n")
    m = _build(tmp_path, "rows.csv", fmt="alpaca")
    assert m["metrics"]["rows"] == 2
    assert _examples(m) == [(4, "not valid UTF-8 (byte 0xe9 at column 8)")]
    long_row = [r for r in load_built(tmp_path / "out") if r["messages"][1]["content"] == "Words."]
    assert long.strip() in long_row[0]["messages"][0]["content"]


def test_a_lone_surrogate_inside_a_json_string_column_is_malformed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def tools(description: str) -> str:  # parquet exports keep tool schemas as JSON text
        return json.dumps([{"type": "function", "function": {"name": "f", "description": description,
                                                              "parameters": {"type": "object", "properties": {}}}}])

    rows = [{**_chat(i), "tools": tools(f"tool {i}")} for i in range(3)]
    rows[1]["tools"] = tools("broken \ud800 text")  # json.dumps escapes it: the parquet string is valid UTF-8
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    m = _build(tmp_path, "rows.parquet")
    assert m["metrics"]["rows"] == 2
    [example] = m["metrics"]["malformed"]["examples"]
    assert example["row"] == 1 and "tools: string is not usable JSON (invalid unicode: a lone surrogate" in \
        example["reason"]


def test_a_damaged_parquet_source_is_a_user_error_not_a_traceback(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"text": f"row {i} " * 50} for i in range(2000)]), tmp_path / "rows.parquet",
                   compression="zstd", row_group_size=500)
    data = bytearray((tmp_path / "rows.parquet").read_bytes())
    data[len(data) // 2:len(data) // 2 + 200] = b"\xff" * 200  # a damaged page; the footer still reads
    (tmp_path / "rows.parquet").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"buckets.b.sources.0: rows.parquet: cannot read as parquet past row \d+"):
        _build(tmp_path, "rows.parquet", kind="text")
