"""Row filters: token range, exact duplicates (normalized content hash) and near duplicates (MinHash + LSH).

Every filter answers "keep" or a drop reason; the build counts each reason per bucket and source.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

import numpy as np

from posttrain.data.recipe import NearDedupe
from posttrain.errors import UserError

_WORDS = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_PRIME = (1 << 31) - 1  # Mersenne prime: (a * x + b) with a, x < 2**31 fits in uint64 without overflow
_HASH_SEED = 20240601  # MinHash permutations are fixed: which rows are near duplicates must not depend on the mix seed


def normalize(text: str) -> str:
    """Case, Unicode compatibility forms and whitespace runs do not make two rows different."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def words(text: str) -> list[str]:
    return _WORDS.findall(normalize(text))


def content_key(row: dict[str, Any]) -> str:
    """Hash of a row's normalized content; what exact dedupe compares."""
    if "text" in row:
        payload: Any = normalize(row["text"])
    elif "chosen" in row:  # preference: the same prompt with a different pair is a different row
        sides = (row["prompt"], row["chosen"], row["rejected"])
        payload = [[[m["role"], normalize(m["content"])] for m in side] for side in sides]
    else:
        payload = [[m["role"], normalize(m["content"])] for m in row["messages"]]
        payload.append(normalize(row.get("tools", "")))
        if "env" in row:
            payload.append(row["env"])
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def token_reason(tokens: int, min_tokens: int, max_tokens: int | None) -> str | None:
    if tokens < min_tokens:
        return "too_short"
    if max_tokens is not None and tokens > max_tokens:
        return "too_long"
    return None


def hash64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


_MULT = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: mixes word hashes into a window hash (uint64 wraps around)


def shingles(text: str, k: int, word_hashes: dict[str, int] | None = None) -> np.ndarray:
    """Sorted unique 64-bit hashes of the k-word windows of the text (fewer than k words: one window).

    Each distinct word is hashed once (blake2b, stable across runs); a window's hash is a polynomial of its words'
    hashes, computed for all windows at once with numpy.
    """
    cache = word_hashes if word_hashes is not None else {}
    ws = words(text) or [""]
    ids = np.array([cache[w] if w in cache else cache.setdefault(w, hash64(w)) for w in ws], dtype=np.uint64)
    width = min(k, len(ws))
    n = len(ws) - width + 1
    h = np.zeros(n, dtype=np.uint64)
    for j in range(width):
        h = h * _MULT + ids[j:j + n]
    return np.unique(h)


def _pick_bands(num_perm: int, threshold: float) -> int:
    """The band count whose LSH S-curve midpoint (1/b)^(1/r) is highest but still at least 0.05 below the threshold.

    Tuned for recall: a missed candidate pair is a missed duplicate, while a spurious candidate only costs one exact
    Jaccard comparison (which decides).
    """
    options = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    midpoint = {b: (1 / b) ** (b / num_perm) for b in options}
    below = [b for b in options if midpoint[b] <= threshold - 0.05]
    return min(below, key=lambda b: threshold - midpoint[b]) if below else num_perm


class NearDuplicateIndex:
    """Rows seen so far; ``check_add`` says whether a new row is a near duplicate of one of them (and adds it if not).

    MinHash signatures with LSH banding find candidates; a candidate counts only if the true Jaccard similarity of the
    shingle sets reaches the threshold, so LSH only decides which pairs to compare.
    """

    def __init__(self, cfg: NearDedupe) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(_HASH_SEED)
        self.a = rng.integers(1, _PRIME, size=cfg.num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, size=cfg.num_perm, dtype=np.uint64)
        self.bands = cfg.bands or _pick_bands(cfg.num_perm, cfg.threshold)
        if cfg.num_perm % self.bands:
            raise UserError(f"near_dedupe.bands: {self.bands} does not divide num_perm {cfg.num_perm}")
        self.rows_per_band = cfg.num_perm // self.bands
        self.tables: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.sets: list[np.ndarray] = []
        self.word_hashes: dict[str, int] = {}

    def signature(self, sh: np.ndarray) -> np.ndarray:
        x = (sh % np.uint64(_PRIME))[None, :]
        return ((self.a[:, None] * x + self.b[:, None]) % np.uint64(_PRIME)).min(axis=1)

    def check_add(self, text: str) -> bool:
        """True if ``text`` is a near duplicate of an earlier row (it is then not added)."""
        sh = shingles(text, self.cfg.shingle, self.word_hashes)
        sig = self.signature(sh)
        keys = [sig[i * self.rows_per_band:(i + 1) * self.rows_per_band].tobytes() for i in range(self.bands)]
        seen: set[int] = set()
        for table, key in zip(self.tables, keys, strict=True):
            for j in table.get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = self.sets[j]
                common = len(np.intersect1d(sh, other, assume_unique=True))
                if common / (len(sh) + len(other) - common) >= self.cfg.threshold:
                    return True
        idx = len(self.sets)
        self.sets.append(sh)
        for table, key in zip(self.tables, keys, strict=True):
            table.setdefault(key, []).append(idx)
        return False
