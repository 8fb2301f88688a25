"""Counting tokens for filters and shares: a real Hugging Face tokenizer when the recipe names one, else a built-in
deterministic approximation (recorded in the manifest, so nobody mistakes its counts for a model's).

What is counted is a row's content (see :func:`row_text`), not chat-template overhead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

_WORDS = re.compile(r"\w+")  # letters/digits/underscore runs
_SYMBOLS = re.compile(r"[^\w\s]")  # every other non-space character
APPROX_DESCRIPTION = ("built-in approximation (no tokenizer given): every punctuation/symbol character counts 1, every "
                      "word ceil(len/4) tokens (at least 1); close to BPE counts for English prose, not exact")


def approx_tokens(text: str) -> int:
    words = _WORDS.findall(text)
    # ceil(len / 4) per word: 1 for short words, plus (len - 1) // 4 more for longer ones
    return len(_SYMBOLS.findall(text)) + len(words) + sum((len(w) - 1) // 4 for w in words if len(w) > 4)


def row_text(row: dict[str, Any]) -> str:
    """The text a row's tokens, n-grams and shingles are computed on: contents (with roles) plus tool schemas."""
    if "text" in row:
        return row["text"]
    messages = [*row["prompt"], *row["chosen"], *row["rejected"]] if "chosen" in row else row["messages"]
    parts = [f"{m['role']}: {m['content']}" for m in messages]
    if row.get("tools") and row["tools"] != "[]":
        parts.append(row["tools"])
    return "\n".join(parts)


def make_counter(tokenizer: str | None, base: Path) -> tuple[Callable[[list[str]], list[int]], str]:
    """A batch counter and its description for the manifest.

    A tokenizer folder is read through its ``tokenizer.json`` with the ``tokenizers`` library (what every Hugging Face
    fast tokenizer is built on; counts equal ``len(tok(text, add_special_tokens=False).input_ids)``), which avoids
    importing transformers just to count.
    """
    if tokenizer is None:
        return (lambda texts: [approx_tokens(t) for t in texts]), APPROX_DESCRIPTION
    from tokenizers import Tokenizer

    path = base / tokenizer / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer: {tokenizer} has no tokenizer.json; expected a Hugging Face fast-tokenizer folder "
                        "(AutoTokenizer.from_pretrained(...).save_pretrained(folder) writes one)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for unreadable files
        raise UserError(f"tokenizer: cannot load {tokenizer}/tokenizer.json ({e})") from None

    def count(texts: list[str]) -> list[int]:
        return [len(enc.ids) for enc in tok.encode_batch(texts, add_special_tokens=False)] if texts else []

    return count, f"tokenizer:{tokenizer} (tokenizer.json, vocab {tok.get_vocab_size()})"
