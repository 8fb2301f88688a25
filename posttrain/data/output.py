"""A built dataset folder (``data.parquet`` + ``manifest.json``): what a build may replace, writing it all-or-nothing,
and reading it back checked against its manifest.

* A build replaces only an absent or empty folder or an earlier build's output (nothing but the two files), and never
  a folder that holds one of its own inputs; anything else is an error naming what is there.
* The folder is written under the output's lock into a staging folder that then takes its place in one rename
  (:mod:`posttrain.atomic`), so a reader sees the old folder or the new one, never new data under an old manifest.
* :func:`load_built` hashes ``data.parquet`` through the same open file it then reads the table from, and compares the
  hash with the manifest's ``outputs``: data changed, replaced or torn after the manifest was written is an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from posttrain.atomic import output_lock, staged_folder
from posttrain.errors import UserError
from posttrain.manifest import MANIFEST, file_sha256, read_manifest, write_manifest
from posttrain.paths import check_may_replace, check_not_an_input, listing

DATA_FILE = "data.parquet"
KIND_COLUMNS = {"chat": ["messages", "tools"], "text": ["text"], "task": ["env", "messages", "tools", "task"],
                "preference": ["prompt", "chosen", "rejected"]}
# What a build leaves in its folder; the .tmp names are what builds before the atomic writer left when killed.
OWN_FILES = {DATA_FILE, MANIFEST, f"{DATA_FILE}.tmp", f"{MANIFEST}.tmp"}
WHAT = "output folder"


def _not_a_build(folder: Path) -> str | None:
    """None when ``folder`` holds an earlier data build and nothing else, else what it holds (for the message)."""
    names = {p.name for p in folder.iterdir()}
    try:
        stage = read_manifest(folder).get("stage") if (folder / MANIFEST).is_file() else None
    except UserError:
        stage = None
    if stage == "data" and names <= OWN_FILES:
        return None
    if stage == "data":
        return f"a data build plus other files ({', '.join(sorted(names - OWN_FILES))})"
    if stage is not None:
        return f"the output of the {stage!r} stage ({listing(folder)})"
    return f"files that are not a data build output ({listing(folder)})"


def check_output(out: Path, inputs: list[Path]) -> None:
    """Fail before any work when ``out`` cannot be (re)written by a build with these inputs."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{WHAT} {out}: exists and is not a folder")
    check_not_an_input(out, inputs, WHAT)
    check_may_replace(out, "a `posttrain data build` output", _not_a_build, WHAT)


@contextmanager
def writing(out: Path, inputs: list[Path]) -> Iterator[Callable[[list[dict[str, Any]], str, dict[str, Any]], None]]:
    """Hold ``out``'s lock for the block (a second build into it fails at once, clearly); yields ``write(rows, kind,
    manifest)``, which puts the data and the manifest (with the data's sha256 under ``outputs``) in place at once."""
    with output_lock(out, WHAT):
        check_output(out, inputs)  # again under the lock: another writer may have finished in between

        def write(rows: list[dict[str, Any]], kind: str, manifest: dict[str, Any]) -> None:
            with staged_folder(out) as staging:
                sha = write_parquet(staging / DATA_FILE, rows, kind)
                write_manifest(staging, {**manifest, "outputs": {DATA_FILE: sha}})

        yield write


def _arrow_schema(kind: str) -> Any:
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    types = {"messages": messages, "tools": pa.string(), "text": pa.string(), "env": pa.string(),
             "task": pa.string(), "prompt": messages, "chosen": messages, "rejected": messages}
    return pa.schema([(c, pa.string()) for c in ("id", "bucket", "source")]
                     + [(c, types[c]) for c in KIND_COLUMNS[kind]])


def write_parquet(path: Path, rows: list[dict[str, Any]], kind: str) -> str:
    """Write the rows with the kind's fixed schema; returns the file's sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=_arrow_schema(kind)), path, compression="zstd")
    return file_sha256(path)


def load_built(out_dir: str | Path) -> Any:
    """A built dataset folder -> ``datasets.Dataset`` (in memory), checked against its manifest."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    folder = Path(out_dir)
    manifest = read_manifest(folder)
    if manifest.get("stage") not in ("data", "sample"):  # `posttrain sample` writes verified chat data, same contract
        raise UserError(f"{folder}: manifest is from stage {manifest.get('stage')!r}, expected a `posttrain data "
                        "build` output (or a `posttrain sample` one)")
    path = folder / DATA_FILE
    if not path.is_file():
        raise UserError(f"{path}: file not found; expected the data written by `posttrain data build`")
    outputs = manifest.get("outputs")
    recorded = outputs.get(DATA_FILE) if isinstance(outputs, dict) else None
    if not isinstance(recorded, str):
        raise UserError(f"{folder / MANIFEST}: records no sha256 of {DATA_FILE} (outputs.{DATA_FILE}), so the data "
                        "cannot be checked against it; rebuild the folder")
    with path.open("rb") as f:  # hash and read one open file: a folder replaced in between cannot mix the two
        h = hashlib.sha256()
        while block := f.read(1 << 20):
            h.update(block)
        if h.hexdigest() != recorded:
            raise UserError(f"{path}: its sha256 is not the one {MANIFEST} records; the data was changed or replaced "
                            "after the manifest was written (or a build was cut off half-way). Rebuild the folder")
        f.seek(0)
        try:
            table = pq.read_table(f)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: cannot read as parquet ({e}); rebuild the folder") from None
    metrics = manifest.get("metrics")
    expected = metrics.get("rows") if isinstance(metrics, dict) else None
    if expected is not None and table.num_rows != expected:
        raise UserError(f"{path}: has {table.num_rows} rows but its manifest says {expected}; rebuild it")
    return datasets.Dataset(InMemoryTable(table))

