"""Counting tokens for filters and shares: a real Hugging Face tokenizer when the recipe names one, else a built-in
deterministic approximation (recorded in the manifest, so nobody mistakes its counts for a model's).

What is counted is a row's content (see :func:`row_text`), not chat-template overhead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

# Words (letters/digits/underscore runs) and single non-space symbols.
_PIECES = re.compile(r"\w+|[^\w\s]")
APPROX_NAME = "builtin-approx-v1"
APPROX_DESCRIPTION = ("built-in approximation (no tokenizer given): every punctuation/symbol character counts 1, every "
                      "word ceil(len/4) tokens (at least 1); close to BPE counts for English prose, not exact")


def approx_tokens(text: str) -> int:
    return sum(max(1, math.ceil(len(p) / 4)) if (p[0].isalnum() or p[0] == "_") else 1 for p in _PIECES.findall(text))


def row_text(row: dict[str, Any]) -> str:
    """The text a row's tokens, n-grams and shingles are computed on: contents (with roles) plus tool schemas."""
    if "text" in row:
        return row["text"]
    parts = [f"{m['role']}: {m['content']}" for m in row["messages"]]
    if row.get("tools") and row["tools"] != "[]":
        parts.append(row["tools"])
    return "\n".join(parts)


def make_counter(tokenizer: str | None, base: Path) -> tuple[Callable[[list[str]], list[int]], str]:
    """A batch counter and its description for the manifest."""
    if tokenizer is None:
        return (lambda texts: [approx_tokens(t) for t in texts]), APPROX_DESCRIPTION
    from transformers import AutoTokenizer

    folder = base / tokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"tokenizer: cannot load a tokenizer from {tokenizer} ({e})") from None

    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    return count, f"tokenizer:{tokenizer} ({type(tok).__name__}, vocab {len(tok)})"
