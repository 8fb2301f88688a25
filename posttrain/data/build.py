"""The ``data build`` stage: recipe -> read every source -> adapt -> filter -> mix -> ``data.parquet`` + manifest.

Deterministic by construction: rows are processed in recipe order (buckets, sources, lines), every random choice comes
from a generator seeded by (recipe seed, name), and the manifest holds no timestamps or absolute paths. The same
inputs and seed give byte-identical ``data.parquet`` and ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data.decontam import Decontaminator, eval_set_names
from posttrain.data.filters import NearDuplicateIndex, content_key, token_reason
from posttrain.data.formats import adapt
from posttrain.data.mix import plan_mix, repeat_warnings, rng_for
from posttrain.data.output import DATA_FILE, KIND_COLUMNS, check_output, writing
from posttrain.data.recipe import LoadedRecipe, Source, load_recipe
from posttrain.data.sources import Malformed, MalformedRow, Where, read_hub, read_local, source_digest
from posttrain.data.tokens import make_counter, row_text
from posttrain.errors import UserError
from posttrain.jsonrows import NESTED
from posttrain.manifest import file_sha256, folder_sha256, read_manifest


@dataclass
class SourceStats:
    bucket: str
    source: str
    format: str
    digest: str
    read: int = 0
    malformed: int = 0
    first_malformed: str = ""
    dropped: Counter = field(default_factory=Counter)
    kept: int = 0


@dataclass
class BucketRows:
    rows: list[dict[str, Any]] = field(default_factory=list)  # kept rows, each with its "source" label
    tokens: list[int] = field(default_factory=list)
    sources: list[SourceStats] = field(default_factory=list)


def build_dataset(recipe_path: str | Path, out_dir: str | Path, overrides: list[str] | None = None,
                  seed: int | None = None, log: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the mixed dataset of a recipe into ``out_dir``; returns the manifest (also written as manifest.json).

    ``log`` gets progress lines, ``warn`` warnings (default: ``log`` with a ``warning:`` prefix); the manifest's
    ``metrics.warnings`` keeps the warnings too.
    """
    say = log or (lambda _msg: None)
    warn = warn or (lambda msg: say(f"warning: {msg}"))
    out = Path(out_dir)
    loaded = load_recipe(recipe_path, overrides, seed)
    check_output(out, loaded.input_paths())  # before any work; again under the lock
    with writing(out, loaded.input_paths()) as write:
        rows, manifest = _mix(loaded, say, warn)
        write(rows, loaded.recipe.kind, manifest)
        say(f"wrote {len(rows)} rows, {manifest['metrics']['tokens']} tokens to {out / DATA_FILE}")
        return read_manifest(out)


