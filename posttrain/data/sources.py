"""Readers for recipe sources: each yields ``(Where, record)`` pairs where ``Where`` names the file and line (or row).

A record that cannot even be parsed (bad JSON line, ragged CSV row) is yielded as a :class:`Malformed` instead of a
dict, so the build can count and report it; a file that cannot be opened at all is a :class:`UserError`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.jsonrows import ENCODING_ERRORS, NESTED, BadRow, bad_bytes, check_decoded, end_of_value, parse_row
from posttrain.manifest import file_sha256, folder_sha256

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class Where:
    """A row's origin: ``file`` as written in the recipe, and a 1-based ``line`` (text files) or 0-based ``row``."""

    file: str
    line: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        return f"{self.file} row {self.row}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file}
        if self.line is not None:
            out["line"] = self.line
        if self.row is not None:
            out["row"] = self.row
        return out


@dataclass(frozen=True)
class Malformed:
    """Why a record was rejected."""

    reason: str


class MalformedRow(Exception):
    """Raised by format adapters; the build turns it into a counted, reported malformed row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_local(path: Path, label: str, split: str | None = None) -> Iterator[tuple[Where, dict[str, Any] | Malformed]]:
    """Read a jsonl/json/parquet/csv file or a ``save_to_disk`` folder."""
    if path.is_dir():
        yield from _read_saved(path, label, split)
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path, label)
    elif suffix == ".json":
        yield from _read_json(path, label)
    elif suffix == ".parquet":
        yield from _read_parquet(path, label)
    elif suffix == ".csv":
        yield from _read_csv(path, label)
    else:
        raise UserError(f"{label}: unsupported file type {suffix or '(none)'!r}; expected one of "
                        f"{', '.join(FILE_SUFFIXES)} or a folder written by datasets' save_to_disk")


def _as_record(obj: Any) -> dict[str, Any] | Malformed:
    if isinstance(obj, dict):
        return obj
    return Malformed(f"expected a JSON object, got {type(obj).__name__}")


def _read_jsonl(path: Path, label: str) -> Iterator[tuple[Where, dict[str, Any] | Malformed]]:
    with path.open(encoding="utf-8", errors=ENCODING_ERRORS) as f:  # bad bytes: a malformed row, not a "?" in it
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines are not rows
            try:
                obj = parse_row(line.rstrip("\r\n"))
            except BadRow as e:
                yield Where(label, line=lineno), Malformed(str(e))
                continue
            yield Where(label, line=lineno), _as_record(obj)


def _read_json(path: Path, label: str) -> Iterator[tuple[Where, dict[str, Any] | Malformed]]:
    """A JSON list of objects, decoded item by item so each item is reported with the line it starts on."""
    text = path.read_text(encoding="utf-8", errors=ENCODING_ERRORS)
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        raise UserError(f"{label}: expected a JSON list of objects at the top level (use .jsonl for one object per "
                        "line)")
    pos = _skip_space(text, pos + 1)
    line, counted = 1, 0
    while not text.startswith("]", pos):
        line += text.count("\n", counted, pos)
        counted = pos
        record, pos = _decode_item(decoder, text, pos, label, line)
        yield Where(label, line=line), record
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
        elif not text.startswith("]", pos):
            bad_line = text.count("\n", 0, pos) + 1
            raise UserError(f"{label}:{bad_line}: invalid JSON (expected ',' or ']' between list items)")


def _decode_item(decoder: json.JSONDecoder, text: str, start: int, label: str,
                 line: int) -> tuple[dict[str, Any] | Malformed, int]:
    """One item of a JSON list and where it ends. An item the parser cannot take (too deep, a number too long, a lone
    surrogate, bytes that are not UTF-8) is skipped by matching its brackets and is a Malformed row."""
    try:
        obj, end = decoder.raw_decode(text, start)
        reason = bad_bytes(text[start:end])
        if reason is not None:
            raise BadRow(reason)
        check_decoded(text[start:end], obj)
        return _as_record(obj), end
    except json.JSONDecodeError as e:  # past a syntax error nothing can be trusted: the file is unusable
        raise UserError(f"{label}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    except (RecursionError, ValueError) as e:
        skip_to = end_of_value(text, start)
        if skip_to is None:
            raise UserError(f"{label}:{line}: invalid JSON (an item that never ends)") from None
        reason = str(e) if isinstance(e, BadRow) else NESTED if isinstance(e, RecursionError) else f"invalid JSON: {e}"
        return Malformed(reason), skip_to


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_parquet(path: Path, label: str) -> Iterator[tuple[Where, dict[str, Any] | Malformed]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError variants for unreadable files
        raise UserError(f"{label}: cannot read as parquet ({e})") from None
    i = 0
    batches = pf.iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # a damaged page (ArrowInvalid, OSError): where the rows stop cannot be trusted
            raise UserError(f"{label}: cannot read as parquet past row {i} ({e})") from None
        if batch is None:
            break
        for rec in batch.to_pylist():
            yield Where(label, row=i), rec
            i += 1


def _read_csv(path: Path, label: str) -> Iterator[tuple[Where, dict[str, Any] | Malformed]]:
    # The csv module's default field limit (128 KiB) is for guarding against runaway quotes; a long text field is a
    # real row here (JSONL has no such limit). The limit is process-wide and only ever raised.
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))
    with path.open(encoding="utf-8", errors=ENCODING_ERRORS, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            return
        if any(bad_bytes(x) for x in header):
            raise UserError(f"{label}:1: the header is {next(r for x in header if (r := bad_bytes(x)))}")
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:  # the reader goes on at the next line
                yield Where(label, line=reader.line_num), Malformed(f"unreadable CSV row: {e}")
                continue
            where = Where(label, line=reader.line_num)
            if not any(x.strip() for x in fields):
                continue
            reason = next((r for x in fields if (r := bad_bytes(x))), None)
            if reason is not None:
                yield where, Malformed(reason)
                continue
            if len(fields) != len(header):
                yield where, Malformed(f"CSV row has {len(fields)} fields, the header has {len(header)}")
                continue
            yield where, dict(zip(header, fields, strict=True))


def _read_saved(path: Path, label: str, split: str | None) -> Iterator[tuple[Where, dict[str, Any] | Malformed]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{label}: not a folder written by datasets' save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, split, label)
    yield from _iter_dataset(ds, label)


def _pick_split(dd: Any, split: str | None, label: str) -> Any:
    if split is None:
        if len(dd) == 1:
            return next(iter(dd.values()))
        split = "train"
    if split not in dd:
        raise UserError(f"{label}: split {split!r} not found; expected one of: {', '.join(dd)} (set split:)")
    return dd[split]


def _iter_dataset(ds: Any, label: str) -> Iterator[tuple[Where, dict[str, Any] | Malformed]]:
    for i, rec in enumerate(ds):
        yield Where(label, row=i), rec


def read_hub(hub_id: str, split: str | None, subset: str | None, revision: str | None, label: str,
             context: str) -> tuple[Iterator[tuple[Where, dict[str, Any] | Malformed]], str]:
    """Load a hub dataset with ``datasets.load_dataset``; returns the rows and the dataset's fingerprint.

    Rows are reported as ``label row i``; a load failure is a UserError starting with ``context``.
    """
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, subset, split=split or "train", revision=revision)
    except Exception as e:  # network, auth, missing dataset, missing split: all mean "cannot load this source"
        raise UserError(f"{context}: could not load hub dataset {hub_id!r} (split {split or 'train'!r}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} -- is the hub reachable? "
                        "Offline, use save_to_disk on a machine with access and point path: at the folder") from None
    return _iter_dataset(ds, label), f"hub-fingerprint:{ds._fingerprint}"


def source_digest(path: Path) -> str:
    """sha256 of a source file, or of every file in a saved dataset folder."""
    return folder_sha256(path) if path.is_dir() else file_sha256(path)
