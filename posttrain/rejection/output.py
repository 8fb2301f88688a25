"""The SFT-ready output of a sampling run: kept samples as rows of the built-dataset contract (kind ``chat``).

Rows are ``id``, ``bucket``, ``source``, ``messages`` (the whole conversation: prompt, model turns, tool results),
``tools`` (JSON list, ``""`` when none), the same columns ``posttrain data build`` writes for a chat recipe, so
``posttrain sft`` trains on the folder directly. Model turns are in the interchange form (Hermes tool calls), whatever
format the model wrote them in, and keep the model's reasoning (``<think>...</think>``) unless ``reasoning`` is
``drop``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from posttrain.manifest import file_sha256

DATA_FILE = "data.parquet"
COLUMNS = ["id", "bucket", "source", "messages", "tools"]


def chat_row(prompt: dict[str, Any], sample: dict[str, Any], reasoning: str = "keep") -> dict[str, Any]:
    """One kept sample as a chat row; ``id`` hashes the prompt row, the sample index and the content (stable).
    ``reasoning``: ``keep`` the model turns' reasoning or ``drop`` it (only the final answers are trained)."""
    from posttrain.models.chat import strip_reasoning

    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in sample["messages"]]
    if reasoning == "drop":
        messages = [{**m, "content": strip_reasoning(m["content"])} if m["role"] == "assistant" else m
                    for m in messages]
    tools = json.dumps(sample["tools"], ensure_ascii=False) if sample["tools"] else ""
    key = json.dumps([prompt["id"], sample["sample_index"], messages, tools], ensure_ascii=False, sort_keys=True)
    return {"id": hashlib.sha256(key.encode()).hexdigest()[:16], "bucket": prompt["bucket"],
            "source": prompt["source"], "messages": messages, "tools": tools}


def write_chat_parquet(path: Path, rows: list[dict[str, Any]]) -> str:
    """Write rows atomically with the chat schema; returns the file's sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([("id", pa.string()), ("bucket", pa.string()), ("source", pa.string()),
                        ("messages", messages), ("tools", pa.string())])
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
    os.replace(tmp, path)
    return file_sha256(path)