def _mix(loaded: LoadedRecipe, say: Callable[[str], None],
         warn: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The recipe's rows, mixed and shuffled, and the manifest that describes them (all but its ``outputs``)."""
    recipe, where = loaded.recipe, str(loaded.path)
    count_tokens, counter_name = make_counter(recipe.tokenizer, loaded.base)
    decon = Decontaminator(loaded, eval_set_names(loaded))
    inputs = {f"recipe:{loaded.path.name}": file_sha256(loaded.path), **decon.inputs}
    if recipe.tokenizer is not None:
        inputs[f"tokenizer:{recipe.tokenizer}"] = folder_sha256(loaded.base / recipe.tokenizer)

    # 1. Read, adapt and filter every bucket, in recipe order.
    seen: dict[str, str] = {}  # content key -> the bucket that kept it first (exact dedupe spans buckets)
    malformed_examples: list[dict[str, Any]] = []
    buckets: dict[str, BucketRows] = {}
    for name in recipe.buckets:
        buckets[name] = _collect_bucket(loaded, name, count_tokens, decon, seen, malformed_examples, inputs)
        b = buckets[name]
        say(f"bucket {name}: {sum(s.read for s in b.sources)} rows read, {len(b.rows)} kept, "
            f"{sum(s.malformed for s in b.sources)} malformed, {sum(sum(s.dropped.values()) for s in b.sources)} "
            "filtered")
    all_sources = [s for b in buckets.values() for s in b.sources]
    _check_malformed(all_sources, recipe.max_malformed_fraction, where)

    # 2. Decide how many rows of each bucket go in, and which; then one seeded shuffle of the whole mix.
    plans = plan_mix(recipe, {n: b.tokens for n, b in buckets.items()}, where)
    warnings = repeat_warnings(plans)
    for warning in warnings:
        warn(warning)
    out_rows: list[dict[str, Any]] = []
    out_tokens: list[int] = []
    for name, plan in plans.items():
        for i, repeat in plan.picks:
            row = buckets[name].rows[i]
            out_rows.append({**row, "id": row["id"] + (f"-r{repeat}" if repeat else ""), "bucket": name})
            out_tokens.append(buckets[name].tokens[i])
    order = rng_for(recipe.seed, "\0shuffle").permutation(len(out_rows))  # "\0": no bucket can share this stream
    out_rows = [out_rows[i] for i in order]

    # 3. The manifest (the data's hash is added when it is written).
    metrics = _metrics(recipe, buckets, plans, out_tokens, malformed_examples, decon)
    if warnings:  # only then: a build without warnings keeps the manifest it always had
        metrics["warnings"] = warnings
    manifest = {
        "stage": "data",
        "kind": recipe.kind,
        "seed": recipe.seed,
        "columns": ["id", "bucket", "source", *KIND_COLUMNS[recipe.kind]],
        "token_counter": counter_name,
        "config": loaded.resolved(),
        "inputs": inputs,
        "metrics": metrics,
    }
    return out_rows, manifest


def _collect_bucket(loaded: LoadedRecipe, name: str, count_tokens: Callable[[list[str]], list[int]],
                    decon: Decontaminator, seen: dict[str, str], malformed_examples: list[dict[str, Any]],
                    inputs: dict[str, str]) -> BucketRows:
    """Read each source of a bucket, adapt its records and apply the bucket's filters; count every drop."""
    recipe = loaded.recipe
    filters = loaded.filters[name]
    near = NearDuplicateIndex(filters.near_dedupe) if filters.near_dedupe else None
    result = BucketRows()
    for i, src in enumerate(loaded.recipe.buckets[name].sources):
        fmt = loaded.formats[(name, i)]
        records, digest = _open_source(loaded, name, i, src)
        inputs[src.label] = digest
        stats = SourceStats(bucket=name, source=src.label, format=fmt, digest=digest)
        result.sources.append(stats)
        adapted: list[dict[str, Any]] = []
        try:
            for at, rec in records:
                stats.read += 1
                try:
                    if isinstance(rec, Malformed):
                        raise MalformedRow(rec.reason)
                    adapted.append(adapt(fmt, rec, src.rename))
                except MalformedRow as e:
                    _note_malformed(stats, at, e.reason, malformed_examples, recipe.max_malformed_examples)
                except RecursionError:  # the reader took it, but adapting (json.dumps of the record) went deeper
                    _note_malformed(stats, at, NESTED, malformed_examples, recipe.max_malformed_examples)
        except UserError as e:  # the file itself is unreadable: say which bucket and source it belongs to
            raise UserError(f"{loaded.path}: buckets.{name}.sources.{i}: {e.message}") from None
        if stats.read == 0:
            raise UserError(f"{loaded.path}: buckets.{name}.sources.{i}: {src.label} has no rows")
        texts = [row_text(r) for r in adapted]
        for row, text, tokens in zip(adapted, texts, count_tokens(texts), strict=True):
            key = content_key(row)
            reason = token_reason(tokens, filters.min_tokens, filters.max_tokens)
            if reason is None and filters.dedupe and key in seen:
                reason = "exact_duplicate" if seen[key] == name else "duplicate_in_other_bucket"
            if reason is None:
                hit = decon.match(text, filters.decontaminate)
                reason = f"contaminated:{hit}" if hit else None
            if reason is None and near is not None and near.check_add(text):
                reason = "near_duplicate"
            if reason is not None:
                stats.dropped[reason] += 1
                continue
            seen.setdefault(key, name)
            stats.kept += 1
            row_id = hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
            result.rows.append({"id": row_id, "source": src.label, **row})
            result.tokens.append(tokens)
    return result


def _open_source(loaded: LoadedRecipe, bucket: str, i: int, src: Source) -> tuple[Any, str]:
    if src.hub is not None:
        context = f"{loaded.path}: buckets.{bucket}.sources.{i} ({src.label})"
        return read_hub(src.hub, src.split, src.subset, src.revision, src.label, context)
    path = loaded.source_path(src)
    return read_local(path, src.label, src.split), source_digest(path)


def _note_malformed(stats: SourceStats, at: Where, reason: str, examples: list[dict[str, Any]], limit: int) -> None:
    stats.malformed += 1
    if not stats.first_malformed:
        stats.first_malformed = f"{at}: {reason}"
    if len(examples) < limit:
        examples.append({"bucket": stats.bucket, **at.to_dict(), "reason": reason})


def _check_malformed(sources: list[SourceStats], threshold: float, where: str) -> None:
    """Fail when any source has more malformed rows than the recipe tolerates; name the worst one and its first row."""
    over = [s for s in sources if s.malformed / s.read > threshold]
    if not over:
        return
    worst = max(over, key=lambda s: s.malformed / s.read)
    raise UserError(f"{where}: max_malformed_fraction {threshold} exceeded in {len(over)} source(s); worst is "
                    f"{worst.source} (bucket {worst.bucket}, format {worst.format}): {worst.malformed} of {worst.read} "
                    f"rows malformed ({worst.malformed / worst.read:.1%}), first at {worst.first_malformed}")


def _metrics(recipe: Any, buckets: dict[str, BucketRows], plans: dict[str, Any], out_tokens: list[int],
             malformed_examples: list[dict[str, Any]], decon: Decontaminator) -> dict[str, Any]:
    total_tokens = sum(out_tokens)
    per_bucket: dict[str, Any] = {}
    sources: list[dict[str, Any]] = []
    for name, b in buckets.items():
        plan = plans[name]
        chosen_tokens = sum(b.tokens[i] for i, _ in plan.picks)
        per_bucket[name] = {
            "rows": len(plan.picks), "tokens": chosen_tokens,
            "token_fraction": round(chosen_tokens / total_tokens, 6) if total_tokens else 0.0,
            "available_rows": len(b.rows), "available_tokens": sum(b.tokens),
            "share": recipe.buckets[name].share.model_dump(exclude_none=True), "target": plan.target,
            "sampling": plan.sampling(len(b.rows)), "max_repeat": plan.copies,
            "replay": recipe.buckets[name].replay,
        }
        picked = Counter(b.rows[i]["source"] for i, _ in plan.picks)
        picked_tokens: Counter = Counter()
        unique: Counter = Counter()
        for i in {i for i, _ in plan.picks}:
            unique[b.rows[i]["source"]] += 1
        for i, _ in plan.picks:
            picked_tokens[b.rows[i]["source"]] += b.tokens[i]
        for s in b.sources:
            sources.append({
                "bucket": name, "source": s.source, "format": s.format, "sha256": s.digest, "read": s.read,
                "malformed": s.malformed, "dropped": dict(sorted(s.dropped.items())), "kept": s.kept,
                "not_sampled": s.kept - unique[s.source], "rows": picked[s.source], "tokens": picked_tokens[s.source],
            })
    drops: Counter = Counter()
    for s in sources:
        drops.update(s["dropped"])
        drops["malformed"] += s["malformed"]
        drops["not_sampled"] += s["not_sampled"]
    metrics: dict[str, Any] = {
        "rows": len(out_tokens), "tokens": total_tokens, "buckets": per_bucket, "sources": sources,
        "drops": {k: v for k, v in sorted(drops.items()) if v},
        "malformed": {"count": sum(s["malformed"] for s in sources), "read": sum(s["read"] for s in sources),
                      "examples": malformed_examples},
        "decontamination": {"ngram": recipe.decontamination.ngram, "eval_sets": decon.stats},
    }
    replay = [n for n, b in recipe.buckets.items() if b.replay]
    if replay:
        replay_tokens = sum(per_bucket[n]["tokens"] for n in replay)
        metrics["replay"] = {"buckets": replay, "ratio_target": recipe.replay_ratio, "tokens": replay_tokens,
                             "ratio_actual": round(replay_tokens / total_tokens, 6) if total_tokens else 0.0}
    return metrics

