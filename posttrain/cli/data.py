"""`posttrain data ...`: build mixed datasets from bucket recipes and inspect their manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from posttrain.cli.common import DRY_RUN_OPTION, OVERRIDES_ARG, app, console, console_err
from posttrain.errors import UserError
from posttrain.paths import cli_path

data_app = typer.Typer(help="Build and inspect bucket-recipe datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("build")
def build(
    recipe: Path = typer.Argument(..., help="Bucket recipe YAML (see data_recipes/).", dir_okay=False),
    overrides: list[str] | None = OVERRIDES_ARG,
    out: Path = typer.Option(..., "--out", "-o", parser=cli_path,
                             help="Output folder for data.parquet and manifest.json (new, empty, or an earlier build: "
                                  "replaced all at once)."),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Override the recipe's seed."),
    dry_run: bool = DRY_RUN_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the output folder."),
) -> None:
    """Mix the buckets of RECIPE into OUT/data.parquet with a manifest (same inputs and seed: identical bytes)."""
    from posttrain.data import build_dataset, load_recipe

    if dry_run:
        loaded = load_recipe(recipe, overrides or [], seed)
        text = yaml.safe_dump(loaded.resolved(), sort_keys=False, allow_unicode=True)
        console.print(Syntax(text, "yaml", background_color="default"))
        return
    log = None if quiet else (lambda msg: console.print(escape(msg), highlight=False))
    manifest = build_dataset(recipe, out, overrides or [], seed, log=log, warn=_warn)
    if quiet:
        console.print(escape(str(out)), highlight=False)
    else:
        render_manifest(manifest, console, examples=5)


@data_app.command("inspect")
def inspect(
    folder: Path = typer.Argument(..., help="A folder written by `posttrain data build`."),
    examples: int = typer.Option(10, "--examples", "-n", help="How many malformed rows to list."),
) -> None:
    """Print a built dataset's manifest as tables: buckets, sources, drops, malformed rows."""
    from posttrain.manifest import read_manifest

    manifest = read_manifest(folder)
    if manifest.get("stage") != "data":
        raise UserError(f"{folder}: manifest is from stage {manifest.get('stage')!r}, not a `posttrain data build` "
                        "output")
    _check_shape(manifest, folder)
    try:
        render_manifest(manifest, console, examples=examples)
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # a hand-edited or foreign manifest, deeper down
        raise UserError(f"{folder / 'manifest.json'}: not in the shape `posttrain data build` writes "
                        f"({type(e).__name__}: {e}); rebuild the folder") from None


def _warn(message: str) -> None:
    console_err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


# What `data inspect` reads from a manifest; anything else missing is reported, not a KeyError.
MANIFEST_KEYS = ("kind", "seed", "token_counter", "metrics")
METRICS_KEYS = ("rows", "tokens", "buckets", "sources", "malformed", "decontamination")


def _check_shape(manifest: dict[str, Any], folder: Path) -> None:
    where = folder / "manifest.json"
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    metrics = manifest.get("metrics")
    if isinstance(metrics, dict):
        missing += [f"metrics.{k}" for k in METRICS_KEYS if k not in metrics]
    elif metrics is not None:
        raise UserError(f"{where}: metrics is a {type(metrics).__name__}, expected an object")
    if missing:
        raise UserError(f"{where}: lacks {', '.join(missing)}; not a manifest `posttrain data build` wrote (rebuild "
                        "the folder)")


def _share(share: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in share.items())


def render_manifest(manifest: dict[str, Any], out: Console, examples: int = 10) -> None:
    m = manifest["metrics"]
    out.print(f"[bold]{manifest['kind']}[/] dataset: [bold]{m['rows']}[/] rows, [bold]{m['tokens']}[/] tokens, "
              f"seed {manifest['seed']}", highlight=False)
    out.print(f"tokens counted by: {escape(manifest['token_counter'])}", highlight=False)
    if "replay" in m:
        r = m["replay"]
        out.print(f"replay: {r['tokens']} tokens = {r['ratio_actual']:.1%} of the output "
                  f"(target {r['ratio_target']:.0%}) from {', '.join(r['buckets'])}", highlight=False)

    buckets = Table(title="Buckets", title_justify="left")
    for col in ("bucket", "replay", "share", "target", "sampling", "rows", "tokens", "token %", "available rows"):
        buckets.add_column(col, justify="left" if col in ("bucket", "replay", "share", "target", "sampling")
                           else "right")
    for name, b in m["buckets"].items():
        sampling = b["sampling"] + (f" (x{b['max_repeat']})" if b["max_repeat"] > 1 else "")
        buckets.add_row(escape(name), "yes" if b["replay"] else "", _share(b["share"]),
                        _share(b["target"]), sampling, str(b["rows"]), str(b["tokens"]),
                        f"{b['token_fraction']:.1%}", str(b["available_rows"]))
    out.print(buckets)

    sources = Table(title="Sources", title_justify="left")
    for col in ("bucket", "source", "format", "read", "malformed", "filtered", "kept", "rows", "tokens", "sha256"):
        sources.add_column(col, justify="right" if col in ("read", "malformed", "filtered", "kept", "rows",
                                                           "tokens") else "left")
    for s in m["sources"]:
        sources.add_row(escape(s["bucket"]), escape(s["source"]), s["format"], str(s["read"]), str(s["malformed"]),
                        str(sum(s["dropped"].values())), str(s["kept"]), str(s["rows"]), str(s["tokens"]),
                        s["sha256"][:12])
    out.print(sources)

    drops = Table(title="Dropped rows", title_justify="left")
    for col in ("bucket", "source", "reason", "count"):
        drops.add_column(col, justify="right" if col == "count" else "left")
    for s in m["sources"]:
        reasons = {**s["dropped"], "malformed": s["malformed"], "not_sampled (down-sampling)": s["not_sampled"]}
        for reason, count in reasons.items():
            if count:
                drops.add_row(escape(s["bucket"]), escape(s["source"]), escape(reason), str(count))
    if drops.row_count:
        out.print(drops)
    else:
        out.print("Dropped rows: none")

    bad = m["malformed"]
    if bad["count"]:
        table = Table(title=f"Malformed rows ({bad['count']} of {bad['read']} read; first {len(bad['examples'])} "
                            "recorded)", title_justify="left")
        table.add_column("where")
        table.add_column("reason")
        for ex in bad["examples"][:examples]:
            where = f"{ex['file']}:{ex['line']}" if "line" in ex else f"{ex['file']} row {ex['row']}"
            table.add_row(escape(where), escape(ex["reason"]))
        out.print(table)
    for warning in m.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for name, st in m["decontamination"]["eval_sets"].items():
        out.print(f"decontamination vs {escape(name)}: {st['items']} items, {st['ngrams']} "
                  f"{m['decontamination']['ngram']}-grams ({st['items_shorter_than_ngram']} items too short to match)",
                  highlight=False)
