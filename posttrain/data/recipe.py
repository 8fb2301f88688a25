"""Bucket recipes (``data_recipes/*.yaml``): the schema, loading with ``KEY=VALUE`` overrides, and the checks that need
the file system (source files exist, eval sets are known, formats fit the recipe's kind).

Every problem is a :class:`UserError` naming the recipe file and the dotted key, e.g.
``sft.yaml: buckets.math.sources.0.path: file not found: samples/mth.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from posttrain.config import Schema, apply_overrides, read_yaml, validate
from posttrain.errors import UserError

Kind = Literal["chat", "text", "task", "preference"]
FormatName = Literal["messages", "prompt_completion", "alpaca", "sharegpt", "tool_calls", "text", "task", "preference",
                     "gsm8k", "math_boxed", "humaneval", "mbpp", "stdio", "xlam", "openai_tool_calls", "bfcl",
                     "ifeval"]

# Which formats produce rows of which kind, and the format a source gets when the recipe names none.
FORMATS_BY_KIND: dict[str, tuple[str, ...]] = {
    "chat": ("messages", "prompt_completion", "alpaca", "sharegpt", "tool_calls"),
    "text": ("text",),
    "task": ("task", "gsm8k", "math_boxed", "humaneval", "mbpp", "stdio", "xlam", "openai_tool_calls", "bfcl",
             "ifeval"),
    "preference": ("preference",),
}
DEFAULT_FORMAT = {"chat": "messages", "text": "text", "task": "task", "preference": "preference"}
BUILTIN_EVAL_SETS = ("humaneval",)


class Share(Schema):
    """How much of the mix a bucket gets: exactly one of a relative weight, a row count or a token budget."""

    weight: float | None = Field(None, gt=0)
    count: int | None = Field(None, ge=1)
    tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Share:
        given = [k for k in ("weight", "count", "tokens") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of weight, count, tokens; got {', '.join(given) or 'none'}")
        return self


class NearDedupe(Schema):
    """MinHash/LSH near-duplicate removal over word shingles; rows at or above ``threshold`` Jaccard are dropped."""

    threshold: float = Field(0.8, gt=0, le=1)
    shingle: int = Field(5, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=8, le=1024)
    bands: int | None = Field(None, ge=1, description="LSH bands; default: chosen so the S-curve meets threshold")


class Filters(Schema):
    """Per-bucket filters. A key left out inherits from ``defaults.filters``, then from the built-in defaults."""

    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    dedupe: bool | None = None
    near_dedupe: NearDedupe | bool | None = None
    decontaminate: list[str] | None = None


class ResolvedFilters(Schema):
    min_tokens: int = 0
    max_tokens: int | None = None
    dedupe: bool = True
    near_dedupe: NearDedupe | None = None
    decontaminate: list[str] = Field(default_factory=list)


class Source(Schema):
    """One input: a local file/folder (``path``, relative to the recipe) or a hub dataset id (``hub``)."""

    path: str | None = None
    hub: str | None = None
    split: str | None = None
    subset: str | None = None
    revision: str | None = None
    format: FormatName | None = None
    rename: dict[str, str] = Field(default_factory=dict, description="column renames applied before the adapter")

    @model_validator(mode="after")
    def _one_location(self) -> Source:
        if (self.path is None) == (self.hub is None):
            raise ValueError("set exactly one of path (a local file or saved dataset folder) or hub (org/name)")
        return self

    @property
    def label(self) -> str:
        """How the source is named in rows and manifests (as written in the recipe, so builds do not depend on cwd)."""
        return self.path if self.path is not None else f"hub:{self.hub}"


class Bucket(Schema):
    sources: list[Source] = Field(min_length=1)
    format: FormatName | None = None
    share: Share = Field(default_factory=lambda: Share(weight=1.0))
    filters: Filters = Field(default_factory=Filters)
    replay: bool = False


class Defaults(Schema):
    format: FormatName | None = None
    filters: Filters = Field(default_factory=Filters)


class EvalSet(Schema):
    """A local file of eval items; ``fields`` picks the text columns (default: every string and message content)."""

    path: str
    fields: list[str] | None = None


class Decontamination(Schema):
    ngram: int = Field(13, ge=1, description="a row sharing any word n-gram with an eval item is dropped")


class Recipe(Schema):
    kind: Kind
    description: str = ""
    seed: int = Field(0, ge=0)
    tokenizer: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    max_malformed_fraction: float = Field(0.05, ge=0, le=1)
    max_malformed_examples: int = Field(20, ge=0)
    total_rows: int | None = Field(None, ge=1)
    total_tokens: int | None = Field(None, ge=1)
    replay_ratio: float = Field(0.2, ge=0, lt=1)
    max_repeat: int | None = Field(100, ge=1, description="the most copies of one row up-sampling may make; null: no "
                                   "limit")
    eval_sets: dict[str, EvalSet] = Field(default_factory=dict)
    decontamination: Decontamination = Field(default_factory=Decontamination)
    buckets: dict[str, Bucket] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_total(self) -> Recipe:
        if self.total_rows is not None and self.total_tokens is not None:
            raise ValueError("set at most one of total_rows and total_tokens")
        return self


class LoadedRecipe:
    """A validated recipe, where it lives (sources resolve against ``base``), and its resolved per-bucket settings."""

    def __init__(self, recipe: Recipe, path: Path) -> None:
        self.recipe = recipe
        self.path = path
        self.base = path.parent
        self.formats: dict[tuple[str, int], str] = {}
        self.filters: dict[str, ResolvedFilters] = {}

    def source_path(self, source: Source) -> Path:
        assert source.path is not None
        return (self.base / source.path).resolve()

    def relative(self, path: str) -> str:
        """How a recipe path was resolved, for messages: against the recipe's folder, not the current one."""
        return f"relative to the recipe's folder {self.base}, i.e. {(self.base / path).resolve()}"

    def input_paths(self) -> list[Path]:
        """Every local file or folder the build reads (an output must not be written over any of them)."""
        r = self.recipe
        paths = [self.path]
        paths += [self.source_path(s) for b in r.buckets.values() for s in b.sources if s.path is not None]
        paths += [self.base / ev.path for ev in r.eval_sets.values()]
        if r.tokenizer is not None:
            paths.append(self.base / r.tokenizer)
        return paths

    def resolved(self) -> dict[str, Any]:
        """The recipe as it was built: overrides applied, every default, format and filter filled in."""
        data = self.recipe.model_dump(mode="json")
        for name, bucket in data["buckets"].items():
            bucket["filters"] = self.filters[name].model_dump(mode="json")
            for i, src in enumerate(bucket["sources"]):
                src["format"] = self.formats[(name, i)]
        return data


def load_recipe(path: str | Path, overrides: list[str] | None = None, seed: int | None = None) -> LoadedRecipe:
    """Read, override, validate and check a recipe file."""
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides or []))
    if seed is not None:
        data["seed"] = seed
    source_name = str(path) + (" (with overrides)" if overrides else "")
    loaded = LoadedRecipe(validate(Recipe, data, source_name), path)
    _check(loaded, source_name)
    return loaded


def _merge_filters(*layers: Filters) -> ResolvedFilters:
    """Later layers win, key by key (only keys a layer really set count)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key in layer.model_fields_set:
            merged[key] = getattr(layer, key)
    near = merged.get("near_dedupe")
    if near is True:
        merged["near_dedupe"] = NearDedupe()
    elif near is False:
        merged["near_dedupe"] = None
    return ResolvedFilters(**{k: v for k, v in merged.items() if v is not None or k == "near_dedupe"})


def _check(loaded: LoadedRecipe, where: str) -> None:
    r = loaded.recipe
    for name, ev in r.eval_sets.items():
        if name in BUILTIN_EVAL_SETS:
            raise UserError(f"{where}: eval_sets.{name}: {name!r} is a built-in eval set name; choose another name")
        if not (loaded.base / ev.path).is_file():
            raise UserError(f"{where}: eval_sets.{name}.path: file not found: {ev.path} ({loaded.relative(ev.path)})")
    if r.tokenizer is not None and not (loaded.base / r.tokenizer).is_dir():
        raise UserError(f"{where}: tokenizer: folder not found: {r.tokenizer} (expected a Hugging Face tokenizer "
                        f"folder, {loaded.relative(r.tokenizer)})")
    known_evals = set(r.eval_sets) | set(BUILTIN_EVAL_SETS)
    allowed = FORMATS_BY_KIND[r.kind]
    for name, bucket in r.buckets.items():
        key = f"buckets.{name}"
        filters = _merge_filters(r.defaults.filters, bucket.filters)
        if filters.max_tokens is not None and filters.max_tokens < filters.min_tokens:
            raise UserError(f"{where}: {key}.filters: max_tokens ({filters.max_tokens}) is below min_tokens "
                            f"({filters.min_tokens})")
        for ev in filters.decontaminate:
            if ev not in known_evals:
                raise UserError(f"{where}: {key}.filters.decontaminate: unknown eval set {ev!r}; expected one of: "
                                f"{', '.join(sorted(known_evals))} (declare files under eval_sets)")
        loaded.filters[name] = filters
        if bucket.replay and bucket.share.weight is None:
            raise UserError(f"{where}: {key}.share: replay buckets are sized by replay_ratio; give them a weight "
                            "(their split of the replay tokens), not a count or token budget")
        for i, src in enumerate(bucket.sources):
            fmt = src.format or bucket.format or r.defaults.format or DEFAULT_FORMAT[r.kind]
            if fmt not in allowed:
                raise UserError(f"{where}: {key}.sources.{i}.format: {fmt!r} makes {_kind_of(fmt)} rows but the recipe "
                                f"kind is {r.kind!r}; expected one of: {', '.join(allowed)}")
            loaded.formats[(name, i)] = fmt
            if src.path is not None and not (loaded.base / src.path).exists():
                raise UserError(f"{where}: {key}.sources.{i}.path: file not found: {src.path} "
                                f"({loaded.relative(src.path)})")
    replay = [n for n, b in r.buckets.items() if b.replay]
    if replay and len(replay) == len(r.buckets):
        raise UserError(f"{where}: buckets: every bucket is marked replay: true; replay_ratio needs at least one "
                        "non-replay bucket to measure against")
    if replay and r.replay_ratio == 0:
        raise UserError(f"{where}: replay_ratio is 0 but buckets {', '.join(replay)} are marked replay: true")


def _kind_of(fmt: str) -> str:
    return next(kind for kind, fmts in FORMATS_BY_KIND.items() if fmt in fmts)
